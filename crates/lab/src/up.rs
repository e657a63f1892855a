//! `lab up`: state first, then files, namespaces (nodes and hosts), veths, addresses, routes,
//! shaping, daemons, and the wait for tunnels. Any failure tears down what was built (unless
//! asked to keep it).

use crate::config::{self, GeneratedFields, LanFields};
use crate::daemon::DaemonCommand;
use crate::error::{LoadError, UpError};
use crate::hosts::{self, Cidr};
use crate::lab::Lab;
use crate::names::{host_namespace_name, namespace_name, LabName};
use crate::netns::{self, NamespaceSetup, VethPair};
use crate::state::{
    self, HostLinkKind, HostLinkRecord, HostRecord, LabState, LinkRecord, NodeRecord, StateError, STATE_VERSION,
};
use crate::topology::Topology;
use serde::Serialize;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default time `lab up` waits for every tunnel.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The port of the internet host's speed-test server.
pub const SPEEDTEST_PORT: u16 = 7479;

/// How to bring a lab up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// How each node's daemon is started.
    pub daemon: DaemonCommand,
    /// Wait this long for every tunnel; `None` returns as soon as the daemons are started.
    pub wait: Option<Duration>,
    /// On failure, leave everything in place for inspection instead of tearing it down.
    pub keep_on_failure: bool,
    /// Where lab state lives (default `/run/tollway-lab`).
    pub root: PathBuf,
    /// The topology file, recorded in state for reference.
    pub topology_file: Option<PathBuf>,
}

impl UpOptions {
    /// Defaults: wait [`DEFAULT_WAIT`] for tunnels, tear down on failure, state in
    /// `/run/tollway-lab`.
    pub fn new(daemon: DaemonCommand) -> UpOptions {
        UpOptions {
            daemon,
            wait: Some(DEFAULT_WAIT),
            keep_on_failure: false,
            root: PathBuf::from(state::DEFAULT_ROOT),
            topology_file: None,
        }
    }
}

/// How long the parts of `lab up` took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UpTimings {
    /// Namespaces, sysctls, veths, addresses, links up, routes, shaping, loss, and the `ip -j`
    /// checks.
    pub network: Duration,
    /// Spawning every daemon.
    pub daemons: Duration,
    /// Waiting for every tunnel, if waited for.
    pub tunnels: Option<Duration>,
}

