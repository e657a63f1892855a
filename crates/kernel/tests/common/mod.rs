//! Shared set-up of the kernel integration tests: root check, unique names, key pairs, and a
//! pair of namespaces joined by a veth.

#![allow(dead_code)]

use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tollway_core::{IfName, WgPublicKey};
use tollway_kernel::netns::{self, NetNs};
use tollway_kernel::{Links, NetlinkLinks, WgConfig};

/// True (after printing why) when the test cannot run here: it needs root, `ip` and every one
/// of `programs`. Under the test command (`TOLLWAY_REQUIRE_ALL_TESTS=1`) it panics instead.
pub fn skip(test: &str, programs: &[&str]) -> bool {
    let mut all = vec!["ip"];
    all.extend_from_slice(programs);
    tollway_testkit::skip_unless(test, &all)
}

/// An interface name unique host-wide: `tag` + pid + counter, in hex (at most 14 characters
/// for a 4-character tag).
pub fn unique(tag: &str) -> IfName {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    IfName::new(format!("{tag}{:x}{:x}", std::process::id(), n & 0xff)).unwrap()
}

pub struct Keys {
    pub private: [u8; 32],
    pub public: WgPublicKey,
}

pub fn keys(seed: u8) -> Keys {
    let secret = StaticSecret::from([seed; 32]);
    Keys { private: secret.to_bytes(), public: WgPublicKey(PublicKey::from(&secret).to_bytes()) }
}

/// One side of a two-namespace lab: a namespace, its veth end (with a link-local address) and
/// the names and addresses its tunnel will use.
pub struct Side {
    pub ns: NetNs,
    pub veth: IfName,
    pub veth_index: u32,
    pub veth_ll: Ipv6Addr,
    pub tun: IfName,
    pub tun_ll: Ipv6Addr,
    pub keys: Keys,
    pub port: u16,
}

impl Side {
    /// The tunnel configuration that reaches `peer` over the veth.
    pub fn config_to(&self, peer: &Side, keepalive_secs: u16) -> WgConfig {
        WgConfig {
            ifname: self.tun.clone(),
            private_key: self.keys.private,
            listen_port: self.port,
            peer_key: peer.keys.public,
            endpoint: Some(SocketAddrV6::new(peer.veth_ll, peer.port, 0, self.veth_index)),
            keepalive_secs,
        }
    }

    /// Give the tunnel its link-local address and bring it up.
    pub fn configure_tunnel_link(&self) {
        let (tun, ll) = (self.tun.clone(), self.tun_ll);
        self.ns
            .run(move || {
                let mut links = NetlinkLinks::new();
                links.ensure_address(&tun, ll, 64).unwrap();
                links.set_up(&tun, Some(1420)).unwrap();
            })
            .unwrap();
    }

    /// `ping -6 -c1 -W2 <addr>%<dev>` inside this namespace.
    pub fn ping(&self, addr: Ipv6Addr, dev: &IfName) -> bool {
        let target = format!("{addr}%{dev}");
        self.ns.exec_unchecked("ping", &["-6", "-c1", "-W2", &target]).map(|o| o.status.success()).unwrap_or(false)
    }
}

/// Two namespaces joined by a veth pair, each end up with a fixed link-local address.
pub fn two_sides() -> (Side, Side) {
    let a_ns = NetNs::new().unwrap();
    let b_ns = NetNs::new().unwrap();
    let (a_veth, b_veth) = (unique("va"), unique("vb"));
    netns::veth_pair(&a_ns, a_veth.as_str(), &b_ns, b_veth.as_str()).unwrap();
    let mk = |ns: NetNs, veth: IfName, veth_ll: &str, tun_tag: &str, tun_ll: &str, seed: u8, port: u16| {
        let veth_ll: Ipv6Addr = veth_ll.parse().unwrap();
        let v = veth.clone();
        let veth_index = ns
            .run(move || {
                let mut links = NetlinkLinks::new();
                links.ensure_address(&v, veth_ll, 64).unwrap();
                links.set_up(&v, None).unwrap();
                links.index_of(&v).unwrap().unwrap()
            })
            .unwrap();
        Side {
            ns,
            veth,
            veth_index,
            veth_ll,
            tun: unique(tun_tag),
            tun_ll: tun_ll.parse().unwrap(),
            keys: keys(seed),
            port,
        }
    };
    let a = mk(a_ns, a_veth, "fe80::a", "twa", "fe80::1:a", 0xa1, 51001);
    let b = mk(b_ns, b_veth, "fe80::b", "twb", "fe80::1:b", 0xb1, 51002);
    (a, b)
}

/// Poll `f` every 10 ms until it gives `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Logs (ours and boringtun's) for `RUST_LOG=debug cargo test -- --nocapture`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
