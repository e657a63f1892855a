//! Human-readable tables for the CLI.

use tollway_api::{Ledger, MarketStatus, Status};

/// "1.2 MB"-style byte counts (decimal units, like the per-MB prices).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn status_table(s: &Status) -> String {
    let mut out = String::new();
    let n = &s.node;
    out += &format!(
        "node {}  mesh {}  tunnels {}  up {} s  on {}\n",
        &n.id[..12],
        n.mesh_ip,
        n.tunnel_backend,
        n.uptime_secs,
        n.interfaces.join(",")
    );
    let m = &n.market;
    out += &format!(
        "market: ask {} {c}/MB, max price {}, bid {}, pay at {}, credit limit {}, floor {} kbit/s ({}){}\n",
        m.ask,
        m.max_price,
        m.bid_policy,
        m.pay_threshold,
        m.credit_limit,
        m.floor_rate_kbit,
        m.enforcement_policy,
        if m.payments_paused { ", PAYMENTS PAUSED" } else { "" },
        c = m.currency
    );
    out += &overrides_line(m);
    if s.neighbors.is_empty() {
        out += "no neighbors\n";
    } else {
        out += &format!(
            "{:<12}  {:<15}  {:<9}  {:<6}  {:>9}  {:>9}  {:>9}  {:>8}  {:>9}  {:>11}  {}\n",
            "NEIGHBOR",
            "INTERFACE",
            "STATE",
            "TUNNEL",
            "HANDSHAKE",
            "IN",
            "OUT",
            "RTT",
            "SPOOFED",
            "UNSOLICITED",
            "VIA"
        );
        for nb in &s.neighbors {
            out += &format!(
                "{:<12}  {:<15}  {:<9}  {:<6}  {:>9}  {:>9}  {:>9}  {:>8}  {:>9}  {:>11}  {}\n",
                &nb.id[..12.min(nb.id.len())],
                nb.interface,
                nb.state,
                if nb.tunnel_up { "up" } else { "down" },
                nb.last_handshake_secs.map(|s| format!("{s} s ago")).unwrap_or_else(|| "never".into()),
                bytes(nb.bytes_in),
                bytes(nb.bytes_out),
                nb.quality.as_ref().map_or_else(|| "-".into(), |q| format!("{:.1} ms", q.rtt_us as f64 / 1000.0)),
                bytes(nb.dropped_spoofed_bytes),
                bytes(nb.dropped_unsolicited_bytes),
                nb.underlay
            );
            if let Some(e) = &nb.last_error {
                out += &format!("              last error: {e}\n");
            }
        }
        out += &format!(
            "\n{:<12}  {:>10}  {:>10}  {:>10}  {:>12}  {:>12}  {:>12}  {:<10}  {}\n",
            "NEIGHBOR", "ITS ASK", "OUR BID", "ITS BID", "BALANCE", "PAID", "RECEIVED", "ENFORCED", "NOTE"
        );
        for nb in &s.neighbors {
            let dash = || "-".to_string();
            let note = nb
                .enforcement_reason
                .clone()
                .or_else(|| (nb.negotiation != "agreed").then(|| nb.negotiation.clone()))
                .or_else(|| nb.last_dispute.clone().map(|d| format!("dispute: {d}")))
                .unwrap_or_default();
            let note = if nb.disputed_bytes > 0 {
                format!(
                    "{} disputed (claimed, never sent){}{note}",
                    bytes(nb.disputed_bytes),
                    if note.is_empty() { "" } else { "; " }
                )
            } else {
                note
            };
            out += &format!(
                "{:<12}  {:>10}  {:>10}  {:>10}  {:>12}  {:>12}  {:>12}  {:<10}  {}\n",
                &nb.id[..12.min(nb.id.len())],
                nb.ask.clone().unwrap_or_else(dash),
                nb.bid.clone().unwrap_or_else(dash),
                nb.their_bid.clone().unwrap_or_else(dash),
                nb.balance,
                nb.paid_total,
                nb.received_total,
                nb.enforcement,
                note
            );
        }
        out += &quality_table(s);
    }
    if !s.routing.kind.is_empty() {
        let full = routes_table(&s.routing, &[]);
        out += "\n";
        for line in full.lines().filter(|l| *l != "no routes") {
            out += line;
            out += "\n";
        }
        let installed = s.routes.iter().filter(|r| r.installed).count();
        out += &format!("{} routes known, {installed} installed (tollway routes)\n", s.routes.len());
    }
    if !s.discovery_rejected.is_empty() {
        let parts: Vec<String> = s.discovery_rejected.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        out += &format!("ignored discovery messages: {}\n", parts.join(", "));
    }
    out
}