impl Lab {
    /// Build the lab `name` from `topology`: one namespace per node, veths, shaping, a daemon
    /// per node, then (if `opts.wait` is set) wait for every tunnel.
    ///
    /// If a lab of that name exists and any of its daemons runs, fails with
    /// [`UpError::AlreadyRunning`]; if all its daemons are dead it is taken down first.
    pub fn up(name: &LabName, topology: &Topology, opts: &UpOptions) -> Result<Lab, UpError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| UpError::Io { path, source }
        };
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&opts.root).map_err(io(&opts.root))?;
        let dir = opts.root.join(name.as_str());
        clear_stale(&opts.root, name)?;
        let planned = plan(name, topology, &opts.root.join(name.as_str()), opts).namespaces();
        let existing: Vec<String> = netns::list_namespaces()?.into_iter().filter(|n| planned.contains(n)).collect();
        if !existing.is_empty() {
            return Err(UpError::NamespaceExists { name: name.clone(), names: existing });
        }
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(UpError::AlreadyRunning {
                    name: name.clone(),
                    alive: "another `lab up` is starting it".into(),
                })
            }
            Err(e) => return Err(io(&dir)(e)),
        }
        for n in topology.nodes.iter().filter_map(|n| n.misbehave.map(|m| (n, m))) {
            if n.1.junk_mbit.is_some() && opts.wait.is_none() {
                tracing::warn!(lab = %name, node = %n.0.name, "misbehave: `junk_mbit` starts once the tunnels are up: not without waiting for them");
            }
        }
        let mut state = plan(name, topology, &dir, opts);
        if let Err(e) = state.write(&dir) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        let mut lab = Lab { root: opts.root.clone(), dir, state, timings: None };
        match lab.build(topology, opts) {
            Ok(()) => Ok(lab),
            Err(e) if opts.keep_on_failure => {
                tracing::warn!(lab = %name, "lab up failed; leaving it in place as asked (take it down with `tollway lab down --name {name}`)");
                Err(e)
            }
            Err(e) => {
                tracing::info!(lab = %name, "lab up failed; tearing down what was built");
                match lab.down() {
                    Ok(_) => Err(e),
                    Err(d) => Err(UpError::TeardownFailed { cause: Box::new(e), problems: d.problems }),
                }
            }
        }
    }

    fn build(&mut self, topology: &Topology, opts: &UpOptions) -> Result<(), UpError> {
        let t0 = Instant::now();
        let speedtest = self.speedtest_key(opts);
        self.write_node_files(topology, speedtest.as_ref().map(|(_, key)| key.as_str()))?;
        let namespaces: Vec<(String, netns::Sysctls)> = (self.state.nodes.iter())
            .map(|n| (n.namespace.clone(), netns::NAMESPACE_SYSCTLS))
            .chain(self.state.hosts.iter().map(|h| (h.namespace.clone(), netns::HOST_SYSCTLS)))
            .collect();
        netns::create_namespaces(&namespaces)?;
        netns::create_veths(&netns::veth_batch(&veth_pairs(&self.state)))?;
        // Namespaces are independent from here on: configure them in parallel.
        let setups = namespace_setups(&self.state);
        std::thread::scope(|s| {
            let handles: Vec<_> = setups.iter().map(|setup| s.spawn(move || setup.apply())).collect();
            handles.into_iter().try_for_each(|h| h.join().expect("namespace set-up does not panic"))
        })?;
        for n in &self.state.nodes {
            if let Some(m) = topology.node(n.name.as_str()).and_then(|s| s.misbehave) {
                crate::misbehave::prepare(n, &m)?;
            }
        }
        let network = t0.elapsed();
        tracing::info!(lab = %self.state.name, ms = network.as_millis() as u64, "namespaces and veths ready");
        if let Some((key_file, key)) = &speedtest {
            self.start_speedtest_server(opts, key_file, key)?;
        }

        let t1 = Instant::now();
        let names: Vec<String> = self.state.nodes.iter().map(|n| n.name.to_string()).collect();
        self.start_daemons(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        for n in &self.state.nodes {
            if let Some(m) = topology.node(n.name.as_str()).and_then(|s| s.misbehave) {
                crate::misbehave::start(n, &m, Path::new("tc"))?;
                crate::misbehave::prioritize_tests(n, &m)?;
            }
        }
        let daemons = t1.elapsed();
        self.timings = Some(UpTimings { network, daemons, tunnels: None });

        if let Some(timeout) = opts.wait {
            let t2 = Instant::now();
            self.wait_tunnels(timeout)?;
            for n in &self.state.nodes {
                if topology.node(n.name.as_str()).and_then(|s| s.misbehave).is_some_and(|m| m.metric_lie) {
                    crate::misbehave::forward_lie(n, timeout)?;
                }
            }
            self.statuses(); // records every node's mesh address
            for n in &self.state.nodes {
                let Some(m) = topology.node(n.name.as_str()).and_then(|s| s.misbehave) else { continue };
                let targets: Vec<String> = (self.state.links.iter())
                    .filter_map(|l| match (&l.a, &l.b) {
                        (a, b) if *a == n.name => Some(b),
                        (a, b) if *b == n.name => Some(a),
                        _ => None,
                    })
                    .filter_map(|peer| self.state.node(peer.as_str())?.mesh_ip.clone())
                    .collect();
                crate::misbehave::start_junk(n, &m, &opts.daemon.program, &targets)?;
            }
            let tunnels = t2.elapsed();
            tracing::info!(lab = %self.state.name, ms = tunnels.as_millis() as u64, "every tunnel is up");
            self.timings = Some(UpTimings { network, daemons, tunnels: Some(tunnels) });
        }
        Ok(())
    }

    /// With an internet host and the tollway daemon: the key file of the speed-test server the
    /// host runs (created in the lab directory by `tollway speedtest-server --print-key`), and
    /// its public key, which every node pins.
    fn speedtest_key(&self, opts: &UpOptions) -> Option<(std::path::PathBuf, String)> {
        let is_tollway = opts.daemon.args.first().is_some_and(|a| a == "daemon");
        if !is_tollway || self.state.host(crate::hosts::INTERNET).is_none() {
            return None;
        }
        let key_file = self.dir.join("internet-speedtest.key");
        let out = std::process::Command::new(&opts.daemon.program)
            .args(["speedtest-server", "--print-key", "--key"])
            .arg(&key_file)
            .output();
        // A stand-in daemon (tests of the lab itself) has no speed-test server: go on without.
        let why = match out {
            Ok(o) => match String::from_utf8_lossy(&o.stdout).trim() {
                key if o.status.success() && key.len() == 64 => return Some((key_file, key.to_owned())),
                _ => format!("exit {}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(lab = %self.state.name, program = %opts.daemon.program.display(), %why,
            "no speed-test server on the internet host: `speedtest-server --print-key` failed");
        None
    }

    /// Start `tollway speedtest-server` in the internet host (port [`SPEEDTEST_PORT`]); `lab
    /// down` stops it with the rest of what runs in the lab's namespaces.
    fn start_speedtest_server(&self, opts: &UpOptions, key_file: &Path, key: &str) -> Result<(), UpError> {
        let host = self.state.host(crate::hosts::INTERNET).expect("checked by speedtest_key");
        let listen = format!("[::]:{SPEEDTEST_PORT}");
        let cmd = DaemonCommand::custom(
            &opts.daemon.program,
            ["speedtest-server", "--key", DaemonCommand::CONFIG, "--listen", listen.as_str()],
        );
        let log = self.dir.join("internet-speedtest.log");
        let proc = crate::daemon::spawn(&cmd, &host.namespace, key_file, &log)
            .map_err(|e| UpError::Speedtest(e.to_string()))?;
        tracing::info!(lab = %self.state.name, pid = proc.pid, key, "speed-test server on the internet host");
        Ok(())
    }

    /// Node directories, data dirs (0700) and generated daemon configs.
    fn write_node_files(&self, topology: &Topology, speedtest_key: Option<&str>) -> Result<(), UpError> {
        let speedtest_address = format!("[{}]:{SPEEDTEST_PORT}", crate::hosts::INTERNET_IPV6);
        for n in &self.state.nodes {
            for (d, mode) in [(&n.dir, 0o755), (&n.data_dir, 0o700)] {
                fs::DirBuilder::new().mode(mode).create(d).map_err(|source| UpError::Io { path: d.clone(), source })?;
            }
            let spec = topology.node(n.name.as_str()).expect("state is planned from the topology");
            let host_link = |kind| self.state.host_links.iter().find(|l| l.node == n.name && l.kind == kind);
            // A liar gets a dead uplink (see `misbehave`).
            let lies = spec.misbehave.is_some_and(|m| m.metric_lie);
            let uplink = host_link(HostLinkKind::Uplink)
                .map(|l| l.node_interface.as_str())
                .or(lies.then_some(crate::misbehave::LIE_INTERFACE));
            let lan = host_link(HostLinkKind::Lan).map(|l| LanFields {
                interface: &l.node_interface,
                ipv6_prefix: l.node_ipv6.network(),
                ipv4_prefix: l.node_ipv4.network(),
            });
            let generated = GeneratedFields {
                data_dir: &n.data_dir,
                api_socket: &n.api_socket,
                interfaces: &n.interfaces,
                uplink,
                lan,
                speedtest_server: speedtest_key.map(|k| (speedtest_address.as_str(), k)),
            };
            let c = config::daemon_config(generated, &topology.defaults_config, &spec.config);
            let text = config::render(&c, self.state.name.as_str(), n.name.as_str());
            fs::write(&n.config_path, text).map_err(|source| UpError::Io { path: n.config_path.clone(), source })?;
        }
        Ok(())
    }
}

/// If a lab directory `name` exists: fail if any of its daemons runs, else take it down.
fn clear_stale(root: &Path, name: &LabName) -> Result<(), UpError> {
    let dir = root.join(name.as_str());
    if !dir.exists() {
        return Ok(());
    }
    match Lab::load_in(root, name) {
        Ok(lab) => {
            let alive = lab.running_daemons();
            if !alive.is_empty() {
                let alive = alive.iter().map(|(n, p)| format!("{n} pid {}", p.pid)).collect::<Vec<_>>().join(", ");
                return Err(UpError::AlreadyRunning { name: name.clone(), alive });
            }
            tracing::info!(lab = %name, dir = %dir.display(), "found a stale lab whose daemons are all dead; taking it down first");
            lab.down().map(drop).map_err(|e| UpError::StaleCleanup { name: name.clone(), source: Box::new(e) })
        }
        Err(LoadError::NotFound { .. }) => {
            // state.json is written before anything else, so without it nothing was built.
            tracing::info!(lab = %name, dir = %dir.display(), "removing a lab directory without state.json (a `lab up` that stopped before writing it)");
            fs::remove_dir_all(&dir).map_err(|source| UpError::Io { path: dir, source })
        }
        Err(LoadError::State(e)) => Err(e.into()),
        Err(e) => Err(StateError::Io { path: dir, source: std::io::Error::other(e.to_string()) }.into()),
    }
}

/// The state `up` starts from: every node's paths, namespace and interfaces, every link, and
/// the hosts with their links and addresses.
fn plan(name: &LabName, topology: &Topology, dir: &Path, opts: &UpOptions) -> LabState {
    let nodes = topology
        .nodes
        .iter()
        .map(|spec| {
            let d = dir.join(spec.name.as_str());
            NodeRecord {
                name: spec.name.clone(),
                namespace: namespace_name(name, &spec.name),
                config_path: d.join("tollway.toml"),
                data_dir: d.join("data"),
                api_socket: d.join("api.sock"),
                log_path: d.join("daemon.log"),
                dir: d,
                interfaces: topology.interfaces_of(&spec.name),
                pid: None,
                pid_start_time: None,
                node_id: None,
                mesh_ip: None,
            }
        })
        .collect();
    let links = topology
        .links
        .iter()
        .map(|l| LinkRecord {
            a: l.a.clone(),
            b: l.b.clone(),
            a_interface: l.b.veth_toward(),
            b_interface: l.a.veth_toward(),
            mtu: l.mtu,
            rate_mbit: l.rate_mbit,
            loss_permille: l.loss_permille,
            down: false,
        })
        .collect();
    let (hosts, host_links) = plan_hosts(name, topology);
    let now = state::unix_now();
    LabState {
        version: STATE_VERSION,
        name: name.clone(),
        topology_file: opts.topology_file.as_deref().map(crate::topology::describe_source),
        created_unix: now,
        updated_unix: now,
        daemon: opts.daemon.clone(),
        nodes,
        links,
        hosts,
        host_links,
    }
}

/// The internet host (if any node has an uplink), each LAN host, and their links, addressed
/// as [`crate::hosts`] describes. Positions past the addressable range were refused when the
/// topology was loaded.
fn plan_hosts(name: &LabName, topology: &Topology) -> (Vec<HostRecord>, Vec<HostLinkRecord>) {
    let mtu = topology.default_mtu;
    let mut hosts = Vec::new();
    let mut links = Vec::new();
    if topology.has_internet() {
        hosts.push(HostRecord {
            name: hosts::INTERNET.to_owned(),
            namespace: host_namespace_name(name, hosts::INTERNET),
            loopback: vec![Cidr::v6(hosts::INTERNET_IPV6, 128), Cidr::v4(hosts::INTERNET_IPV4, 32)],
        });
    }
    for (i, n) in topology.nodes.iter().enumerate() {
        let position = i + 1;
        if n.uplink {
            let a = hosts::uplink_addresses(position).expect("the topology checks uplink positions");
            links.push(HostLinkRecord {
                kind: HostLinkKind::Uplink,
                node: n.name.clone(),
                host: hosts::INTERNET.to_owned(),
                node_interface: hosts::UPLINK_INTERFACE.to_owned(),
                host_interface: n.name.veth_toward(),
                mtu,
                node_ipv4: a.node_ipv4,
                node_ipv6: a.node_ipv6,
                host_ipv4: a.host_ipv4,
                host_ipv6: a.host_ipv6,
                down: false,
            });
        }
    }
    for (i, n) in topology.nodes.iter().enumerate() {
        let position = i + 1;
        if n.lan {
            let a = hosts::lan_addresses(position).expect("the topology checks LAN positions");
            let host = hosts::lan_host_name(n.name.as_str());
            hosts.push(HostRecord {
                namespace: host_namespace_name(name, &host),
                name: host.clone(),
                loopback: Vec::new(),
            });
            links.push(HostLinkRecord {
                kind: HostLinkKind::Lan,
                node: n.name.clone(),
                host,
                node_interface: hosts::LAN_INTERFACE.to_owned(),
                host_interface: hosts::LAN_HOST_INTERFACE.to_owned(),
                mtu,
                node_ipv4: a.node_ipv4,
                node_ipv6: a.node_ipv6,
                host_ipv4: a.host_ipv4,
                host_ipv6: a.host_ipv6,
                down: false,
            });
        }
    }
    (hosts, links)
}

/// Every veth of the lab: node–node links, then node–host links (the node's end first).
fn veth_pairs(state: &LabState) -> Vec<VethPair> {
    let ns = |node| namespace_name(&state.name, node);
    let links = state.links.iter().map(|l| VethPair {
        a_namespace: ns(&l.a),
        a_interface: l.a_interface.clone(),
        b_namespace: ns(&l.b),
        b_interface: l.b_interface.clone(),
        mtu: l.mtu,
    });
    let host_links = state.host_links.iter().map(|l| VethPair {
        a_namespace: ns(&l.node),
        a_interface: l.node_interface.clone(),
        b_namespace: host_namespace_name(&state.name, &l.host),
        b_interface: l.host_interface.clone(),
        mtu: l.mtu,
    });
    links.chain(host_links).collect()
}

/// What each namespace (nodes in order, then hosts) needs once the veths exist. Links marked
/// down in the state are left down.
pub(crate) fn namespace_setups(state: &LabState) -> Vec<NamespaceSetup> {
    let nodes = state.nodes.iter().map(|n| {
        let mut s =
            NamespaceSetup { namespace: n.namespace.clone(), interfaces: n.interfaces.clone(), ..Default::default() };
        for l in &state.links {
            let iface = if l.a == n.name {
                &l.a_interface
            } else if l.b == n.name {
                &l.b_interface
            } else {
                continue;
            };
            if l.down {
                s.down.push(iface.clone());
            }
            if let Some(r) = l.rate_mbit {
                s.rates.push((iface.clone(), r, l.mtu));
            }
            if let Some(p) = l.loss_permille {
                s.losses.push((iface.clone(), p));
            }
        }
        for l in state.host_links.iter().filter(|l| l.node == n.name) {
            let dev = &l.node_interface;
            s.interfaces.push(dev.clone());
            if l.down {
                s.down.push(dev.clone());
            }
            s.addresses.push((dev.clone(), l.node_ipv4));
            s.addresses.push((dev.clone(), l.node_ipv6));
            if l.kind == HostLinkKind::Uplink {
                s.default_routes.push((dev.clone(), l.host_ipv4.addr));
                s.default_routes.push((dev.clone(), l.host_ipv6.addr));
            }
        }
        s
    });
    let hosts = state.hosts.iter().map(|h| {
        let mut s = NamespaceSetup { namespace: h.namespace.clone(), ..Default::default() };
        s.addresses.extend(h.loopback.iter().map(|a| ("lo".to_owned(), *a)));
        for l in state.host_links.iter().filter(|l| l.host == h.name) {
            let dev = &l.host_interface;
            s.interfaces.push(dev.clone());
            if l.down {
                s.down.push(dev.clone());
            }
            s.addresses.push((dev.clone(), l.host_ipv4));
            s.addresses.push((dev.clone(), l.host_ipv6));
            if l.kind == HostLinkKind::Lan {
                s.default_routes.push((dev.clone(), l.node_ipv4.addr));
                s.default_routes.push((dev.clone(), l.node_ipv6.addr));
            }
        }
        s
    });
    nodes.chain(hosts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_everything_from_the_lab_and_node_names() {
        let t = Topology::parse(
            "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[node]]\nname = \"c\"\n\
             [[link]]\na = \"a\"\nb = \"b\"\nrate_mbit = 10\n[[link]]\na = \"b\"\nb = \"c\"\nloss_permille = 5\n",
            "t",
        )
        .unwrap();
        let name: LabName = "x7".parse().unwrap();
        let opts = UpOptions::new(DaemonCommand::custom("/bin/sleep", ["infinity"]));
        let s = plan(&name, &t, Path::new("/run/tollway-lab/x7"), &opts);
        let b = s.node("b").unwrap();
        assert_eq!(b.namespace, "tw-x7-b");
        assert_eq!(b.interfaces, vec!["v-a", "v-c"]);
        assert_eq!(b.api_socket, Path::new("/run/tollway-lab/x7/b/api.sock"));
        assert_eq!(b.data_dir, Path::new("/run/tollway-lab/x7/b/data"));
        assert_eq!((s.links[0].a_interface.as_str(), s.links[0].b_interface.as_str()), ("v-b", "v-a"));
        let setups = namespace_setups(&s);
        assert_eq!(setups[0].rates, vec![("v-b".to_string(), 10, 1500)]);
        assert_eq!(setups[1].rates, vec![("v-a".to_string(), 10, 1500)]);
        assert_eq!(setups[1].losses, vec![("v-c".to_string(), 5)]);
        assert_eq!(setups[2].losses, vec![("v-b".to_string(), 5)]);
        assert!(setups[2].rates.is_empty());
        assert!(s.hosts.is_empty() && s.host_links.is_empty() && setups.len() == 3);
    }

    #[test]
    fn uplinks_and_lans_plan_hosts_veths_addresses_and_routes() {
        let t = Topology::parse(
            "[defaults]\nmtu = 1400\n[[node]]\nname = \"a\"\nuplink = true\n[[node]]\nname = \"b\"\nuplink = true\n\
             [[node]]\nname = \"c\"\nlan = true\n[[link]]\na = \"a\"\nb = \"b\"\n[[link]]\na = \"b\"\nb = \"c\"\n",
            "t",
        )
        .unwrap();
        let name: LabName = "x7".parse().unwrap();
        let s = plan(
            &name,
            &t,
            Path::new("/run/tollway-lab/x7"),
            &UpOptions::new(DaemonCommand::custom("/bin/true", [""; 0])),
        );
        let hosts: Vec<(&str, &str)> = s.hosts.iter().map(|h| (h.name.as_str(), h.namespace.as_str())).collect();
        assert_eq!(hosts, [("internet", "tw-x7-internet"), ("c-lan", "tw-x7-c-lan")]);
        assert_eq!(s.namespaces(), ["tw-x7-a", "tw-x7-b", "tw-x7-c", "tw-x7-internet", "tw-x7-c-lan"]);
        assert_eq!(s.node("a").unwrap().interfaces, ["v-b"], "the daemon discovers on mesh links only");

        let pairs = veth_pairs(&s);
        let shown: Vec<String> = pairs
            .iter()
            .map(|p| format!("{}:{} {}:{} {}", p.a_namespace, p.a_interface, p.b_namespace, p.b_interface, p.mtu))
            .collect();
        assert_eq!(
            shown,
            [
                "tw-x7-a:v-b tw-x7-b:v-a 1400",
                "tw-x7-b:v-c tw-x7-c:v-b 1400",
                "tw-x7-a:v-internet tw-x7-internet:v-a 1400",
                "tw-x7-b:v-internet tw-x7-internet:v-b 1400",
                "tw-x7-c:v-lan tw-x7-c-lan:lan0 1400",
            ]
        );

        let setups = namespace_setups(&s);
        let find = |ns: &str| setups.iter().find(|x| x.namespace == ns).unwrap();
        let b = find("tw-x7-b");
        assert_eq!(b.interfaces, ["v-a", "v-c", "v-internet"]);
        let addrs = |x: &NamespaceSetup| x.addresses.iter().map(|(d, a)| format!("{d} {a}")).collect::<Vec<_>>();
        assert_eq!(addrs(b), ["v-internet 198.51.100.10/30", "v-internet 2001:db8:ffff:2::2/64"]);
        assert_eq!(
            b.route_batch(),
            "route replace default via 198.51.100.9 dev v-internet onlink\n\
             route replace default via 2001:db8:ffff:2::1 dev v-internet onlink\n"
        );
        let internet = find("tw-x7-internet");
        assert_eq!(internet.interfaces, ["v-a", "v-b"]);
        assert_eq!(
            addrs(internet),
            [
                "lo 2001:db8::1/128",
                "lo 192.0.2.1/32",
                "v-a 198.51.100.5/30",
                "v-a 2001:db8:ffff:1::1/64",
                "v-b 198.51.100.9/30",
                "v-b 2001:db8:ffff:2::1/64"
            ]
        );
        assert!(internet.default_routes.is_empty(), "the internet routes only to its connected link subnets");
        let c = find("tw-x7-c");
        assert_eq!(addrs(c), ["v-lan 10.103.0.1/24", "v-lan fd00:1ab:3::1/64"]);
        assert!(c.default_routes.is_empty(), "a LAN gives its node no default route");
        let lan = find("tw-x7-c-lan");
        assert_eq!(lan.interfaces, ["lan0"]);
        assert_eq!(addrs(lan), ["lan0 10.103.0.2/24", "lan0 fd00:1ab:3::2/64"]);
        assert_eq!(
            lan.route_batch(),
            "route replace default via 10.103.0.1 dev lan0 onlink\nroute replace default via fd00:1ab:3::1 dev lan0 onlink\n"
        );

        // A link marked down stays down, and its routes are not added.
        let mut down = s.clone();
        down.host_links[0].down = true;
        down.links[1].down = true;
        let setups = namespace_setups(&down);
        let a = setups.iter().find(|x| x.namespace == "tw-x7-a").unwrap();
        assert_eq!(a.down, ["v-internet"]);
        assert_eq!(a.route_batch(), "");
        assert_eq!(setups.iter().find(|x| x.namespace == "tw-x7-c").unwrap().down, ["v-b"]);
    }
}
