//! Settings that load but will probably not do what the operator meant: printed by
//! `tollway check-config` and logged at start. Not errors: an interface may appear later (a USB
//! modem, a bridge created after us), and a free node is a legitimate choice.

use crate::config::Config;
use std::path::Path;

/// Every warning for `cfg`, given the interfaces that exist here (names).
pub fn warnings(cfg: &Config, existing: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for i in cfg.interfaces.iter().filter(|i| !existing.contains(i)) {
        let here = if existing.is_empty() { "none".to_owned() } else { existing.join(", ") };
        out.push(format!(
            "interfaces: {i:?} does not exist here (interfaces here: {here}); no neighbor will be found on it until it appears"
        ));
    }
    let m = cfg.core_config().market;
    if m.max_price.0 == 0 {
        out.push(
            "market.max_price is 0: every neighbor that asks a price will be declined (\"ask above our max price\"), \
             and a neighbor whose ask we decline does not carry our traffic and restricts us; set market.max_price \
             to the most you will pay per MB"
                .into(),
        );
    }
    let per_sec = m.capacity_bps as u128 / 8 * m.ask.0 as u128 / tollway_core::market::BYTES_PER_MB as u128;
    if per_sec > 0 && (m.credit_limit.0 as u128) < 3 * per_sec {
        let c = cfg.market.currency();
        out.push(format!(
            "market.credit_limit {} covers less than 3 s of traffic at market.capacity_mbit and market.ask ({} a second): \
             paying neighbors may be throttled between payments",
            c.format(m.credit_limit.0),
            c.format(per_sec.min(u64::MAX as u128) as u64)
        ));
    }
    out
}

/// The network interfaces of the calling thread's namespace (`/sys/class/net`).
pub fn existing_interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(Path::new("/sys/class/net"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn a_missing_interface_is_named_with_the_ones_that_exist() {
        let c = cfg("interfaces = [\"eth1\", \"wlan0\"]\n[market]\nmax_price = \"0.005\"\n");
        let w = warnings(&c, &["eth0".into(), "eth1".into(), "lo".into()]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"wlan0\" does not exist") && w[0].contains("interfaces here: eth0, eth1, lo"), "{w:?}");
    }

    #[test]
    fn max_price_zero_says_priced_neighbors_will_be_declined() {
        let c = cfg("interfaces = [\"eth0\"]\n");
        let w = warnings(&c, &["eth0".into()]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("market.max_price is 0") && w[0].contains("declined"), "{w:?}");
    }

    #[test]
    fn a_small_credit_limit_is_flagged_and_a_sane_config_has_no_warning() {
        let small = "interfaces = [\"eth0\"]\n[market]\nask = \"0.01\"\nmax_price = \"0.01\"\npay_threshold = \"0.001\"\ncredit_limit = \"0.001\"\ncapacity_mbit = 100\n";
        let w = warnings(&cfg(small), &["eth0".into()]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("market.credit_limit"), "{w:?}");
        let sane = "interfaces = [\"eth0\"]\n[market]\nask = \"0.002\"\nmax_price = \"0.005\"\ncredit_limit = \"0.1\"\ncapacity_mbit = 100\n";
        assert_eq!(warnings(&cfg(sane), &["eth0".into()]), Vec::<String>::new());
    }
}
