//! `tollway lab ...`: the clap subcommands and the function the `tollway` binary calls.
//!
//! Mount it in the binary's subcommand enum and pass the binary's own path as the daemon:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Cmd {
//!     /// Run a whole mesh on this machine, one network namespace per node.
//!     #[command(subcommand)]
//!     Lab(tollway_lab::LabCommand),
//!     // ...
//! }
//! // Cmd::Lab(c) => std::process::exit(tollway_lab::run(c, &std::env::current_exe()?)?),
//! ```

use crate::daemon::DaemonCommand;
use crate::hosts::{self, Cidr};
use crate::lab::{Lab, NodeReport};
use crate::names::LabName;
use crate::state::{HostLinkKind, DEFAULT_ROOT};
use crate::topology::Topology;
use crate::tunnels::LinkReport;
use crate::up::{UpOptions, DEFAULT_WAIT};
use anyhow::Context;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum LabCommand {
    /// Build the lab (namespaces, veths, one daemon per node) and wait until every tunnel is up.
    Up {
        /// Topology file (TOML with node and link tables; see examples/lab/).
        topology: PathBuf,
        /// Lab name, [a-z0-9]{1,10} (default: the topology's `name`, else the file name).
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
        /// Seconds to wait for every tunnel.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT.as_secs())]
        timeout: u64,
        /// Return once the daemons are started, without waiting for tunnels.
        #[arg(long)]
        no_wait: bool,
        /// On failure, leave the lab in place for inspection (take it down with `lab down`).
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Show every node's daemon, id, mesh IP and neighbors, and every link's tunnel.
    Status {
        /// Lab name (default: the only running lab).
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
        /// Print JSON, with each node's full status from its API.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node's or a host's namespace; its exit code is returned.
    ///
    /// TARGET is a node, `internet` or `<node>-lan`. Inside a node, `tollway` client commands
    /// talk to that node's daemon (TOLLWAY_SOCKET is set).
    #[command(override_usage = "tollway lab exec [--name LAB] [LAB] TARGET -- COMMAND...")]
    Exec {
        /// Lab name (default: the only running lab); may instead come first among the
        /// positional arguments.
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
        /// `[LAB] TARGET`: optionally the lab's name, then a node, `internet` or `<node>-lan`.
        #[arg(required = true, num_args = 1..=2, value_name = "TARGET")]
        target: Vec<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Take the veth between two nodes, or a node and a host, down or up (both ends).
    Link {
        /// Lab name (default: the only running lab).
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
        /// `down` or `up`.
        state: LinkState,
        /// One end: a node, `internet` or `<node>-lan`.
        a: String,
        /// The other end.
        b: String,
    },
    /// Restart a node's daemon with the same config and data dir.
    ///
    /// SIGTERM, then SIGKILL if it has not exited after 5 s; with --kill, SIGKILL at once.
    Restart {
        /// Lab name (default: the only running lab).
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
        /// Node name.
        node: String,
        /// Stop the daemon with SIGKILL instead of SIGTERM (a crash, for recovery tests).
        #[arg(long)]
        kill: bool,
    },
    /// Send unsolicited UDP datagrams (1,200 bytes) to each address at this rate, until
    /// killed: what `misbehave = { junk_mbit = M }` runs inside a node's namespace.
    #[command(hide = true)]
    Junk {
        /// Addresses to send to (each gets the whole rate).
        #[arg(long = "to", required = true)]
        to: Vec<std::net::IpAddr>,
        /// UDP port (nothing listens there).
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// Rate per address, Mbit/s.
        #[arg(long)]
        mbit: u32,
    },
    /// Stop the lab's daemons and anything else running in its namespaces, delete the
    /// namespaces and the lab's state. Safe to repeat.
    Down {
        /// Lab name (default: the only running lab).
        #[arg(long, value_parser = parse_lab_name)]
        name: Option<LabName>,
    },
}

/// `lab link down|up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkState {
    Down,
    Up,
}

fn parse_lab_name(s: &str) -> Result<LabName, String> {
    LabName::parse_as(s, "--name").map_err(|e| e.to_string())
}

/// The lab and target of `lab exec`: `[LAB] TARGET` and/or `--name LAB`.
fn exec_target(name: Option<LabName>, mut target: Vec<String>) -> anyhow::Result<(Option<LabName>, String)> {
    let t = target.pop().ok_or_else(|| anyhow::anyhow!("lab exec: name a node or host"))?;
    let Some(first) = target.pop() else { return Ok((name, t)) };
    let lab = LabName::parse_as(&first, "lab exec's LAB argument")?;
    match name {
        Some(n) if n != lab => {
            anyhow::bail!("lab exec: the lab is given twice, as {lab} and as --name {n}")
        }
        _ => Ok((Some(lab), t)),
    }
}

/// Run a `tollway lab` subcommand; `daemon_exe` is the `tollway` binary the daemons run as.
/// Returns the process exit code.
///
/// The lab reports progress (daemons started, processes stopped, ...) through `tracing`; if the
/// caller has not installed a subscriber, one writing to stderr is installed here (filter from
/// `RUST_LOG`, default `info`).
pub fn run(cmd: LabCommand, daemon_exe: &Path) -> anyhow::Result<i32> {
    if !tracing::dispatcher::has_been_set() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .without_time()
            .with_target(false)
            .try_init();
    }
    let root = Path::new(DEFAULT_ROOT);
    match cmd {
        LabCommand::Junk { to, port, mbit } => crate::misbehave::send_junk(&to, port, mbit),
        LabCommand::Up { topology, name, timeout, no_wait, keep_on_failure } => {
            let topo = Topology::load(&topology)?;
            let name = match name {
                Some(n) => n,
                None => topo.lab_name_for(&topology)?,
            };
            let opts = UpOptions {
                daemon: DaemonCommand::tollway(daemon_exe),
                wait: (!no_wait).then(|| Duration::from_secs(timeout)),
                keep_on_failure,
                root: root.to_owned(),
                topology_file: Some(topology.clone()),
            };
            let mut lab = Lab::up(&name, &topo, &opts).with_context(|| format!("lab up {}", topology.display()))?;
            print_up_summary(&mut lab, no_wait);
            Ok(0)
        }
        LabCommand::Status { name, json } => {
            let name = Lab::resolve_name(root, name.as_ref())?;
            let mut lab = Lab::load_in(root, &name)?;
            let reports = lab.statuses();
            let links = lab.judge_links(&reports);
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&lab, &reports, &links))?);
            } else {
                print!("{}", status_table(&lab, &reports, &links));
            }
            Ok(0)
        }
        LabCommand::Exec { name, target, command } => {
            let (name, target) = exec_target(name, target)?;
            let name = Lab::resolve_name(root, name.as_ref())?;
            let lab = Lab::load_in(root, &name)?;
            let status = lab
                .command_in(&target, &command)?
                .status()
                .with_context(|| format!("running {:?} in {target}", command))?;
            Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        LabCommand::Link { name, state, a, b } => {
            let name = Lab::resolve_name(root, name.as_ref())?;
            let mut lab = Lab::load_in(root, &name)?;
            let up = state == LinkState::Up;
            lab.set_link(&a, &b, up)?;
            println!("lab {name}: link {a}–{b} is {}", if up { "up" } else { "down" });
            Ok(0)
        }
        LabCommand::Restart { name, node, kill } => {
            let name = Lab::resolve_name(root, name.as_ref())?;
            let mut lab = Lab::load_in(root, &name)?;
            let r = lab.restart_daemon(&node, kill)?;
            match r.old {
                Some(old) => println!(
                    "lab {name}: node {node}'s daemon restarted: pid {} stopped{}, pid {} started",
                    old.pid,
                    if r.needed_sigkill { " with SIGKILL" } else { "" },
                    r.new.pid
                ),
                None => println!("lab {name}: node {node}'s daemon was not running; started pid {}", r.new.pid),
            }
            Ok(0)
        }
        LabCommand::Down { name } => {
            let name = match Lab::resolve_name(root, name.as_ref()) {
                Ok(n) => n,
                Err(crate::error::LoadError::NoLab { .. }) => {
                    println!("no lab is running");
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            };
            let report = Lab::down_by_name(root, &name)?;
            if report.state_removed {
                println!(
                    "lab {name} is down: {} daemons and {} other processes stopped, {} namespaces deleted, {} stale sockets removed ({} ms)",
                    report.daemons.len(),
                    report.others.len(),
                    report.namespaces_deleted.len(),
                    report.sockets_removed.len(),
                    report.elapsed.as_millis()
                );
            } else {
                println!("lab {name} is not running; nothing to do");
            }
            Ok(0)
        }
    }
}

