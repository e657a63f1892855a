//! A node serving speed tests with its own key (`[speedtest] serve = true`): its neighbor tests
//! it through their tunnel, pinning its node id, and gets a receipt that names both nodes.

mod common;

use common::*;

const PAIR: &str = r#"
[[node]]
name = "a"
[node.config.speedtest]
serve = true
[[node]]
name = "b"
[[link]]
a = "a"
b = "b"
"#;

#[test]
fn a_node_serves_signed_speed_tests_to_its_neighbor_through_the_tunnel() {
    if skip("speed tests between nodes", &[]) {
        return;
    }
    let lab = lab_up("sts", PAIR);
    wait_agreed(&lab, "a", "b");
    let a = status(&lab, "a").node;
    let b_id = node_id(&lab, "b");
    let server = format!("[{}]:7479", a.mesh_ip);
    let b_key = lab.node("b").unwrap().data_dir.join("node.key");
    let bin = tollway_bin();
    let argv = [
        bin.to_str().unwrap(),
        "speedtest",
        "--server",
        &server,
        "--key",
        &a.id,
        "--up-secs",
        "2",
        "--down-secs",
        "2",
        "--json",
        "--identity-file",
        b_key.to_str().unwrap(),
    ];
    let (ok, out) = run_in(&lab, "b", &argv);
    assert!(ok, "{out}");
    let json = &out[out.find('{').expect("JSON")..];
    let j: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((j["server_key"].as_str(), j["client"].as_str()), (Some(a.id.as_str()), Some(b_id.as_str())), "{j}");
    for dir in ["up", "down"] {
        assert!(j[dir]["mbit_s"].as_f64().unwrap() > 1.0, "{j}");
    }
    // The test's bytes crossed the tunnel, and the firewall let them in (nothing unsolicited).
    let n = nb(&lab, "a", "b");
    assert!(n.bytes_in > 100_000 && n.bytes_out > 100_000, "{n:?}");
    assert_eq!(n.dropped_unsolicited_packets, 0, "{n:?}");
}
