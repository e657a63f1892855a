//! Network namespaces, veths, shaping and loss: built as batches of `ip`/`tc`/`nft` commands
//! (one process per batch), read back with `ip -j`.
//!
//! Order matters (platform gotcha 5): each namespace gets its sysctls (no DAD, keep addresses
//! on link down, forwarding) before any interface is created in it. Veths are created directly
//! in their namespaces, so no name ever appears in the root namespace.

use crate::command::{self, CommandError};
use crate::hosts::Cidr;
use serde::Deserialize;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps its namespace files.
pub const NETNS_DIR: &str = "/run/netns";

/// Sysctls written, in this order, in a namespace before interfaces are created.
pub type Sysctls = &'static [(&'static str, &'static str)];

/// Sysctls of every node namespace: no DAD, addresses kept on link down, forwarding on (a node
/// is a router; its daemon turns forwarding on too).
pub const NAMESPACE_SYSCTLS: Sysctls = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/all/keep_addr_on_down", "1"),
    ("net/ipv6/conf/default/keep_addr_on_down", "1"),
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
];

/// Sysctls of a host namespace (internet, LAN host): like a node's, but forwarding stays off:
/// a host is an end point, not a router.
pub const HOST_SYSCTLS: Sysctls = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/all/keep_addr_on_down", "1"),
    ("net/ipv6/conf/default/keep_addr_on_down", "1"),
    ("net/ipv4/ip_forward", "0"),
    ("net/ipv6/conf/all/forwarding", "0"),
];

/// The nftables table the lab puts in a namespace for packet loss.
pub const NFT_TABLE: &str = "tollway_lab";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot enter namespace {namespace} ({path}): {source}")]
    Enter { namespace: String, path: PathBuf, source: std::io::Error },
    #[error("namespace {namespace}: cannot set {key}: {source}")]
    Sysctl { namespace: String, key: String, source: std::io::Error },
    #[error("namespace {namespace}: interface {interface} {problem} (ip -j link shows: {seen})")]
    Interface { namespace: String, interface: String, problem: &'static str, seen: String },
    #[error("namespace {namespace}: interface {interface} does not have address {address} (it has: {seen})")]
    Address { namespace: String, interface: String, address: Cidr, seen: String },
}

/// The path of a namespace's file: `/run/netns/<name>`.
pub fn namespace_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

#[derive(Deserialize)]
struct NetnsEntry {
    name: String,
}

/// All named network namespaces (`ip -j netns list`).
pub fn list_namespaces() -> Result<Vec<String>, NetError> {
    let list: Vec<NetnsEntry> = command::run_json(&["ip", "-j", "netns", "list"])?;
    Ok(list.into_iter().map(|e| e.name).collect())
}

/// Create the namespaces (one `ip -batch`), then set each one's sysctls.
pub fn create_namespaces(namespaces: &[(String, Sysctls)]) -> Result<(), NetError> {
    if namespaces.is_empty() {
        return Ok(());
    }
    let batch: String = namespaces.iter().map(|(n, _)| format!("netns add {n}\n")).collect();
    command::run(&["ip", "-batch", "-"], Some(&batch))?;
    for (n, sysctls) in namespaces {
        set_sysctls(n, sysctls)?;
    }
    Ok(())
}

/// Write `sysctls` inside namespace `name`, from a short-lived thread that joins it
/// (`/proc/sys/net` resolves against the calling thread's namespace). No process is spawned.
pub fn set_sysctls(name: &str, sysctls: Sysctls) -> Result<(), NetError> {
    let path = namespace_path(name);
    let ns = name.to_owned();
    let enter_err = |source| NetError::Enter { namespace: name.to_owned(), path: path.clone(), source };
    let file = File::open(&path).map_err(enter_err)?;
    std::thread::scope(|s| {
        s.spawn(move || -> Result<(), NetError> {
            // SAFETY: setns on a namespace fd we hold; affects only this thread, which ends here.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let source = std::io::Error::last_os_error();
                return Err(NetError::Enter { namespace: ns, path: namespace_path(name), source });
            }
            for (key, value) in sysctls {
                std::fs::write(Path::new("/proc/sys").join(key), value).map_err(|source| NetError::Sysctl {
                    namespace: ns.clone(),
                    key: key.replace('/', "."),
                    source,
                })?;
            }
            Ok(())
        })
        .join()
        .expect("sysctl thread does not panic")
    })
}

