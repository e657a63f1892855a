//! Network namespaces, veths, shaping and loss: built as batches of `ip`/`tc`/`nft` commands
//! (one process per batch), read back with `ip -j`.
//!
//! Order matters (platform gotcha 5): each namespace gets its sysctls (no DAD, keep addresses
//! on link down, forwarding) before any interface is created in it. Veths are created directly
//! in their namespaces, so no name ever appears in the root namespace.

use crate::command::{self, CommandError};
use crate::state::LinkRecord;
use serde::Deserialize;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps its namespace files.
pub const NETNS_DIR: &str = "/run/netns";

/// Sysctls written in every lab namespace before interfaces are created.
pub const NAMESPACE_SYSCTLS: [(&str, &str); 6] = [
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/all/keep_addr_on_down", "1"),
    ("net/ipv6/conf/default/keep_addr_on_down", "1"),
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
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

/// Create the namespaces (one `ip -batch`), then set [`NAMESPACE_SYSCTLS`] in each.
pub fn create_namespaces(names: &[String]) -> Result<(), NetError> {
    if names.is_empty() {
        return Ok(());
    }
    let batch: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    command::run(&["ip", "-batch", "-"], Some(&batch))?;
    for n in names {
        set_sysctls(n)?;
    }
    Ok(())
}

/// Write [`NAMESPACE_SYSCTLS`] inside namespace `name`, from a short-lived thread that joins
/// it (`/proc/sys/net` resolves against the calling thread's namespace). No process is spawned.
pub fn set_sysctls(name: &str) -> Result<(), NetError> {
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
            for (key, value) in NAMESPACE_SYSCTLS {
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

/// One `ip link add` line per link: the veth `a_interface` in `ns(a)`, its peer `b_interface`
/// in `ns(b)`, both with the link's MTU.
pub fn veth_batch(links: &[LinkRecord], ns: impl Fn(&LinkRecord, bool) -> String) -> String {
    links
        .iter()
        .map(|l| {
            format!(
                "link add {} mtu {} netns {} type veth peer name {} mtu {} netns {}\n",
                l.a_interface,
                l.mtu,
                ns(l, true),
                l.b_interface,
                l.mtu,
                ns(l, false)
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
#[derive(Debug, Clone, Default)]
pub struct NamespaceSetup {
    pub namespace: String,
    /// Interfaces to bring up (after `lo`).
    pub interfaces: Vec<String>,
    /// Egress rate limits: interface, Mbit/s, MTU.
    pub rates: Vec<(String, u32, u32)>,
    /// Ingress random loss: interface, thousandths.
    pub losses: Vec<(String, u16)>,
}

impl NamespaceSetup {
    /// `ip -batch` text: lo and every interface up.
    pub fn link_batch(&self) -> String {
        std::iter::once("link set lo up\n".to_owned())
            .chain(self.interfaces.iter().map(|i| format!("link set {i} up\n")))
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

    /// Apply links, shaping and loss; then check with `ip -j` that every interface is there
    /// and up.
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
        verify_interfaces(ns, &self.interfaces)
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

/// Check that each of `interfaces` exists in the namespace and is administratively up.
pub fn verify_interfaces(namespace: &str, interfaces: &[String]) -> Result<(), NetError> {
    let links = links_in(namespace)?;
    let seen = || links.iter().map(|l| format!("{} {:?}", l.ifname, l.flags)).collect::<Vec<_>>().join(", ");
    for want in interfaces {
        let problem = match links.iter().find(|l| &l.ifname == want) {
            None => "is missing",
            Some(l) if !l.flags.iter().any(|f| f == "UP") => "is not up",
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
        let l = LinkRecord {
            a: "a".parse().unwrap(),
            b: "b".parse().unwrap(),
            a_interface: "v-b".into(),
            b_interface: "v-a".into(),
            mtu: 1500,
            rate_mbit: None,
            loss_permille: None,
        };
        let text = veth_batch(&[l], |l, a_end| format!("tw-x-{}", if a_end { &l.a } else { &l.b }));
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
            rates: vec![],
            losses: vec![("v-c".into(), 25)],
        };
        assert_eq!(s.link_batch(), "link set lo up\nlink set v-b up\nlink set v-c up\n");
        assert_eq!(s.tc_batch(), "");
        let nft = s.nft_script();
        assert!(nft.starts_with("table netdev tollway_lab {\n  chain loss_v_c {"), "{nft}");
        assert!(nft.contains("hook ingress device \"v-c\" priority 0; policy accept;"));
        assert!(nft.contains("numgen random mod 1000 < 25 drop"));
    }
}
