//! `lab up`: state first, then files, namespaces, veths, shaping, daemons, and the wait for
//! tunnels. Any failure tears down what was built (unless asked to keep it).

use crate::config::{self, GeneratedFields};
use crate::daemon::DaemonCommand;
use crate::error::{LoadError, UpError};
use crate::lab::Lab;
use crate::names::{namespace_name, LabName};
use crate::netns::{self, NamespaceSetup};
use crate::state::{self, LabState, LinkRecord, NodeRecord, StateError, STATE_VERSION};
use crate::topology::Topology;
use serde::Serialize;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default time `lab up` waits for every tunnel.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

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
    /// Namespaces, sysctls, veths, links up, shaping, loss, and the `ip -j` check.
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
        let planned: Vec<String> = topology.nodes.iter().map(|n| namespace_name(name, &n.name)).collect();
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
        self.write_node_files(topology)?;
        let namespaces: Vec<String> = self.state.nodes.iter().map(|n| n.namespace.clone()).collect();
        netns::create_namespaces(&namespaces)?;
        let ns_of = |l: &LinkRecord, a_end: bool| {
            let end = if a_end { &l.a } else { &l.b };
            namespace_name(&self.state.name, end)
        };
        netns::create_veths(&netns::veth_batch(&self.state.links, ns_of))?;
        // Namespaces are independent from here on: configure them in parallel.
        let setups = namespace_setups(&self.state);
        std::thread::scope(|s| {
            let handles: Vec<_> = setups.iter().map(|setup| s.spawn(move || setup.apply())).collect();
            handles.into_iter().try_for_each(|h| h.join().expect("namespace set-up does not panic"))
        })?;
        let network = t0.elapsed();
        tracing::info!(lab = %self.state.name, ms = network.as_millis() as u64, "namespaces and veths ready");

        let t1 = Instant::now();
        let names: Vec<String> = self.state.nodes.iter().map(|n| n.name.to_string()).collect();
        self.start_daemons(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        let daemons = t1.elapsed();
        self.timings = Some(UpTimings { network, daemons, tunnels: None });

        if let Some(timeout) = opts.wait {
            let t2 = Instant::now();
            self.wait_tunnels(timeout)?;
            let tunnels = t2.elapsed();
            tracing::info!(lab = %self.state.name, ms = tunnels.as_millis() as u64, "every tunnel is up");
            self.timings = Some(UpTimings { network, daemons, tunnels: Some(tunnels) });
        }
        Ok(())
    }

    /// Node directories, data dirs (0700) and generated daemon configs.
    fn write_node_files(&self, topology: &Topology) -> Result<(), UpError> {
        for n in &self.state.nodes {
            for (d, mode) in [(&n.dir, 0o755), (&n.data_dir, 0o700)] {
                fs::DirBuilder::new().mode(mode).create(d).map_err(|source| UpError::Io { path: d.clone(), source })?;
            }
            let spec = topology.node(n.name.as_str()).expect("state is planned from the topology");
            let generated =
                GeneratedFields { data_dir: &n.data_dir, api_socket: &n.api_socket, interfaces: &n.interfaces };
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

/// The state `up` starts from: every node's paths, namespace and interfaces, every link.
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
        })
        .collect();
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
    }
}

/// What each namespace needs once the veths exist.
pub(crate) fn namespace_setups(state: &LabState) -> Vec<NamespaceSetup> {
    state
        .nodes
        .iter()
        .map(|n| {
            let mut s = NamespaceSetup {
                namespace: n.namespace.clone(),
                interfaces: n.interfaces.clone(),
                ..Default::default()
            };
            for l in &state.links {
                let iface = if l.a == n.name {
                    &l.a_interface
                } else if l.b == n.name {
                    &l.b_interface
                } else {
                    continue;
                };
                if let Some(r) = l.rate_mbit {
                    s.rates.push((iface.clone(), r, l.mtu));
                }
                if let Some(p) = l.loss_permille {
                    s.losses.push((iface.clone(), p));
                }
            }
            s
        })
        .collect()
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
    }
}