fn print_up_summary(lab: &mut Lab, no_wait: bool) {
    let name = lab.name().clone();
    let t = lab.up_timings().unwrap_or_default();
    let hosts = match lab.hosts().len() {
        0 => String::new(),
        n => format!(", {n} hosts"),
    };
    let mut line = format!(
        "lab {name} is up: {} nodes, {} links{hosts} (network {} ms, daemons {} ms",
        lab.nodes().len(),
        lab.links().len(),
        t.network.as_millis(),
        t.daemons.as_millis()
    );
    match t.tunnels {
        Some(d) => line += &format!(", every tunnel up after {:.1} s)", d.as_secs_f64()),
        None => line += "; not waiting for tunnels)",
    }
    println!("{line}");
    for n in lab.nodes() {
        let line = format!(
            "  {:<8} {:<20} pid {:<8} {}",
            n.name.as_str(),
            n.namespace,
            n.pid.map_or("-".into(), |p| p.to_string()),
            n.mesh_ip.as_deref().unwrap_or("")
        );
        println!("{}", line.trim_end());
    }
    for h in lab.hosts() {
        let addrs: Vec<String> = host_addresses(lab, &h.name).iter().map(ToString::to_string).collect();
        println!("  {:<8} {:<20} host     {}", h.name, h.namespace, addrs.join(" "));
    }
    println!("next:");
    println!("  tollway lab status --name {name}");
    if let Some(l) = lab.host_links().iter().find(|l| l.kind == HostLinkKind::Uplink) {
        println!(
            "  tollway lab exec {name} {} -- ping -c 3 {}    # the internet host, from its uplink",
            l.node,
            hosts::INTERNET_IPV4
        );
    }
    if let Some(l) = lab.host_links().iter().find(|l| l.kind == HostLinkKind::Lan) {
        println!(
            "  tollway lab exec {name} {} -- ping -c 3 {}    # the LAN host's gateway, {}",
            l.host, l.node_ipv6.addr, l.node
        );
    }
    if let Some(l) = lab.links().first() {
        let target = lab.node(l.b.as_str()).ok().and_then(|b| b.mesh_ip.clone());
        match target {
            Some(ip) if !no_wait => {
                println!("  tollway lab exec --name {name} {} -- ping -c 3 {ip}    # {}'s mesh IP", l.a, l.b)
            }
            _ => println!(
                "  tollway lab exec --name {name} {} -- ping -c 3 ff02::1%{}    # link-local, over the veth to {}",
                l.a, l.a_interface, l.b
            ),
        }
    }
    println!("  tollway lab down --name {name}");
}

