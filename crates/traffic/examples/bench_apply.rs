//! How long `apply` takes for 10 and 64 neighbors (one group), in a throw-away namespace with
//! persistent TUN devices standing in for the tunnels.
//!
//! `cargo run --release -p tollway-traffic --example bench_apply` (as root).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};
use tollway_traffic::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn plan_for(tunnels: &[tollway_core::IfName], changed: Option<usize>) -> TrafficPlan {
    let cap = BitRate::mbit(100);
    let share = BitRate(cap.0 / tunnels.len() as u64);
    TrafficPlan {
        control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(500) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity: cap,
            neighbors: tunnels
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let throttled = changed == Some(i);
                    NeighborTraffic {
                        key: NeighborKey::new(format!("{i:012x}")).unwrap(),
                        tunnel: t.clone(),
                        rate: if throttled { BitRate::kbit(64) } else { share },
                        ceil: if throttled { BitRate::kbit(64) } else { cap },
                        ingress: if throttled {
                            IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) }
                        } else {
                            IngressPolicy::Open
                        },
                    }
                })
                .collect(),
        }],
        admission: Admission::default(),
    }
}

fn main() {
    if skip("bench_apply", &[]) {
        return;
    }
    const ROUNDS: usize = 7;
    for n in [10usize, 64] {
        let mut lab = Lab::new("ba");
        let ns = lab.netns("a");
        let tunnels: Vec<_> = (0..n).map(|i| lab.ifname(i as u32, "t")).collect();
        for t in &tunnels {
            must(&["ip", "-n", &ns, "tuntap", "add", "mode", "tun", "name", t.as_str()]);
            must(&["ip", "-n", &ns, "link", "set", t.as_str(), "up"]);
        }
        let (base, changed) = (plan_for(&tunnels, None), plan_for(&tunnels, Some(n / 2)));
        let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
            ("from scratch", vec![], vec![]),
            ("nothing changed", vec![], vec![]),
            ("one neighbor throttled", vec![], vec![]),
        ];
        let mut reads = Vec::new();
        let mut inspects = Vec::new();
        for _ in 0..ROUNDS {
            let mut fw = NftFirewall::new();
            let mut sh = TcShaper::new("bai").unwrap();
            in_ns(&ns, || {
                let time = |f: &mut dyn FnMut()| {
                    let t0 = Instant::now();
                    f();
                    t0.elapsed()
                };
                let steps: [&TrafficPlan; 3] = [&base, &base, &changed];
                for (row, p) in rows.iter_mut().zip(steps) {
                    row.1.push(time(&mut || {
                        fw.apply(p).unwrap();
                    }));
                    row.2.push(time(&mut || {
                        sh.apply(p).unwrap();
                    }));
                }
                reads.push(time(&mut || {
                    assert_eq!(fw.read_counters().unwrap().len(), n);
                }));
                inspects.push(time(&mut || {
                    sh.inspect().unwrap();
                }));
                sh.remove_all().unwrap();
                fw.remove_all().unwrap();
            });
        }
        println!("{n} neighbors (median of {ROUNDS}):");
        for (what, f, s) in rows {
            println!("  apply, {what:<24} firewall {:>9}   shaper {:>9}", ms(median(f)), ms(median(s)));
        }
        println!("  read_counters {:>9}   shaper inspect {:>9}", ms(median(reads)), ms(median(inspects)));
    }
}
