//! Market benchmarks. Not run by `cargo test`; run with
//! `cargo test --release -p tollway --test bench_market -- --ignored --nocapture --test-threads=1`
//! and see BENCHMARKS.md.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn stats(v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!("median {:.3}, min {:.3}, max {:.3} (n={})", v[v.len() / 2], v[0], v[v.len() - 1], v.len())
}

/// Time from a debt crossing the credit limit to the throttle (flag in status, and the rate
/// actually falling at the debtor), and from resuming payments to the throttle lifting.
#[test]
#[ignore]
fn bench_time_to_throttle_and_to_unthrottle() {
    if skip("bench_time_to_throttle_and_to_unthrottle", &["iperf3"]) {
        return;
    }
    let lab = lab_up("bth", THROTTLE);
    wait_agreed(&lab, "a", "b");
    let a_ip = status(&lab, "a").node.mesh_ip;
    let _srv = iperf_server(&lab, "a", 5201);
    let (mut to_flag, mut to_rate, mut to_lift) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        client(&lab, "b").call(&tollway_api::Request::Payments { paused: true }).unwrap();
        // The debt grows from what is already owed (paid up to the threshold); the crossing is
        // read from a's tunnel counters in the kernel (the status is up to a sample behind).
        let watch = DebtWatch::start(&lab, "a", "b", units("0.02"));
        let limit = units("0.05");
        let b_if = nb(&lab, "b", "a").interface;
        let lab_ref = &lab;
        std::thread::scope(|sc| {
            let ip = a_ip.clone();
            let dl = sc.spawn(move || {
                let _ =
                    lab_ref.command_in("b", &["timeout", "20", "iperf3", "-c", &ip, "-R", "-t", "8"]).unwrap().output();
            });
            let mut crossed = None;
            let (mut flagged, mut slowed) = (None, None);
            let mut last = (Instant::now(), link_bytes(&lab, "b", &b_if).0);
            let t0 = Instant::now();
            while (flagged.is_none() || slowed.is_none()) && t0.elapsed() < Duration::from_secs(15) {
                let flag = flagged.is_none() && nb(&lab, "a", "b").enforcement == "throttled";
                let now = Instant::now();
                if crossed.is_none() && watch.owed(&lab) > limit - 200 {
                    crossed = Some(now);
                }
                if flag {
                    flagged = Some(now);
                }
                // The rate has fallen when b receives less than 4x the floor over 200 ms.
                let got = link_bytes(&lab, "b", &b_if).0;
                if crossed.is_some() && slowed.is_none() && now.duration_since(last.0) >= Duration::from_millis(200) {
                    let rate = (got - last.1) as f64 * 8.0 / now.duration_since(last.0).as_secs_f64();
                    if rate < 4.0 * 64_000.0 {
                        slowed = Some(now);
                    }
                    last = (now, got);
                } else if crossed.is_none() {
                    last = (now, got);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let c = crossed.unwrap_or_else(|| {
                panic!(
                    "never crossed: owes {} (limit {limit}) after {} bytes; a says {:?}",
                    watch.owed(&lab),
                    watch.bytes(&lab),
                    nb(&lab, "a", "b")
                )
            });
            to_flag.push(flagged.expect("flagged").saturating_duration_since(c).as_secs_f64());
            to_rate.push(slowed.expect("rate fell").saturating_duration_since(c).as_secs_f64());
            let t = Instant::now();
            client(&lab, "b").call(&tollway_api::Request::Payments { paused: false }).unwrap();
            wait_for(Duration::from_secs(5), "lifted", || (nb(&lab, "a", "b").enforcement == "none").then_some(()));
            to_lift.push(t.elapsed().as_secs_f64());
            let _ = dl.join();
        });
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("BENCH throttle: crossing → throttled in status: {} s", stats(&mut to_flag));
    println!("BENCH throttle: crossing → debtor's rate below 4× floor: {} s", stats(&mut to_rate));
    println!("BENCH throttle: payments resumed → throttle lifted: {} s", stats(&mut to_lift));
}

/// Share accuracy under contention for several bid ratios, and one buyer alone.
#[test]
#[ignore]
fn bench_share_accuracy() {
    if skip("bench_share_accuracy", &["iperf3"]) {
        return;
    }
    for (hi, lo) in [("0.003", "0.001"), ("0.002", "0.002"), ("0.009", "0.001")] {
        let topology = format!(
            r#"
[defaults.config.market]
max_price = "0.01"
pay_threshold = "0.01"
credit_limit = "10"
[[node]]
name = "s"
[node.config.market]
ask = "0.001"
capacity_mbit = 20
[[node]]
name = "b1"
[node.config.market]
bid = "{hi}"
[[node]]
name = "b2"
[node.config.market]
bid = "{lo}"
[[link]]
a = "s"
b = "b1"
[[link]]
a = "s"
b = "b2"
"#
        );
        let lab = lab_up("bsh", &topology);
        wait_agreed(&lab, "s", "b1");
        wait_agreed(&lab, "s", "b2");
        let ip = status(&lab, "s").node.mesh_ip;
        let _s1 = iperf_server(&lab, "s", 5201);
        let _s2 = iperf_server(&lab, "s", 5202);
        let target = units(hi) as f64 / units(lo) as f64;
        let mut ratios = Vec::new();
        for _ in 0..3 {
            let lab_ref = &lab;
            let (r1, r2) = std::thread::scope(|sc| {
                let (i1, i2) = (ip.clone(), ip.clone());
                let t1 = sc.spawn(move || iperf(lab_ref, "b1", &i1, 5201, &["-R", "-t", "10", "-O", "2"]).0);
                let t2 = sc.spawn(move || iperf(lab_ref, "b2", &i2, 5202, &["-R", "-t", "10", "-O", "2"]).0);
                (t1.join().unwrap(), t2.join().unwrap())
            });
            println!("  bids {hi}:{lo}: b1 {:.2} Mbit/s, b2 {:.2} Mbit/s", r1 / 1e6, r2 / 1e6);
            ratios.push(r1 / r2);
        }
        let (alone, _) = iperf(&lab, "b2", &ip, 5202, &["-R", "-t", "8", "-O", "2"]);
        let err: Vec<f64> = ratios.iter().map(|r| (r / target - 1.0) * 100.0).collect();
        println!(
            "BENCH shares: bids {hi}:{lo} (target {target:.1}) on 20 Mbit/s: ratios {:?}, error {:?} %; low bidder alone {:.2} Mbit/s",
            ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            err.iter().map(|e| (e * 10.0).round() / 10.0).collect::<Vec<_>>(),
            alone / 1e6
        );
    }
}

/// One tunnel with the daemon's accounting and shaping against the same kind of tunnel with
/// them off (`market.traffic_control = false`), same run, interleaved.
#[test]
#[ignore]
fn bench_throughput_with_accounting_and_shaping_on_and_off() {
    if skip("bench_throughput_with_accounting_and_shaping_on_and_off", &["iperf3"]) {
        return;
    }
    let pair = |extra: &str| {
        format!(
            "[defaults.config.market]\nask = \"0.001\"\nmax_price = \"0.01\"\ncredit_limit = \"1000\"\npay_threshold = \"0.01\"\ncapacity_mbit = 10000\n{extra}\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[link]]\na = \"a\"\nb = \"b\"\n"
        )
    };
    let on = lab_up("bon", &pair(""));
    let off = lab_up("bof", &pair("traffic_control = false"));
    wait_agreed(&on, "a", "b");
    let ip_on = status(&on, "b").node.mesh_ip;
    let ip_off = status(&off, "b").node.mesh_ip;
    let _s1 = iperf_server(&on, "b", 5201);
    let _s2 = iperf_server(&off, "b", 5201);
    let (mut won, mut woff) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        won.push(iperf(&on, "a", &ip_on, 5201, &["-t", "10", "-O", "2"]).0 / 1e6);
        woff.push(iperf(&off, "a", &ip_off, 5201, &["-t", "10", "-O", "2"]).0 / 1e6);
    }
    let m_on = stats(&mut won.clone());
    let m_off = stats(&mut woff.clone());
    won.sort_by(|a, b| a.partial_cmp(b).unwrap());
    woff.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH accounting+shaping cost: on {m_on} Mbit/s; off {m_off} Mbit/s; ratio of medians {:.3}",
        won[won.len() / 2] / woff[woff.len() / 2]
    );
    let billed = nb(&on, "b", "a").billed_bytes_in;
    assert!(billed > 0, "the 'on' lab really counted");
    assert_eq!(nb(&off, "b", "a").billed_bytes_in, 0, "the 'off' lab really did not");
}