fn daemon_word(r: &NodeReport) -> String {
    match (&r.daemon, &r.status) {
        (None, _) => "not running".into(),
        (Some(_), Ok(_)) => "running".into(),
        (Some(_), Err(_)) => "no answer".into(),
    }
}

/// The human table of `lab status`.
pub fn status_table(lab: &Lab, reports: &[NodeReport], links: &[LinkReport]) -> String {
    let hosts = match lab.hosts().len() {
        0 => String::new(),
        n => format!(", {n} hosts"),
    };
    let mut out = format!("lab {} ({} nodes, {} links{hosts})\n", lab.name(), lab.nodes().len(), lab.links().len());
    let mut rows =
        vec![["NODE", "NAMESPACE", "PID", "DAEMON", "NODE ID", "MESH IP", "TUNNELS"].map(String::from).to_vec()];
    for r in reports {
        let rec = lab.node(r.node.as_str()).expect("reports are of lab nodes");
        let (id, ip, tunnels) = match &r.status {
            Ok(s) => {
                let up = s.neighbors.iter().filter(|n| n.tunnel_up).count();
                (
                    s.node.id.get(..12).unwrap_or(&s.node.id).to_owned(),
                    s.node.mesh_ip.clone(),
                    format!("{up}/{} up", s.neighbors.len()),
                )
            }
            Err(_) => (
                rec.node_id.as_deref().and_then(|i| i.get(..12)).unwrap_or("-").to_owned(),
                rec.mesh_ip.clone().unwrap_or_else(|| "-".into()),
                "-".into(),
            ),
        };
        let pid = r.daemon.map_or("-".into(), |p| p.pid.to_string());
        rows.push(vec![r.node.to_string(), rec.namespace.clone(), pid, daemon_word(r), id, ip, tunnels]);
    }
    out += &table(&rows);
    if !links.is_empty() {
        out += "\n";
        let mut rows = vec![["LINK", "VETH", "RATE", "LOSS", "A SEES B", "B SEES A"].map(String::from).to_vec()];
        for (r, l) in links.iter().zip(lab.links()) {
            rows.push(vec![
                format!("{}–{}", r.a, r.b),
                if l.down { "down" } else { "up" }.into(),
                l.rate_mbit.map_or("-".into(), |m| format!("{m} Mbit/s")),
                l.loss_permille.map_or("-".into(), |p| format!("{p}‰")),
                r.a_sees_b.to_string(),
                r.b_sees_a.to_string(),
            ]);
        }
        out += &table(&rows);
    }
    if !lab.hosts().is_empty() {
        out += "\n";
        let mut rows =
            vec![["HOST", "NAMESPACE", "NODE", "VETH", "HOST ADDRESSES", "NODE ADDRESSES"].map(String::from).to_vec()];
        for h in lab.hosts() {
            let lo: Vec<String> = h.loopback.iter().map(|a| a.addr.to_string()).collect();
            let links: Vec<_> = lab.host_links().iter().filter(|l| l.host == h.name).collect();
            if links.is_empty() {
                rows.push(vec![h.name.clone(), h.namespace.clone(), "-".into(), "-".into(), lo.join(" "), "-".into()]);
            }
            for (i, l) in links.iter().enumerate() {
                let mut host_side = if i == 0 { lo.clone() } else { Vec::new() };
                host_side.extend([format!("{}:", l.host_interface), l.host_ipv4.to_string(), l.host_ipv6.to_string()]);
                let node_side = [format!("{}:", l.node_interface), l.node_ipv4.to_string(), l.node_ipv6.to_string()];
                rows.push(vec![
                    if i == 0 { h.name.clone() } else { String::new() },
                    if i == 0 { h.namespace.clone() } else { String::new() },
                    l.node.to_string(),
                    if l.down { "down" } else { "up" }.into(),
                    host_side.join(" "),
                    node_side.join(" "),
                ]);
            }
        }
        out += &table(&rows);
    }
    for r in reports {
        if let (Some(_), Err(e)) = (&r.daemon, &r.status) {
            out += &format!("{e}\n");
        }
    }
    out
}