/// A veth pair to create: `a_interface` in `a_namespace`, its peer `b_interface` in
/// `b_namespace`, both with the same MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    pub a_namespace: String,
    pub a_interface: String,
    pub b_namespace: String,
    pub b_interface: String,
    pub mtu: u32,
}

/// One `ip link add` line per pair, each end created directly in its namespace.
pub fn veth_batch(pairs: &[VethPair]) -> String {
    pairs
        .iter()
        .map(|p| {
            format!(
                "link add {} mtu {} netns {} type veth peer name {} mtu {} netns {}\n",
                p.a_interface, p.mtu, p.a_namespace, p.b_interface, p.mtu, p.b_namespace
            )
        })
        .collect()
}

/// Create every veth in one `ip -batch` run from the root namespace.
pub fn create_veths(batch: &str) -> Result<(), NetError> {
    if !batch.is_empty() {
        command::run(&["ip", "-batch", "-"], Some(batch))?;
    }
    Ok(())
}

/// What one namespace needs once its veths exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSetup {
    pub namespace: String,
    /// Interfaces to bring up (after `lo`).
    pub interfaces: Vec<String>,
    /// Interfaces to leave down (links taken down with `lab link down`).
    pub down: Vec<String>,
    /// Addresses to add: interface (or `lo`), address with prefix length.
    pub addresses: Vec<(String, Cidr)>,
    /// Default routes: interface, gateway (one per family).
    pub default_routes: Vec<(String, IpAddr)>,
    /// Egress rate limits: interface, Mbit/s, MTU.
    pub rates: Vec<(String, u32, u32)>,
    /// Ingress random loss: interface, thousandths.
    pub losses: Vec<(String, u16)>,
}

impl NamespaceSetup {
    /// `ip -batch` text: addresses (IPv6 without DAD), lo and every interface up except those
    /// to leave down, then the default routes (`replace`, so re-applying is harmless) over
    /// interfaces that are up.
    pub fn link_batch(&self) -> String {
        let mut s = String::new();
        for (dev, a) in &self.addresses {
            let nodad = if a.is_ipv6() { " nodad" } else { "" };
            s += &format!("address replace {a} dev {dev}{nodad}\n");
        }
        s += "link set lo up\n";
        for i in self.interfaces.iter().filter(|i| !self.down.contains(i)) {
            s += &format!("link set {i} up\n");
        }
        s + &self.route_batch()
    }

    /// `ip -batch` text: the default routes over interfaces that are not to be left down
    /// (`onlink`: the gateway is on the link whether or not the peer end is up yet). The kernel
    /// deletes routes over an interface that goes down, so `lab link up` runs this again.
    pub fn route_batch(&self) -> String {
        self.default_routes
            .iter()
            .filter(|(dev, _)| !self.down.contains(dev))
            .map(|(dev, via)| format!("route replace default via {via} dev {dev} onlink\n"))
            .collect()
    }

    /// `tc -batch` text: an HTB root with one class at the rate, for each rate-limited
    /// interface. `r2q` and `quantum` are explicit so HTB does not warn (gotcha 9).
    pub fn tc_batch(&self) -> String {
        self.rates.iter().map(|(i, mbit, mtu)| htb_batch(i, *mbit, *mtu)).collect()
    }

    /// `nft -f` text: one netdev table with an ingress chain per lossy interface.
    pub fn nft_script(&self) -> String {
        if self.losses.is_empty() {
            return String::new();
        }
        let mut s = format!("table netdev {NFT_TABLE} {{\n");
        for (i, permille) in &self.losses {
            s += &format!(
                "  chain loss_{c} {{\n    type filter hook ingress device \"{i}\" priority 0; policy accept;\n    numgen random mod 1000 < {permille} drop\n  }}\n",
                c = i.replace('-', "_")
            );
        }
        s + "}\n"
    }