/// Speed tests through each neighbor (only when any neighbor was tested or tried).
fn quality_table(s: &Status) -> String {
    let tested: Vec<_> = s.neighbors.iter().filter_map(|nb| nb.quality.as_ref().map(|q| (nb, q))).collect();
    if !tested.iter().any(|(_, q)| q.tests + q.test_failures > 0 || !q.verdict.is_empty() && q.verdict != "unknown") {
        return String::new();
    }
    let mbit = |k: Option<u64>| k.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1000.0));
    // Upload-only tests (static and controller routing) run no download: "-", not 0.0.
    let down = |k: Option<u64>| mbit(k.filter(|_| !s.tests_upload_only));
    let live = |down: Option<u64>, up: Option<u64>| match (down, up) {
        (Some(d), Some(u)) => format!("{:.1}/{:.1}", d as f64 / 1000.0, u as f64 / 1000.0),
        _ => "-".into(),
    };
    let mut out = format!(
        "\n{:<12}  {:>5}  {:>9}  {:>9}  {:>8}  {:>6}  {:>11}  {:>9}  {:<10}  {}\n",
        "NEIGHBOR", "TESTS", "DOWN Mb/s", "UP Mb/s", "TEST RTT", "LOSS", "LIVE PEAK", "TEST DATA", "VERDICT", "NOTE"
    );
    for (nb, q) in tested {
        out += &format!(
            "{:<12}  {:>5}  {:>9}  {:>9}  {:>8}  {:>6}  {:>11}  {:>9}  {:<10}  {}\n",
            &nb.id[..12.min(nb.id.len())],
            q.tests,
            down(q.down_kbit),
            mbit(q.up_kbit),
            q.test_rtt_us.map_or_else(|| "-".into(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
            q.test_loss_ppm.map_or_else(|| "-".into(), |p| format!("{:.2}%", p as f64 / 10_000.0)),
            live(q.live_peak_down_kbit, q.live_peak_up_kbit),
            bytes(q.test_bytes),
            q.verdict,
            q.reason.clone().unwrap_or_default()
        );
        // Tests against each destination apart, when there is more than the internet: each
        // ranks the neighbor for routes to that destination.
        if q.destinations.iter().any(|d| d.destination != "internet") {
            for d in &q.destinations {
                let ranking = match d.penalty {
                    Some(0) => "routes to it: best or not ranked".to_owned(),
                    Some(p) => format!("routes to it: +{p}"),
                    None => "not routed".to_owned(),
                };
                // The destination goes in the note: a mesh address would not fit the column.
                out += &format!(
                    "{:<12}  {:>5}  {:>9}  {:>9}  {:>8}  {:>6}  {:>11}  {:>9}  {:<10}  {}: {}\n",
                    "  to",
                    d.tests,
                    down(Some(d.down_kbit)),
                    mbit(Some(d.up_kbit)),
                    format!("{:.1} ms", d.rtt_us as f64 / 1000.0),
                    format!("{:.2}%", d.loss_ppm as f64 / 10_000.0),
                    "",
                    "",
                    d.verdict,
                    d.destination,
                    ranking
                );
            }
        }
    }
    out += &format!(
        "test data: {} in the last hour of {} allowed, {} since start\n",
        bytes(s.test_bytes_last_hour),
        bytes(s.test_budget_per_hour),
        bytes(s.test_bytes_total)
    );
    if s.tests_upload_only {
        out += "tests: upload only (static/controller routing: downloads come back by the operator's routes, \
                whichever neighbor is tested; neighbors are judged and ranked by upload)\n";
    }
    out
}

pub fn market_table(m: &MarketStatus) -> String {
    format!(
        "currency        {}\nask             {} per MB\nmax price       {} per MB\nbid             {}\npay threshold   {}\ncredit limit    {}\nfloor rate      {} kbit/s\nenforcement     {}\npayments        {}\nrejected notes  {}\n",
        m.currency,
        m.ask,
        m.max_price,
        m.bid_policy,
        m.pay_threshold,
        m.credit_limit,
        m.floor_rate_kbit,
        m.enforcement_policy,
        if m.payments_paused { "paused" } else { "running" },
        m.payments_rejected
    ) + &overrides_line(m)
}

/// The settings changed at run time that override the config file, if any.
pub fn overrides_line(m: &MarketStatus) -> String {
    if m.overrides.is_empty() {
        return String::new();
    }
    format!("set at run time  {} (overriding the config until `tollway price reset`)\n", m.overrides.join(", "))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn ledger_tables(l: &Ledger) -> String {
    let mut out = format!("USAGE (per minute, amounts in {})\n", l.currency);
    out += &format!(
        "{:<19}  {:<12}  {:>10}  {:>10}  {:>12}  {:>12}  {:>10}\n",
        "MINUTE (UTC)", "NEIGHBOR", "IN", "OUT", "EARNED", "SPENT", "DISPUTED"
    );
    for u in &l.usage {
        out += &format!(
            "{:<19}  {:<12}  {:>10}  {:>10}  {:>12}  {:>12}  {:>10}\n",
            time(u.minute_unix_ms),
            &u.neighbor[..12],
            bytes(u.bytes_in),
            bytes(u.bytes_out),
            u.earned,
            u.spent,
            if u.disputed_bytes > 0 { bytes(u.disputed_bytes) } else { "-".into() }
        );
    }
    out += "\nPAYMENTS\n";
    out += &format!(
        "{:<19}  {:<12}  {:<8}  {:>12}  {:>12}  {:>5}  {}\n",
        "TIME (UTC)", "NEIGHBOR", "", "AMOUNT", "CUMULATIVE", "NOTES", "RAIL"
    );
    for p in &l.payments {
        out += &format!(
            "{:<19}  {:<12}  {:<8}  {:>12}  {:>12}  {:>5}  {}\n",
            time(p.unix_ms),
            &p.neighbor[..12],
            p.direction,
            p.amount,
            p.cumulative,
            p.notes,
            p.rail
        );
    }
    out += "\nPRICE CHANGES\n";
    for p in &l.prices {
        out += &format!(
            "{:<19}  {:<9}  {:<12}  {} -> {}  (by {}{})\n",
            time(p.unix_ms),
            p.what,
            p.neighbor.as_deref().map(|n| &n[..12]).unwrap_or("-"),
            p.old.as_deref().unwrap_or("-"),
            p.new,
            p.by,
            if p.changes > 1 { format!(", {} changes this minute", p.changes) } else { String::new() }
        );
    }
    out
}

/// `tollway routes`, and the routing part of `tollway status`.
pub fn routes_table(r: &tollway_api::RoutingStatus, routes: &[tollway_api::RouteStatus]) -> String {
    let mut out = format!("routing: {} (table {}), mesh IPv4 {}", r.kind, r.table, r.mesh_ipv4);
    if let Some(u) = &r.uplink {
        let fams: Vec<&str> =
            [(r.uplink_ipv4, "IPv4"), (r.uplink_ipv6, "IPv6")].iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
        let what = if fams.is_empty() {
            "no default route: nothing announced".to_string()
        } else {
            format!("announcing default {}", fams.join(" and "))
        };
        out += &format!(", uplink {u} ({what})");
    }
    if let Some(l) = &r.lan {
        out += &format!(", LAN {l} ({})", r.lan_prefixes.join(", "));
    }
    out += "\n";
    for p in &r.problems {
        out += &format!("problem: {p}\n");
    }
    if !r.links.is_empty() {
        let links: Vec<String> = r
            .links
            .iter()
            .map(|l| {
                let mut penalty = if l.penalty > 0 {
                    format!(" (+{} to tested destinations: ranked)", l.penalty)
                } else {
                    String::new()
                };
                for (d, p) in &l.destination_penalties {
                    penalty += &format!(" (+{p} to {d})");
                }
                format!("{} via {} cost {}{penalty}", &l.neighbor[..12.min(l.neighbor.len())], l.interface, l.cost)
            })
            .collect();
        out += &format!("links: {}\n", links.join(", "));
    }
    if routes.is_empty() {
        out += "no routes\n";
        return out;
    }
    out += &format!(
        "{:<44}  {:<12}  {:<15}  {:>6}  {:>9}  {:<9}  {}\n",
        "PREFIX", "VIA", "INTERFACE", "METRIC", "ADVERTISED", "INSTALLED", "FROM"
    );
    let mut rows: Vec<&tollway_api::RouteStatus> = routes.iter().collect();
    rows.sort_by(|a, b| (!a.installed, &a.prefix, a.metric).cmp(&(!b.installed, &b.prefix, b.metric)));
    for rt in rows {
        out += &format!(
            "{:<44}  {:<12}  {:<15}  {:>6}  {:>9}  {:<9}  {}\n",
            rt.prefix,
            rt.via.as_deref().map(|v| &v[..12.min(v.len())]).unwrap_or("-"),
            rt.interface.as_deref().unwrap_or("(this node)"),
            if rt.metric >= 65535 { "inf".to_string() } else { rt.metric.to_string() },
            rt.refmetric.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            if rt.interface.is_none() {
                "announced"
            } else if rt.installed {
                "yes"
            } else {
                "no"
            },
            rt.source
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(104_857_600), "104.9 MB");
    }

    #[test]
    fn the_status_table_shows_what_was_dropped_per_neighbor() {
        let nb = tollway_api::NeighborStatus {
            id: "0123456789abcdef".into(),
            interface: "tw0123450abcde".into(),
            state: "connected".into(),
            dropped_spoofed_bytes: 1_500,
            dropped_unsolicited_bytes: 2_000_000,
            ..Default::default()
        };
        let node = tollway_api::NodeStatus { id: "f".repeat(64), ..Default::default() };
        let s = Status { node, neighbors: vec![nb], ..Default::default() };
        let t = status_table(&s);
        let mut lines = t.lines().skip_while(|l| !l.starts_with("NEIGHBOR"));
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        // Right-aligned: each value ends where its header ends.
        let end = |name: &str| header.find(name).unwrap() + name.len();
        assert!(row[..end("SPOOFED")].ends_with(" 1.5 kB"), "{t}");
        assert!(row[..end("UNSOLICITED")].ends_with(" 2.0 MB"), "{t}");
    }

    #[test]
    fn the_quality_table_lists_each_tested_destination_under_its_neighbor_in_the_columns() {
        let dest = |destination: &str, down_kbit, penalty| tollway_api::DestinationQuality {
            destination: destination.into(),
            tests: 2,
            down_kbit,
            up_kbit: down_kbit,
            rtt_us: 400,
            verdict: "acceptable".into(),
            penalty: Some(penalty),
            ..Default::default()
        };
        let quality = tollway_api::QualityStatus {
            tests: 4,
            down_kbit: Some(50_000),
            up_kbit: Some(50_000),
            verdict: "acceptable".into(),
            destinations: vec![
                dest("internet", 9_000, 2048),
                dest("fd40:ef94:a2a9:ab7e:d1ec:ec39:d461:4587", 93_700, 0),
            ],
            ..Default::default()
        };
        let nb =
            tollway_api::NeighborStatus { id: "0123456789abcdef".into(), quality: Some(quality), ..Default::default() };
        let s = Status { neighbors: vec![nb], ..Default::default() };
        let t = quality_table(&s);
        let mut lines = t.lines().skip_while(|l| !l.starts_with("NEIGHBOR"));
        let header = lines.next().unwrap();
        let end = |name: &str| header.find(name).unwrap() + name.len();
        let (_, internet, mesh) = (lines.next().unwrap(), lines.next().unwrap(), lines.next().unwrap());
        assert!(internet.starts_with("  to ") && internet[..end("DOWN Mb/s")].ends_with(" 9.0"), "{t}");
        assert!(internet.ends_with("acceptable  internet: routes to it: +2048"), "{t}");
        assert!(mesh[..end("DOWN Mb/s")].ends_with(" 93.7"), "{t}");
        assert!(mesh.ends_with("fd40:ef94:a2a9:ab7e:d1ec:ec39:d461:4587: routes to it: best or not ranked"), "{t}");
        // Only the internet: no rows per destination.
        let mut only = s.clone();
        only.neighbors[0].quality.as_mut().unwrap().destinations.truncate(1);
        assert!(!quality_table(&only).contains("  to "), "{}", quality_table(&only));
        // Upload-only tests: no download figure, and a line that says why.
        let up_only = Status { tests_upload_only: true, ..s.clone() };
        let t = quality_table(&up_only);
        let row = t.lines().skip_while(|l| !l.starts_with("NEIGHBOR")).nth(1).unwrap();
        assert!(row[..end("DOWN Mb/s")].ends_with(" -") && row[..end("UP Mb/s")].ends_with(" 50.0"), "{t}");
        assert!(t.contains("tests: upload only"), "{t}");
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_795_265_640_000), "2026-11-21 12:54:00");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