/// Every address a host has: its loopback's, then each of its veths'.
fn host_addresses(lab: &Lab, host: &str) -> Vec<Cidr> {
    let lo = lab.hosts().iter().filter(|h| h.name == host).flat_map(|h| h.loopback.iter().copied());
    let veths = lab.host_links().iter().filter(|l| l.host == host).flat_map(|l| [l.host_ipv4, l.host_ipv6]);
    lo.chain(veths).collect()
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> =
            r.iter().zip(&widths).map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count()))).collect();
        out += cells.join("  ").trim_end();
        out += "\n";
    }
    out
}

/// The JSON of `lab status --json`.
pub fn status_json(lab: &Lab, reports: &[NodeReport], links: &[LinkReport]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let rec = lab.node(r.node.as_str()).expect("reports are of lab nodes");
            serde_json::json!({
                "name": r.node,
                "namespace": rec.namespace,
                "pid": r.daemon.map(|p| p.pid),
                "daemon": daemon_word(r),
                "node_id": rec.node_id,
                "api_socket": rec.api_socket,
                "log": rec.log_path,
                "status": r.status.as_ref().ok(),
                "error": r.status.as_ref().err().map(|e| e.to_string()),
            })
        })
        .collect();
    let links: Vec<serde_json::Value> = links
        .iter()
        .zip(lab.links())
        .map(|(r, l)| {
            serde_json::json!({
                "a": l.a, "b": l.b,
                "a_interface": l.a_interface, "b_interface": l.b_interface,
                "mtu": l.mtu, "rate_mbit": l.rate_mbit, "loss_permille": l.loss_permille,
                "veth_down": l.down,
                "up": r.is_up(), "a_sees_b": r.a_sees_b, "b_sees_a": r.b_sees_a,
            })
        })
        .collect();
    serde_json::json!({
        "lab": lab.name(), "dir": lab.dir(), "nodes": nodes, "links": links,
        "hosts": lab.hosts(), "host_links": lab.host_links(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Lab(LabCommand),
    }

    fn parse(args: &[&str]) -> Result<LabCommand, clap::Error> {
        let mut v = vec!["tollway", "lab"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.cmd {
            Top::Lab(l) => l,
        })
    }

    #[test]
    fn subcommands_parse() {
        assert_eq!(
            parse(&["up", "x.toml", "--name", "t1", "--timeout", "5"]).unwrap(),
            LabCommand::Up {
                topology: "x.toml".into(),
                name: Some("t1".parse().unwrap()),
                timeout: 5,
                no_wait: false,
                keep_on_failure: false
            }
        );
        assert!(matches!(parse(&["up", "x.toml"]).unwrap(), LabCommand::Up { timeout: 30, name: None, .. }));
        assert_eq!(parse(&["status", "--json"]).unwrap(), LabCommand::Status { name: None, json: true });
        assert_eq!(
            parse(&["exec", "--name", "t1", "a", "--", "ping", "-c", "1", "fe80::1%v-b"]).unwrap(),
            LabCommand::Exec {
                name: Some("t1".parse().unwrap()),
                target: vec!["a".into()],
                command: ["ping", "-c", "1", "fe80::1%v-b"].map(OsString::from).to_vec()
            }
        );
        assert_eq!(parse(&["down"]).unwrap(), LabCommand::Down { name: None });
        assert_eq!(
            parse(&["link", "down", "a", "internet", "--name", "t1"]).unwrap(),
            LabCommand::Link {
                name: Some("t1".parse().unwrap()),
                state: LinkState::Down,
                a: "a".into(),
                b: "internet".into()
            }
        );
        assert!(matches!(parse(&["link", "up", "b", "c"]).unwrap(), LabCommand::Link { state: LinkState::Up, .. }));
        assert_eq!(
            parse(&["restart", "b", "--kill"]).unwrap(),
            LabCommand::Restart { name: None, node: "b".into(), kill: true }
        );
        assert!(matches!(parse(&["restart", "b"]).unwrap(), LabCommand::Restart { kill: false, .. }));
    }

    #[test]
    fn exec_takes_the_lab_as_an_argument_or_by_name() {
        let exec = |args: &[&str]| match parse(args).unwrap() {
            LabCommand::Exec { name, target, command } => {
                assert_eq!(command, vec![OsString::from("true")]);
                exec_target(name, target).map(|(lab, t)| (lab.map(|l| l.to_string()), t))
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            exec(&["exec", "chain3", "internet", "--", "true"]).unwrap(),
            (Some("chain3".into()), "internet".into())
        );
        assert_eq!(
            exec(&["exec", "--name", "chain3", "c-lan", "--", "true"]).unwrap(),
            (Some("chain3".into()), "c-lan".into())
        );
        assert_eq!(exec(&["exec", "c-lan", "--", "true"]).unwrap(), (None, "c-lan".into()));
        assert_eq!(exec(&["exec", "--name", "x", "x", "a", "--", "true"]).unwrap(), (Some("x".into()), "a".into()));
        let e = exec(&["exec", "--name", "x", "y", "a", "--", "true"]).unwrap_err().to_string();
        assert!(e.contains("the lab is given twice, as y and as --name x"), "{e}");
        let e = exec(&["exec", "Bad", "a", "--", "true"]).unwrap_err().to_string();
        assert!(e.contains("lab exec's LAB argument \"Bad\" is not valid"), "{e}");
        assert!(parse(&["exec", "l", "a", "b", "--", "true"]).is_err(), "at most [LAB] TARGET");
    }

    #[test]
    fn bad_input_is_refused() {
        let e = parse(&["down", "--name", "Bad-Name"]).unwrap_err().to_string();
        assert!(e.contains("--name \"Bad-Name\" is not valid: a lab name"), "{e}");
        assert!(parse(&["exec", "a"]).is_err(), "a command is required");
        assert!(parse(&["up"]).is_err(), "a topology is required");
        assert!(parse(&["link", "sideways", "a", "b"]).is_err(), "down or up");
        assert!(parse(&["link", "down", "a"]).is_err(), "two ends");
        assert!(parse(&["restart"]).is_err(), "a node is required");
    }

    #[test]
    fn tables_align() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
