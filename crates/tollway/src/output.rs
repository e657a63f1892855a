//! Human-readable tables for the CLI.

use tollway_api::Status;

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
    if s.neighbors.is_empty() {
        out += "no neighbors\n";
    } else {
        out += &format!(
            "{:<12}  {:<15}  {:<9}  {:<6}  {:>9}  {:>9}  {:>9}  {}\n",
            "NEIGHBOR", "INTERFACE", "STATE", "TUNNEL", "HANDSHAKE", "IN", "OUT", "VIA"
        );
        for nb in &s.neighbors {
            out += &format!(
                "{:<12}  {:<15}  {:<9}  {:<6}  {:>9}  {:>9}  {:>9}  {}\n",
                &nb.id[..12.min(nb.id.len())],
                nb.interface,
                nb.state,
                if nb.tunnel_up { "up" } else { "down" },
                nb.last_handshake_secs.map(|s| format!("{s} s ago")).unwrap_or_else(|| "never".into()),
                bytes(nb.bytes_in),
                bytes(nb.bytes_out),
                nb.underlay
            );
            if let Some(e) = &nb.last_error {
                out += &format!("              last error: {e}\n");
            }
        }
    }
    if !s.discovery_rejected.is_empty() {
        let parts: Vec<String> = s.discovery_rejected.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        out += &format!("ignored discovery messages: {}\n", parts.join(", "));
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
}
