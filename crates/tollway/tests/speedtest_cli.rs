//! `tollway speedtest-server` and `tollway speedtest` as an operator runs them, over loopback:
//! the key file, the printed key, a test with JSON output, a wrong key, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the server (by its pid) however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tollway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollway"))
}

#[test]
fn speedtest_server_and_client_commands_work_end_to_end() {
    let dir = std::env::temp_dir().join(format!("tollway-speedtest-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key_file = dir.join("server.key");

    // --print-key creates the key (0600) and prints it; again, the same key.
    let out = tollway().args(["speedtest-server", "--key"]).arg(&key_file).arg("--print-key").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 64, "{key}");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let again = tollway().args(["speedtest-server", "--key"]).arg(&key_file).arg("--print-key").output().unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), key);

    // The server, on a free loopback port; it says where it listens.
    let mut server = Child(
        tollway()
            .args(["speedtest-server", "--listen", "127.0.0.1:0", "--key"])
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!((words.first(), words.get(4)), (Some(&"speedtest"), Some(&key.as_str())), "{first}");
    let addr = words[2].to_string();

    // A test, JSON out, as a throw-away identity.
    let out = tollway()
        .args(["speedtest", "--server", &addr, "--key", &key, "--up-secs", "1", "--down-secs", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["server_key"], key.as_str());
    assert_eq!(j["ephemeral_identity"], true);
    for dir in ["up", "down"] {
        assert!(j[dir]["bytes"].as_u64().unwrap() > 0 && j[dir]["mbit_s"].as_f64().unwrap() > 1.0, "{j}");
    }
    assert_eq!(j["receipt"].as_str().unwrap().len(), 2 * 281);

    // With a node key file: the receipt names that node.
    let node_key = dir.join("node.key");
    std::fs::write(&node_key, format!("{}\n", "07".repeat(32))).unwrap();
    std::fs::set_permissions(&node_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = tollway()
        .args(["speedtest", "--server", &addr, "--key", &key, "--up-secs", "0", "--down-secs", "0"])
        .arg("--identity-file")
        .arg(&node_key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("receipt verified") && !text.contains("throw-away"), "{text}");

    // A wrong pinned key: exit 1, and the error names both keys.
    let wrong = "ab".repeat(32);
    let out = tollway().args(["speedtest", "--server", &addr, "--key", &wrong, "--up-secs", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(&key) && err.contains(&wrong) && err.contains("not the pinned"), "{err}");

    // Without --server: every server the config pins, as the node (its data_dir's node.key).
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&node_key, data_dir.join("node.key")).unwrap();
    std::fs::set_permissions(data_dir.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("tollway.toml");
    let pinned = format!(
        "interfaces = [\"lo\"]\ndata_dir = \"{}\"\n[[speedtest.servers]]\naddress = \"{addr}\"\nkey = \"{key}\"\n",
        data_dir.display()
    );
    std::fs::write(&config, &pinned).unwrap();
    let out = tollway()
        .args(["speedtest", "--up-secs", "1", "--down-secs", "1", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node_id = tollway_core::Identity::from_seed(&[7; 32]).node_id().to_string();
    assert_eq!(
        (j[0]["server_key"].as_str(), j[0]["client"].as_str()),
        (Some(key.as_str()), Some(node_id.as_str())),
        "{j}"
    );
    // A config that pins nothing says so.
    std::fs::write(&config, format!("interfaces = [\"lo\"]\ndata_dir = \"{}\"\n", data_dir.display())).unwrap();
    let out = tollway().args(["speedtest", "--config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no speed-test servers are pinned"), "{err}");

    // SIGTERM: a clean stop, exit 0.
    // SAFETY: signalling the child we started, by its pid.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}