    /// Apply addresses, links, routes, shaping and loss; then check with `ip -j` that every
    /// interface is there and up (or down, as asked) with its addresses.
    pub fn apply(&self) -> Result<(), NetError> {
        let ns = self.namespace.as_str();
        command::run(&["ip", "-n", ns, "-batch", "-"], Some(&self.link_batch()))?;
        let tc = self.tc_batch();
        if !tc.is_empty() {
            command::run(&["tc", "-n", ns, "-batch", "-"], Some(&tc))?;
        }
        let nft = self.nft_script();
        if !nft.is_empty() {
            command::run(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&nft))?;
        }
        verify_interfaces(ns, &self.interfaces, &self.down)?;
        verify_addresses(ns, &self.addresses)
    }
}

/// HTB on `iface`: default class 1:1 at `mbit`, burst 10 ms worth (at least two frames).
pub fn htb_batch(iface: &str, mbit: u32, mtu: u32) -> String {
    let bytes_per_sec = u64::from(mbit) * 125_000;
    let frame = u64::from(mtu) + 14;
    let quantum = (bytes_per_sec / 100).clamp(frame, 200_000);
    let r2q = (bytes_per_sec / quantum).max(1);
    let burst = (bytes_per_sec / 100).max(2 * frame);
    format!(
        "qdisc replace dev {iface} root handle 1: htb default 1 r2q {r2q}\n\
         class replace dev {iface} parent 1: classid 1:1 htb rate {mbit}mbit ceil {mbit}mbit \
         quantum {quantum} burst {burst} cburst {burst}\n"
    )
}

/// One interface as `ip -j link show` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct IpLink {
    pub ifname: String,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub link_type: String,
}

/// `ip -n <ns> -j link show`.
pub fn links_in(namespace: &str) -> Result<Vec<IpLink>, NetError> {
    Ok(command::run_json(&["ip", "-n", namespace, "-j", "link", "show"])?)
}

/// Check that each of `interfaces` exists in the namespace and is administratively up, except
/// those in `down`, which must be administratively down.
pub fn verify_interfaces(namespace: &str, interfaces: &[String], down: &[String]) -> Result<(), NetError> {
    let links = links_in(namespace)?;
    let seen = || links.iter().map(|l| format!("{} {:?}", l.ifname, l.flags)).collect::<Vec<_>>().join(", ");
    for want in interfaces {
        let want_up = !down.contains(want);
        let problem = match links.iter().find(|l| &l.ifname == want) {
            None => "is missing",
            Some(l) if l.flags.iter().any(|f| f == "UP") != want_up => {
                if want_up {
                    "is not up"
                } else {
                    "is not down"
                }
            }
            Some(_) => continue,
        };
        return Err(NetError::Interface {
            namespace: namespace.to_owned(),
            interface: want.clone(),
            problem,
            seen: seen(),
        });
    }
    Ok(())
}

