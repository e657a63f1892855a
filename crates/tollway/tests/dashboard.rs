//! The dashboard as an operator sees it: a real lab, the daemon's own HTTP listener, Debian's
//! chromium (headless) driven over the DevTools protocol. The browser runs inside the node's
//! namespace (the listener is on that namespace's 127.0.0.1): the test re-runs this test binary
//! there with `ip netns exec`, selecting the ignored `browser_session` test.

mod common;

use common::*;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// a sells to b; both buy from each other up to 0.01 per MB.
const PAIR: &str = r#"
[defaults.config.market]
max_price = "0.01"
pay_threshold = "0.005"
credit_limit = "1"
capacity_mbit = 40
[[node]]
name = "a"
[node.config.market]
ask = "0.002"
[node.config.firewall]
open_tcp = [5201]
[[node]]
name = "b"
[node.config.market]
ask = "0.001"
[[link]]
a = "a"
b = "b"
"#;

/// The new ask the operator types into a's page.
const NEW_ASK: &str = "0.0035";

/// Where the screenshot goes: `$TOLLWAY_ARTIFACTS` or `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("TOLLWAY_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

#[test]
fn an_operator_sees_neighbors_and_charts_in_a_browser_and_changes_the_ask_there() {
    if skip("dashboard in a browser", &["chromium", "iperf3"]) {
        return;
    }
    let lab = lab_up("dash", PAIR);
    wait_agreed(&lab, "a", "b");
    let b_id = node_id(&lab, "b");
    let a_id = node_id(&lab, "a");

    // Traffic both ways, so the charts have something to draw and money moves.
    let a_ip = status(&lab, "a").node.mesh_ip;
    let _server = iperf_server(&lab, "a", 5201);
    std::thread::sleep(Duration::from_millis(500));
    let (mbit, _) = iperf(&lab, "b", &a_ip, 5201, &["-t", "3", "--bidir"]);
    assert!(mbit > 1.0, "traffic through the tunnel: {mbit} Mbit/s");
    wait_for(Duration::from_secs(20), "a's ledger to record usage with b", || {
        let l = client(&lab, "a").ledger(Some(b_id.clone()), Some(5), None).ok()?;
        l.usage.iter().any(|u| u.bytes_in > 1_000_000).then_some(())
    });

    // Quality as measured passively: the keepalives' round-trip time through the tunnel.
    let q = wait_for(Duration::from_secs(20), "a to measure b's round-trip time", || nb(&lab, "a", "b").quality);
    assert!(q.rtt_samples >= 1 && q.rtt_us < 1_000_000, "{q:?}");

    // The browser, in a's namespace.
    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let exe = std::env::current_exe().unwrap();
    let argv =
        [exe.as_os_str(), "browser_session".as_ref(), "--exact".as_ref(), "--ignored".as_ref(), "--nocapture".as_ref()];
    let out = lab
        .command_in("a", &argv)
        .unwrap()
        .env("TOLLWAY_DASHBOARD_URL", "http://127.0.0.1:7480/")
        .env("TOLLWAY_DASHBOARD_NEIGHBOR", &b_id)
        .env("TOLLWAY_DASHBOARD_SCREENSHOT", &shot)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success() && text.contains("1 passed"), "the browser session failed:\n{text}");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot at {}", shot.display());

    // The change made on the page: stored and applied at a, and b sees a's new ask.
    let m = status(&lab, "a").node.market;
    assert_eq!(units(&m.ask), units(NEW_ASK), "{m:?}");
    assert!(m.overrides.iter().any(|o| o.starts_with("ask ")), "shown as overriding the config: {:?}", m.overrides);
    wait_for(Duration::from_secs(20), "b to see a's new ask", || {
        let n = neighbor(&status(&lab, "b"), &a_id).cloned()?;
        (n.ask.as_deref().map(units) == Some(units(NEW_ASK))).then_some(())
    });
}

