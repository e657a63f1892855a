//! Readers never stall the core: 50 concurrent scrapes a second of `/metrics`, `/api/status`,
//! `/api/chart` and `/api/history` (the dashboard's and Prometheus's reads) while a neighbor's
//! debt crosses the credit limit do not delay the throttle (the reaction BENCHMARKS.md
//! measures).

mod common;

use common::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// 50 requests a second at a's listener until `stop` exists (at most 2 minutes), from inside
/// a's namespace: every 0.1 s a
/// curl makes five at once (`/metrics` twice, `/api/status`, `/api/chart`, `/api/history`). Each line of
/// the output is one request's HTTP code and time.
fn scraper(lab: &tollway_lab::Lab, stop: &std::path::Path) -> Child {
    let base = "http://127.0.0.1:7480";
    let urls = [
        format!("{base}/metrics"),
        format!("{base}/metrics"),
        format!("{base}/api/status"),
        format!("{base}/api/chart"),
        format!("{base}/api/history?limit=10000"),
    ]
    .map(|u| format!("-o /dev/null '{u}'"))
    .join(" ");
    let script = format!(
        "end=$((SECONDS+120)); while [ $SECONDS -lt $end ] && [ ! -e '{}' ]; do \
           curl -s -Z --parallel-max 5 -w '%{{http_code}} %{{time_total}}\\n' {urls} & sleep 0.1; \
         done; wait",
        stop.display()
    );
    lab.command_in("a", &["bash", "-c", &script]).unwrap().stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
}

/// One round: b stops paying and downloads from a; the time from b's debt crossing the credit
/// limit (read from a's tunnel counters) to a showing b throttled.
fn throttle_reaction(lab: &tollway_lab::Lab, a_ip: &str) -> f64 {
    client(lab, "b").call(&tollway_api::Request::Payments { paused: true }).unwrap();
    let watch = DebtWatch::start(lab, "a", "b", units("0.02"));
    let limit = units("0.05");
    let reaction = std::thread::scope(|sc| {
        let dl = sc.spawn(|| {
            let _ = lab.command_in("b", &["timeout", "20", "iperf3", "-c", a_ip, "-R", "-t", "8"]).unwrap().output();
        });
        let (mut crossed, mut flagged) = (None, None);
        let t0 = Instant::now();
        while flagged.is_none() && t0.elapsed() < Duration::from_secs(15) {
            let flag = nb(lab, "a", "b").enforcement == "throttled";
            let now = Instant::now();
            if crossed.is_none() && watch.owed(lab) > limit - 200 {
                crossed = Some(now);
            }
            if flag && crossed.is_some() {
                flagged = Some(now);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = match (crossed, flagged) {
            (Some(c), Some(f)) => f.duration_since(c).as_secs_f64(),
            _ => panic!("no throttle: crossed {crossed:?}, a says {:?}", nb(lab, "a", "b")),
        };
        let _ = dl.join();
        r
    });
    client(lab, "b").call(&tollway_api::Request::Payments { paused: false }).unwrap();
    wait_for(Duration::from_secs(10), "the throttle to lift", || {
        (nb(lab, "a", "b").enforcement == "none").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    reaction
}

#[test]
fn fifty_scrapes_a_second_do_not_delay_the_throttle() {
    if skip("scrapes vs throttle", &["iperf3", "curl"]) {
        return;
    }
    let lab = lab_up("scr", THROTTLE);
    wait_agreed(&lab, "a", "b");
    let a_ip = status(&lab, "a").node.mesh_ip;
    let _srv = iperf_server(&lab, "a", 5201);

    let quiet: Vec<f64> = (0..2).map(|_| throttle_reaction(&lab, &a_ip)).collect();
    let mut loaded = Vec::new();
    for _ in 0..3 {
        let stop = std::env::temp_dir().join(format!("tollway-scrapes-stop-{}", std::process::id()));
        let _ = std::fs::remove_file(&stop);
        let started = Instant::now();
        let mut scrapes = scraper(&lab, &stop);
        std::thread::sleep(Duration::from_secs(1));
        loaded.push(throttle_reaction(&lab, &a_ip));
        assert!(scrapes.try_wait().unwrap().is_none(), "the scrapes went on during the whole round");
        std::fs::write(&stop, b"").unwrap();
        let took = started.elapsed().as_secs_f64();
        let out = scrapes.wait_with_output().unwrap();
        let _ = std::fs::remove_file(&stop);
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        let ok = lines.iter().filter(|l| l.starts_with("200 ")).count();
        assert_eq!(ok, lines.len(), "every scrape answered 200: {:?}", lines.iter().find(|l| !l.starts_with("200 ")));
        let rate = ok as f64 / took;
        let mut times: Vec<f64> = lines.iter().filter_map(|l| l.split(' ').nth(1)?.parse().ok()).collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "scrapes: {ok} in {took:.1} s ({rate:.0}/s), latency median {:.1} ms, max {:.1} ms",
            times[times.len() / 2] * 1e3,
            times[times.len() - 1] * 1e3
        );
        assert!(rate >= 40.0, "the scrapes ran at {rate:.0}/s, not ~50/s");
    }
    println!("throttle reaction: quiet {quiet:?} s, under 50 scrapes/s {loaded:?} s");
    let worst_quiet = quiet.iter().cloned().fold(0.0, f64::max);
    let mut sorted = loaded.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median_loaded = sorted[1];
    // The daemon samples once a second: a reaction is up to about a second after the crossing
    // either way. Scrapes must not add to it (allowing for this 2-core machine's noise).
    assert!(
        median_loaded <= worst_quiet + 0.5 && sorted[2] <= 2.0,
        "scrapes delayed the throttle: quiet {quiet:?} s, loaded {loaded:?} s"
    );
}