/// One interface's addresses as `ip -j address show` reports them.
#[derive(Debug, Clone, Deserialize)]
pub struct IpAddrs {
    pub ifname: String,
    #[serde(default)]
    pub addr_info: Vec<IpAddrInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpAddrInfo {
    pub local: IpAddr,
    pub prefixlen: u8,
}

/// `ip -n <ns> -j address show`.
pub fn addresses_in(namespace: &str) -> Result<Vec<IpAddrs>, NetError> {
    Ok(command::run_json(&["ip", "-n", namespace, "-j", "address", "show"])?)
}

/// Check that each address is on its interface.
pub fn verify_addresses(namespace: &str, addresses: &[(String, Cidr)]) -> Result<(), NetError> {
    if addresses.is_empty() {
        return Ok(());
    }
    let all = addresses_in(namespace)?;
    for (dev, want) in addresses {
        let on_dev: Vec<Cidr> = all
            .iter()
            .filter(|i| &i.ifname == dev)
            .flat_map(|i| i.addr_info.iter().map(|a| Cidr { addr: a.local, len: a.prefixlen }))
            .collect();
        if !on_dev.contains(want) {
            return Err(NetError::Address {
                namespace: namespace.to_owned(),
                interface: dev.clone(),
                address: *want,
                seen: on_dev.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// Set interfaces administratively up or down (one `ip -batch` per namespace, all
/// namespaces first down or up before any check), then check with `ip -j` that they are.
pub fn set_links(changes: &[(String, Vec<String>)], up: bool) -> Result<(), NetError> {
    let word = if up { "up" } else { "down" };
    for (ns, ifaces) in changes {
        let batch: String = ifaces.iter().map(|i| format!("link set {i} {word}\n")).collect();
        command::run(&["ip", "-n", ns, "-batch", "-"], Some(&batch))?;
    }
    for (ns, ifaces) in changes {
        if up {
            verify_interfaces(ns, ifaces, &[])?;
        } else {
            verify_interfaces(ns, ifaces, ifaces)?;
        }
    }
    Ok(())
}

/// Delete the named namespaces (one `ip -force -batch`, which goes on past errors), then list
/// again; returns the problems (namespaces that still exist, with the command's error).
pub fn delete_namespaces(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let batch: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    let err = command::run(&["ip", "-force", "-batch", "-"], Some(&batch)).err();
    match list_namespaces() {
        Ok(now) => {
            let left: Vec<&String> = names.iter().filter(|n| now.contains(n)).collect();
            if left.is_empty() {
                return Vec::new();
            }
            let why = err.map(|e| format!(": {e}")).unwrap_or_default();
            left.iter().map(|n| format!("namespace {n} still exists after `ip netns del`{why}")).collect()
        }
        Err(e) => vec![format!("cannot list namespaces to check they are gone: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_lines_put_each_end_in_its_namespace() {
        let p = VethPair {
            a_namespace: "tw-x-a".into(),
            a_interface: "v-b".into(),
            b_namespace: "tw-x-b".into(),
            b_interface: "v-a".into(),
            mtu: 1500,
        };
        let text = veth_batch(&[p]);
        assert_eq!(text, "link add v-b mtu 1500 netns tw-x-a type veth peer name v-a mtu 1500 netns tw-x-b\n");
    }

    #[test]
    fn htb_quantum_and_r2q_are_in_range() {
        for mbit in [1, 5, 100, 1000, 10_000, 100_000] {
            let text = htb_batch("v-b", mbit, 1500);
            let num = |key: &str| -> u64 {
                let rest = &text[text.find(&format!(" {key} ")).unwrap() + key.len() + 2..];
                rest.split_whitespace().next().unwrap().parse().unwrap()
            };
            let q = num("quantum");
            assert!((1514..=200_000).contains(&q), "{mbit}: {text}");
            let per_r2q = u64::from(mbit) * 125_000 / num("r2q");
            assert!(per_r2q <= 200_000 && (per_r2q >= 1000 || mbit == 1), "{mbit}: {text}");
            assert!(text.contains(&format!("rate {mbit}mbit ceil {mbit}mbit")));
        }
    }

    #[test]
    fn setup_batches() {
        let s = NamespaceSetup {
            namespace: "tw-x-a".into(),
            interfaces: vec!["v-b".into(), "v-c".into()],
            losses: vec![("v-c".into(), 25)],
            ..Default::default()
        };
        assert_eq!(s.link_batch(), "link set lo up\nlink set v-b up\nlink set v-c up\n");
        assert_eq!(s.tc_batch(), "");
        let nft = s.nft_script();
        assert!(nft.starts_with("table netdev tollway_lab {\n  chain loss_v_c {"), "{nft}");
        assert!(nft.contains("hook ingress device \"v-c\" priority 0; policy accept;"));
        assert!(nft.contains("numgen random mod 1000 < 25 drop"));
    }

    #[test]
    fn addresses_come_first_and_routes_only_over_links_left_up() {
        let s = NamespaceSetup {
            namespace: "tw-x-a".into(),
            interfaces: vec!["v-b".into(), "v-internet".into()],
            down: vec!["v-b".into()],
            addresses: vec![
                ("v-internet".into(), "198.51.100.6/30".parse().unwrap()),
                ("v-internet".into(), "2001:db8:ffff:1::2/64".parse().unwrap()),
            ],
            default_routes: vec![
                ("v-internet".into(), "198.51.100.5".parse().unwrap()),
                ("v-internet".into(), "2001:db8:ffff:1::1".parse().unwrap()),
                ("v-b".into(), "192.0.2.99".parse().unwrap()),
            ],
            ..Default::default()
        };
        assert_eq!(
            s.link_batch(),
            "address replace 198.51.100.6/30 dev v-internet\n\
             address replace 2001:db8:ffff:1::2/64 dev v-internet nodad\n\
             link set lo up\n\
             link set v-internet up\n\
             route replace default via 198.51.100.5 dev v-internet onlink\n\
             route replace default via 2001:db8:ffff:1::1 dev v-internet onlink\n"
        );
    }
}