/// Run by the test above inside a's namespace (not on its own: it needs the lab).
#[test]
#[ignore = "run inside a lab node by an_operator_sees_neighbors_and_charts_in_a_browser_and_changes_the_ask_there"]
fn browser_session() {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through the dashboard test"));
    let url = env("TOLLWAY_DASHBOARD_URL");
    let neighbor = env("TOLLWAY_DASHBOARD_NEIGHBOR");
    let shot = env("TOLLWAY_DASHBOARD_SCREENSHOT");
    let opts = LaunchOptions {
        path: Some(PathBuf::from("/usr/bin/chromium")),
        headless: true,
        // As root in a test namespace: chromium's sandbox needs user namespaces it cannot have.
        sandbox: false,
        window_size: Some((1280, 1500)),
        idle_browser_timeout: Duration::from_secs(120),
        args: vec!["--disable-dev-shm-usage".as_ref(), "--no-first-run".as_ref()],
        ..LaunchOptions::default()
    };
    let browser = Browser::new(opts).expect("start chromium");
    let tab = browser.new_tab().expect("a tab");
    let started = Instant::now();
    tab.navigate_to(&url).unwrap().wait_until_navigated().unwrap();
    let loaded = started.elapsed();

    // The neighbor's row, with its state and balance.
    let row = format!("tr.neighbor[data-id='{neighbor}']");
    tab.wait_for_element_with_custom_timeout(&row, Duration::from_secs(20)).expect("the neighbor's row");
    let shown = started.elapsed();
    if let Ok(hold) = std::env::var("TOLLWAY_DASHBOARD_HOLD_SECS") {
        // For the benchmark below: only keep the page open (it polls as it would for an operator).
        println!("holding the page open for {hold} s");
        std::thread::sleep(Duration::from_secs(hold.parse().unwrap()));
        assert!(tab.find_element(&row).is_ok(), "the page still shows the neighbor");
        if shot != "/dev/null" {
            let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true).unwrap();
            std::fs::write(&shot, png).expect("write the screenshot");
        }
        return;
    }
    let cells = tab.find_element(&row).unwrap().get_inner_text().unwrap();
    assert!(cells.contains("connected"), "the row shows the session: {cells:?}");
    assert!(cells.contains(&neighbor[..8]), "the row names the neighbor: {cells:?}");
    assert!(cells.contains("RTT ") && cells.contains(" ms"), "the row shows the measured round-trip time: {cells:?}");

    // The throughput chart has drawn the neighbor's history (a line with points).
    let series = format!("#chart-in path.series[data-neighbor='{neighbor}']");
    let path = tab.wait_for_element_with_custom_timeout(&series, Duration::from_secs(30)).expect("a drawn chart");
    let d = path.get_attribute_value("d").unwrap().unwrap_or_default();
    assert!(d.starts_with('M') && d.len() > 5, "the line has points: {d:?}");
    let points: u32 = path.get_attribute_value("data-points").unwrap().unwrap_or_default().parse().unwrap_or(0);
    assert!(points >= 1, "points drawn: {points}");
    let charted = started.elapsed();

    // Change the ask from the page, as an operator would: type, press Set.
    let ask = tab.find_element("#ask").unwrap();
    ask.click().unwrap();
    ask.call_js_fn("function () { this.value = ''; }", vec![], false).unwrap();
    ask.type_into(NEW_ASK).unwrap();
    tab.find_element("#price-set").unwrap().click().unwrap();
    let msg = wait_text(&tab, "#message", "Prices changed");
    assert!(!msg.contains("Not changed"), "{msg}");
    let node_ask = wait_text(&tab, "#node-ask", NEW_ASK);
    println!("the page shows the new ask: {node_ask}");

    // Paint timings for BENCHMARKS.md.
    let fcp = tab
        .evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime", false)
        .unwrap()
        .value
        .and_then(|v| v.as_f64())
        .unwrap_or(-1.0);
    println!(
        "BENCH dashboard: loaded {:.0} ms, first contentful paint {fcp:.0} ms, neighbor row {:.0} ms, chart drawn {:.0} ms",
        loaded.as_secs_f64() * 1e3,
        shown.as_secs_f64() * 1e3,
        charted.as_secs_f64() * 1e3
    );
    std::thread::sleep(Duration::from_secs(2));
    let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true).expect("a screenshot");
    std::fs::write(&shot, png).expect("write the screenshot");
}

/// Wait until the element's text contains `needle`; its text then.
fn wait_text(tab: &headless_chrome::Tab, selector: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = tab.find_element(selector).and_then(|e| e.get_inner_text()).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{selector} never showed {needle:?}: {text:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon's CPU and memory with and without the dashboard open. Not run by `cargo test`;
/// run with `cargo test --release -p tollway --test dashboard -- --ignored --nocapture
/// bench_daemon_cost_with_the_dashboard_open` and see BENCHMARKS.md.
#[test]
#[ignore]
fn bench_daemon_cost_with_the_dashboard_open() {
    if skip("bench_daemon_cost_with_the_dashboard_open", &["chromium"]) {
        return;
    }
    let lab = lab_up("dashb", PAIR);
    wait_agreed(&lab, "a", "b");
    let b_id = node_id(&lab, "b");
    let pid = lab.daemon("a").unwrap().expect("a's daemon").pid;
    let secs = 60u64;
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks
    };
    std::thread::sleep(Duration::from_secs(5));
    let (c0, t0) = (cpu(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let idle = (cpu(pid) - c0) / t0.elapsed().as_secs_f64();
    let rss_idle = rss_kb(pid);

    let exe = std::env::current_exe().unwrap();
    let argv =
        [exe.as_os_str(), "browser_session".as_ref(), "--exact".as_ref(), "--ignored".as_ref(), "--nocapture".as_ref()];
    let mut browser = lab
        .command_in("a", &argv)
        .unwrap()
        .env("TOLLWAY_DASHBOARD_URL", "http://127.0.0.1:7480/")
        .env("TOLLWAY_DASHBOARD_NEIGHBOR", &b_id)
        .env("TOLLWAY_DASHBOARD_SCREENSHOT", "/dev/null")
        .env("TOLLWAY_DASHBOARD_HOLD_SECS", (secs + 15).to_string())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let (c0, t0) = (cpu(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let open = (cpu(pid) - c0) / t0.elapsed().as_secs_f64();
    let rss_open = rss_kb(pid);
    assert!(browser.wait().unwrap().success(), "the browser session");
    println!(
        "BENCH dashboard: daemon CPU idle {:.2} % of a core, with the page open {:.2} %; RSS {} kB idle, {} kB with the page open",
        idle * 100.0,
        open * 100.0,
        rss_idle,
        rss_open
    );
}
