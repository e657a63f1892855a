//! Helpers of the mesh tests and benchmarks: the shipped topologies, reachability, babeld
//! processes, default routes and ping series.

use super::{client, node_id, wait_for};
use std::time::{Duration, Instant};
use tollway_lab::Lab;

pub fn shipped(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab").join(name))
        .unwrap()
}

/// Ping `dst` from `target` until it answers (each attempt 1 s), at most `timeout`.
pub fn reachable(lab: &Lab, target: &str, dst: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_for(timeout, &format!("{dst} to answer {target}"), || {
        let out = lab.command_in(target, &["ping", "-c", "1", "-W", "1", dst]).unwrap().output().unwrap();
        out.status.success().then_some(())
    });
    start.elapsed()
}

/// The babeld processes whose command line mentions `needle` (a lab's run directory).
pub fn babelds(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("babeld") && cmd.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// The neighbor (node name) `node`'s installed default route goes through.
pub fn default_via(lab: &Lab, node: &str, names: &[&str]) -> Option<String> {
    let r = client(lab, node).routes().ok()?;
    let via = r.routes.iter().find(|r| r.prefix == "::/0" && r.installed)?.via.clone()?;
    names.iter().find(|n| node_id(lab, n) == via).map(|n| n.to_string())
}

/// Ping `dst` from `target` every `interval_ms` for `count` pings in the background; the
/// returned child's output lists the replies.
pub fn ping_series(lab: &Lab, target: &str, dst: &str, interval_ms: u64, count: u32) -> std::process::Child {
    let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
    lab.command_in(target, &["ping", "-n", "-i", &interval, "-W", "1", "-c", &count.to_string(), dst])
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The longest run of consecutive lost pings, in sequence numbers, and how many were lost.
pub fn longest_gap(output: &str, count: u32) -> (u32, u32) {
    let got: std::collections::BTreeSet<u32> =
        output.lines().filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    let (mut longest, mut run, mut lost) = (0, 0, 0);
    for seq in 1..=count {
        if got.contains(&seq) {
            run = 0;
        } else {
            run += 1;
            lost += 1;
            longest = longest.max(run);
        }
    }
    (longest, lost)
}

/// Switch `node` to static routing with `routes` (prefix, via node name, metric).
pub fn set_static_routes(lab: &Lab, node: &str, routes: &[(String, &str, u32)]) {
    let list: Vec<toml::Value> = routes
        .iter()
        .map(|(prefix, via, metric)| {
            let mut r = toml::Table::new();
            r.insert("prefix".into(), prefix.as_str().into());
            r.insert("via".into(), node_id(lab, via).into());
            r.insert("metric".into(), (*metric as i64).into());
            toml::Value::Table(r)
        })
        .collect();
    let mut routing = toml::Table::new();
    routing.insert("kind".into(), "static".into());
    routing.insert("static".into(), toml::Value::Array(list));
    set_routing(lab, node, routing);
}

/// Replace `node`'s `[routing]` section in its config file (it applies at the next restart).
pub fn set_routing(lab: &Lab, node: &str, routing: toml::Table) {
    let path = lab.node(node).unwrap().config_path.clone();
    let mut cfg: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    cfg.insert("routing".into(), toml::Value::Table(routing));
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
}
