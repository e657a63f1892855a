//! [`BabelRouter`]: the distribution's stock babeld, one instance per node, on the tunnel
//! interfaces only, driven over its control socket and supervised.
//!
//! - Start: write the configuration ([`config::render_config`]) into the runtime directory,
//!   stop a babeld a previous run of the daemon left behind (found by its pid file and command
//!   line), delete routes a killed babeld left in the mesh table, spawn `babeld -c <file>` in
//!   its own process group, wait for its control socket.
//! - [`Router::apply`]: add the plan's tunnels over the socket (every parameter spelled out),
//!   flush the ones that left it, flush and re-add one whose cost changed (babeld reads an
//!   interface's parameters only when it comes up); write the plan's exports into the import
//!   table as blackhole routes of protocol 251, which babeld announces; withdraw one in two
//!   steps (announced unreachable first, deleted later: see [`config`] for why).
//! - [`Router::tick`]: if babeld died, delete what it left in the kernel and start it again at
//!   once (a start that fails is retried after a growing delay), and add the plan's tunnels; every
//!   [`RECONCILE_EVERY`] ticks compare babeld's interfaces (`dump`) and the import table with
//!   the plan and fix the differences.
//! - [`Router::shutdown`]: SIGTERM (babeld withdraws its routes and retracts them from its
//!   neighbors), wait, SIGKILL if it hangs, then delete anything left in the mesh table, the
//!   exports, and its files (the state file, which carries its sequence number to the next
//!   start, and the log stay).
//!
//! Only the babeld this router started (by pid), or one its previous run started (pid file and
//! command line naming this router's config file), is ever signalled.

pub mod config;
pub mod control;
pub mod dump;

pub use config::{penalty_altname, probe_altname, BabelSettings, ProbeSettings, RouterId};

use crate::plan::LinkCost;
use crate::{RouteEntry, Router, RouterKind, RoutingError, RoutingPlan};
use control::{ControlClient, ControlError};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollway_core::{IfName, Penalty};
use tollway_kernel::{RouteTarget, Routes, TableRoute, PROTO_BABEL, PROTO_TOLLWAY};
use tracing::{info, warn};

/// How long babeld may take to open its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one control request may take (a `dump` of a large mesh included).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long babeld may take to exit after SIGTERM (it sleeps about 20 ms per interface).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a withdrawn export is announced as unreachable before it is deleted.
pub const WITHDRAW_HOLD: Duration = Duration::from_secs(1);
/// Ticks between two full reconciliations.
pub const RECONCILE_EVERY: u32 = 10;
/// The longest wait before another attempt to start a babeld that fails to start.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// The running babeld.
struct Running {
    child: Child,
    started: Instant,
    client: Option<ControlClient>,
    /// The tunnels babeld was given since it started, with their cost and quality penalty.
    interfaces: BTreeMap<IfName, (LinkCost, Penalty)>,
}

pub struct BabelRouter {
    settings: BabelSettings,
    kernel: Box<dyn Routes>,
    running: Option<Running>,
    /// The plan's tunnels and exports.
    neighbors: BTreeMap<IfName, (LinkCost, Penalty)>,
    exports: BTreeSet<IpNet>,
    /// Exports being withdrawn (announced as unreachable) since when.
    withdrawing: BTreeMap<IpNet, Instant>,
    ticks: u32,
    /// babeld starts since this router was made (the first included).
    starts: u32,
    /// Failed starts in a row (they delay the next attempt).
    failed_starts: u32,
    next_start: Instant,
    stopped: bool,
}

impl std::fmt::Debug for BabelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BabelRouter")
            .field("settings", &self.settings)
            .field("pid", &self.pid())
            .field("neighbors", &self.neighbors)
            .field("exports", &self.exports)
            .finish()
    }
}

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RoutingError {
    let path = path.to_path_buf();
    move |source| RoutingError::File { what, path, source }
}

/// Remove a file; a missing one is fine.
fn remove_file(what: &'static str, path: &Path) -> Result<(), RoutingError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(file_err(what, path)(e)),
        _ => Ok(()),
    }
}

/// Collect the errors of independent steps into one result.
fn combine(mut errors: Vec<RoutingError>) -> Result<(), RoutingError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(RoutingError::Several(errors)),
    }
}

impl BabelRouter {
    /// Start babeld for this node. Acts on the calling thread's network namespace (babeld is
    /// spawned into it).
    pub fn start(settings: BabelSettings, kernel: Box<dyn Routes>) -> Result<BabelRouter, RoutingError> {
        settings.validate()?;
        let dir = &settings.runtime_dir;
        fs::create_dir_all(dir).map_err(file_err("creating runtime directory", dir))?;
        let mut r = BabelRouter {
            settings,
            kernel,
            running: None,
            neighbors: BTreeMap::new(),
            exports: BTreeSet::new(),
            withdrawing: BTreeMap::new(),
            ticks: 0,
            starts: 0,
            failed_starts: 0,
            next_start: Instant::now(),
            stopped: false,
        };
        r.stop_leftover()?;
        r.spawn()?;
        Ok(r)
    }

    pub fn settings(&self) -> &BabelSettings {
        &self.settings
    }

    /// The pid of the running babeld.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// How many times babeld was started (1 until it first dies).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The parsed `dump` of the running babeld (interfaces, neighbours, announced prefixes,
    /// routes): babeld's own state for the operator view.
    pub fn dump(&mut self) -> Result<dump::Dump, RoutingError> {
        let lines = self.request("dump")?;
        Ok(dump::parse_dump(&lines))
    }

    /// Stop a babeld left running by a previous run of this router (the daemon was killed):
    /// the pid in our pid file, if that process runs `babeld -c <our config file>`.
    fn stop_leftover(&mut self) -> Result<(), RoutingError> {
        let pid_path = self.settings.pid_path();
        let Ok(text) = fs::read_to_string(&pid_path) else { return Ok(()) };
        let Ok(pid) = text.trim().parse::<u32>() else { return Ok(()) };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return Ok(()) };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        let conf = self.settings.config_path();
        let ours = args.len() == 3
            && args[0] == self.settings.program.as_os_str().as_encoded_bytes()
            && args[1] == b"-c"
            && args[2] == conf.as_os_str().as_encoded_bytes();
        if !ours {
            return Ok(());
        }
        warn!(pid, "stopping the babeld a previous run left behind");
        let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            signal(pid, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive() {
            return Err(RoutingError::Stop { pid, detail: "the babeld left by a previous run does not exit".into() });
        }
        Ok(())
    }

    /// Delete what a babeld that did not exit cleanly left: its routes in the mesh table
    /// (babeld "adds" over an existing route without replacing it, so a stale next hop would
    /// stay), its pid file (it refuses to start over one) and its socket (it cannot bind over
    /// one).
    fn clean_after_babeld(&mut self) -> Result<(), RoutingError> {
        let mut errors = Vec::new();
        match self.kernel.list(self.settings.export_table, Some(PROTO_BABEL)) {
            Ok(stale) => {
                for route in stale {
                    if let Err(e) = self.kernel.delete(&route) {
                        errors.push(e.into());
                    }
                }
            }
            Err(e) => errors.push(e.into()),
        }
        for (what, path) in [("removing", self.settings.pid_path()), ("removing", self.settings.socket_path())] {
            if let Err(e) = remove_file(what, &path) {
                errors.push(e);
            }
        }
        combine(errors)
    }

    fn spawn(&mut self) -> Result<(), RoutingError> {
        self.clean_after_babeld()?;
        let s = &self.settings;
        write_atomically(&s.config_path(), config::render_config(s).as_bytes())?;
        let log_path = s.log_path();
        let log =
            OpenOptions::new().create(true).append(true).open(&log_path).map_err(file_err("opening", &log_path))?;
        let log2 = log.try_clone().map_err(file_err("opening", &log_path))?;
        let mut child = Command::new(&s.program)
            .arg("-c")
            .arg(s.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C at the daemon's terminal is for the daemon, which
            // then stops babeld in order.
            .process_group(0)
            .spawn()
            .map_err(|source| RoutingError::Spawn { program: s.program.clone(), source })?;
        self.starts += 1;
        let started = Instant::now();
        let socket = s.socket_path();
        let client = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RoutingError::StartFailed {
                    status: status.to_string(),
                    log: log_path.clone(),
                    tail: log_tail(&log_path),
                });
            }
            match ControlClient::connect(&socket, CONTROL_TIMEOUT) {
                Ok(c) => break c,
                Err(ControlError::Connect(_)) if started.elapsed() < START_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(match e {
                        ControlError::Connect(_) => {
                            RoutingError::StartTimeout { socket, secs: START_TIMEOUT.as_secs() }
                        }
                        e => RoutingError::Control { socket, source: e },
                    });
                }
            }
        };
        let banner = client.banner().clone();
        info!(
            pid = child.id(),
            version = banner.version.as_deref().unwrap_or("?"),
            id = banner.my_id.as_deref().unwrap_or("?"),
            "babeld started"
        );
        if banner.my_id.as_deref() != Some(s.router_id.to_string().as_str()) {
            warn!(want = %s.router_id, got = ?banner.my_id, "babeld reports another router-id");
        }
        self.running = Some(Running { child, started, client: Some(client), interfaces: BTreeMap::new() });
        Ok(())
    }

    /// One request to the running babeld, reconnecting if needed. A broken connection is
    /// dropped so that the next request reconnects; `no`/`bad` leave it open.
    fn request(&mut self, line: &str) -> Result<Vec<String>, RoutingError> {
        let socket = self.settings.socket_path();
        let run = self.running.as_mut().ok_or(RoutingError::NotRunning)?;
        if run.client.is_none() {
            let c = ControlClient::connect(&socket, CONTROL_TIMEOUT)
                .map_err(|source| RoutingError::Control { socket: socket.clone(), source })?;
            run.client = Some(c);
        }
        let client = run.client.as_mut().expect("connected above");
        match client.request(line) {
            Ok(lines) => Ok(lines),
            Err(e) => {
                if !matches!(e, ControlError::Refused { .. } | ControlError::Bad(_) | ControlError::BadRequest(_)) {
                    run.client = None;
                }
                Err(RoutingError::Control { socket, source: e })
            }
        }
    }

    /// Flush an interface from babeld; one it does not know is fine.
    fn flush(&mut self, ifname: &IfName) -> Result<(), RoutingError> {
        match self.request(&format!("flush interface {ifname}")) {
            Err(RoutingError::Control { source: ControlError::Refused { .. }, .. }) | Ok(_) => {
                if let Some(run) = self.running.as_mut() {
                    run.interfaces.remove(ifname);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Make babeld's tunnels those of the plan, at the plan's costs.
    fn push_interfaces(&mut self) -> Result<(), RoutingError> {
        let Some(run) = self.running.as_ref() else { return Ok(()) };
        let gone: Vec<IfName> = run.interfaces.keys().filter(|i| !self.neighbors.contains_key(*i)).cloned().collect();
        // A new penalty is a new altname of the tunnel (set by the driver), which babeld's filters
        // only see once it looks the names up again: when the tunnel is re-added.
        let changed: Vec<(IfName, (LinkCost, Penalty), bool)> = self
            .neighbors
            .iter()
            .filter_map(|(ifname, (cost, penalty))| match run.interfaces.get(ifname) {
                None => Some((ifname.clone(), (*cost, penalty.clone()), false)),
                Some((old, old_penalty)) if config::rxcost(*old) != config::rxcost(*cost) || old_penalty != penalty => {
                    Some((ifname.clone(), (*cost, penalty.clone()), true))
                }
                Some(_) => None,
            })
            .collect();
        let mut errors = Vec::new();
        for ifname in gone {
            info!(%ifname, "babel: removing tunnel");
            if let Err(e) = self.flush(&ifname) {
                errors.push(e);
            }
        }
        for (ifname, (cost, penalty), known) in changed {
            if known {
                info!(%ifname, cost = config::rxcost(cost), %penalty, "babel: new link cost or penalty (flush and re-add)");
                if let Err(e) = self.flush(&ifname) {
                    errors.push(e);
                    continue;
                }
            } else {
                info!(%ifname, cost = config::rxcost(cost), "babel: adding tunnel");
            }
            match self.request(&config::interface_line(&ifname, cost, &self.settings)) {
                Ok(_) => {
                    if let Some(run) = self.running.as_mut() {
                        run.interfaces.insert(ifname, (cost, penalty));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        combine(errors)
    }

    /// Make the import table hold exactly the plan's exports (blackhole routes of protocol
    /// 251: nothing looks the table up; babeld announces what it finds there). An export that
    /// left the plan is first moved to [`config::PROTO_WITHDRAWN`] (announced as unreachable),
    /// and deleted [`BabelRouter::withdraw_hold`] later: babeld 1.12.1 does not retract a
    /// prefix whose route is simply deleted.
    fn sync_exports(&mut self) -> Result<(), RoutingError> {
        let announcing = self.running.is_some();
        self.sync_exports_at(announcing, Instant::now())
    }

    /// [`BabelRouter::sync_exports`] with babeld's state and the time given: withdrawals go
    /// through [`config::PROTO_WITHDRAWN`] only while babeld runs to announce them.
    fn sync_exports_at(&mut self, announcing: bool, now: Instant) -> Result<(), RoutingError> {
        let table = self.settings.import_table;
        let marker = |dst: IpNet, protocol: u8| TableRoute {
            dst,
            table,
            protocol,
            target: RouteTarget::Blackhole,
            pref_src: None,
            metric: 0,
        };
        let present: Vec<TableRoute> = self
            .kernel
            .list(table, None)?
            .into_iter()
            .filter(|r| r.protocol == PROTO_TOLLWAY || r.protocol == config::PROTO_WITHDRAWN)
            .collect();
        let hold = self.withdraw_hold();
        let mut errors = Vec::new();
        let mut kept = BTreeSet::new();
        for route in &present {
            let wanted = self.exports.contains(&route.dst) && route.target == RouteTarget::Blackhole;
            let result = match (route.protocol == PROTO_TOLLWAY, wanted) {
                (true, true) => {
                    kept.insert(route.dst);
                    Ok(())
                }
                (false, true) => {
                    self.withdrawing.remove(&route.dst);
                    kept.insert(route.dst);
                    self.kernel.replace(&marker(route.dst, PROTO_TOLLWAY))
                }
                (true, false) if announcing && route.target == RouteTarget::Blackhole => {
                    info!(prefix = %route.dst, "babel: withdrawing export");
                    self.withdrawing.insert(route.dst, now);
                    self.kernel.replace(&marker(route.dst, config::PROTO_WITHDRAWN))
                }
                (false, false) if announcing && self.withdrawing.get(&route.dst).is_some_and(|t| now < *t + hold) => {
                    Ok(())
                }
                _ => {
                    self.withdrawing.remove(&route.dst);
                    self.kernel.delete(route)
                }
            };
            if let Err(e) = result {
                errors.push(e.into());
            }
        }
        self.withdrawing.retain(|dst, _| present.iter().any(|r| r.dst == *dst));
        for dst in &self.exports {
            if !kept.contains(dst) {
                if let Err(e) = self.kernel.replace(&marker(*dst, PROTO_TOLLWAY)) {
                    errors.push(e.into());
                }
            }
        }
        combine(errors)
    }

    /// How long a withdrawn export is announced as unreachable before its route is deleted.
    /// babeld sends the change at once (within half a hello interval); until the route is
    /// deleted this node will not install a neighbor's route to the same prefix (its own
    /// announcement wins), so the hold is short: a node whose uplink failed falls back to
    /// another's default after the hold, the next tick and that neighbor's next full update.
    pub fn withdraw_hold(&self) -> Duration {
        WITHDRAW_HOLD
    }

    /// Compare babeld's interfaces with what we told it (someone else may have used the
    /// socket), then push the plan and the exports again.
    fn reconcile(&mut self) -> Result<(), RoutingError> {
        let mut errors = Vec::new();
        match self.dump() {
            Ok(d) => {
                let listed: BTreeSet<&str> =
                    d.interfaces.iter().map(|i| i.name.as_str()).filter(|n| *n != config::IDLE_INTERFACE).collect();
                let run = self.running.as_mut().expect("dump succeeded, so babeld runs");
                run.interfaces.retain(|ifname, _| listed.contains(ifname.as_str()));
                let strangers: Vec<String> = listed
                    .iter()
                    .filter(|n| !run.interfaces.keys().any(|i| i.as_str() == **n))
                    .map(|n| n.to_string())
                    .collect();
                for name in strangers {
                    warn!(ifname = %name, "babel: flushing an interface the plan does not have");
                    if let Err(e) = self.request(&format!("flush interface {name}")) {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if let Err(e) = self.push_interfaces() {
            errors.push(e);
        }
        if let Err(e) = self.sync_exports() {
            errors.push(e);
        }
        combine(errors)
    }

    /// Reap babeld if it died; true if it did.
    fn reap(&mut self) -> bool {
        let Some(run) = self.running.as_mut() else { return false };
        let status = match run.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => return false,
            Err(e) => format!("wait failed: {e}"),
        };
        let lived = run.started.elapsed();
        warn!(pid = run.child.id(), %status, lived_ms = lived.as_millis() as u64, "babeld died; restarting it");
        self.running = None;
        // A babeld that had started is restarted at once, however often it dies (at most once
        // a tick): routing is down until it runs.
        self.next_start = Instant::now();
        true
    }
}

impl Router for BabelRouter {
    fn kind(&self) -> RouterKind {
        RouterKind::Babel
    }

    fn apply(&mut self, plan: &RoutingPlan) -> Result<(), RoutingError> {
        let mut neighbors = BTreeMap::new();
        for n in &plan.neighbors {
            if neighbors.insert(n.ifname.clone(), (n.cost, n.penalty.clone())).is_some() {
                warn!(ifname = %n.ifname, "babel: the plan names a tunnel twice; using the last");
            }
        }
        self.neighbors = neighbors;
        self.exports = plan.exports.iter().map(|p| p.trunc()).collect();
        let exports = self.sync_exports();
        let interfaces = self.push_interfaces();
        combine(exports.err().into_iter().chain(interfaces.err()).collect())
    }

    fn tick(&mut self) -> Result<(), RoutingError> {
        if self.stopped {
            return Ok(());
        }
        self.reap();
        if self.running.is_none() {
            if Instant::now() < self.next_start {
                return Ok(());
            }
            if let Err(e) = self.spawn() {
                // A start that fails (babeld exits during start-up, never opens its socket)
                // is retried after 1, 2, 4… 30 s.
                self.failed_starts += 1;
                let delay = Duration::from_secs(1u64 << (self.failed_starts - 1).min(5));
                self.next_start = Instant::now() + delay.min(MAX_RESTART_DELAY);
                return Err(e);
            }
            self.failed_starts = 0;
            let interfaces = self.push_interfaces();
            let exports = self.sync_exports();
            return combine(interfaces.err().into_iter().chain(exports.err()).collect());
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(RECONCILE_EVERY) {
            return self.reconcile();
        }
        let interfaces = self.push_interfaces();
        let exports = if self.withdrawing.is_empty() { Ok(()) } else { self.sync_exports() };
        combine(interfaces.err().into_iter().chain(exports.err()).collect())
    }

    fn routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        let d = self.dump()?;
        let own_id = self.settings.router_id.to_string();
        let mut out: Vec<RouteEntry> = d
            .xroutes
            .iter()
            .map(|x| RouteEntry {
                prefix: x.prefix,
                ifname: None,
                next_hop: None,
                metric: x.metric,
                refmetric: None,
                installed: false,
                router_id: Some(own_id.clone()),
                source: RouterKind::Babel,
            })
            .collect();
        out.extend(d.routes.iter().map(|r| RouteEntry {
            prefix: r.prefix,
            ifname: IfName::new(r.ifname.as_str()).ok(),
            next_hop: Some(r.via),
            metric: r.metric,
            refmetric: Some(r.refmetric),
            installed: r.in_kernel(),
            router_id: Some(r.id.clone()),
            source: RouterKind::Babel,
        }));
        Ok(out)
    }

    fn shutdown(&mut self) -> Result<(), RoutingError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut errors = Vec::new();
        if let Some(run) = self.running.take() {
            if let Err(e) = stop_child(run.child) {
                errors.push(e);
            }
        }
        // babeld withdrew its routes on SIGTERM; after a SIGKILL or a crash they are ours to
        // delete, with its pid file and socket.
        if let Err(e) = self.clean_after_babeld() {
            errors.push(e);
        }
        self.exports.clear();
        if let Err(e) = self.sync_exports() {
            errors.push(e);
        }
        if let Err(e) = remove_file("removing", &self.settings.config_path()) {
            errors.push(e);
        }
        combine(errors)
    }
}

impl Drop for BabelRouter {
    /// A router dropped without [`Router::shutdown`] still stops its babeld (which withdraws
    /// its own routes). The kernel is left alone: the dropping thread may be in another
    /// network namespace.
    fn drop(&mut self) {
        if let Some(run) = self.running.take() {
            if let Err(e) = stop_child(run.child) {
                warn!("{e}");
            }
        }
    }
}

/// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL.
fn stop_child(mut child: Child) -> Result<(), RoutingError> {
    let pid = child.id();
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(RoutingError::Stop { pid, detail: format!("waiting: {e}") }),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(RoutingError::Stop { pid, detail: format!("no exit within {STOP_TIMEOUT:?} of SIGTERM; killed") })
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started (or verified by its command line) and a valid
    // signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The last lines of babeld's log (at most 1 KiB), for start-up errors.
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else { return "(no log)".into() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(1024)));
    let mut buf = Vec::new();
    let _ = f.take(1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Write a file through a temporary name and a rename, so babeld never reads half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RoutingError> {
    let tmp: PathBuf = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(file_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(file_err("renaming into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_kernel::fake::FakeRoutes;

    /// A router that never started babeld, on a fake kernel.
    fn idle_router(kernel: FakeRoutes) -> BabelRouter {
        let settings = BabelSettings::new(
            PathBuf::from("/nonexistent"),
            RouterId([2, 0, 0, 0, 0, 0, 0, 1]),
            "fd00::1".parse().unwrap(),
            Some("100.64.0.1".parse().unwrap()),
        );
        BabelRouter {
            settings,
            kernel: Box::new(kernel),
            running: None,
            neighbors: BTreeMap::new(),
            exports: BTreeSet::new(),
            withdrawing: BTreeMap::new(),
            ticks: 0,
            starts: 0,
            failed_starts: 0,
            next_start: Instant::now(),
            stopped: true,
        }
    }

    fn import_table(k: &FakeRoutes) -> Vec<(String, u8)> {
        let mut v: Vec<_> =
            k.routes().iter().filter(|r| r.table == 75).map(|r| (r.dst.to_string(), r.protocol)).collect();
        v.sort();
        v
    }

    #[test]
    fn exports_are_announced_then_withdrawn_through_an_infinite_metric_then_deleted() {
        let k = FakeRoutes::new();
        let mut r = idle_router(k.clone());
        let t0 = Instant::now();
        let default4: IpNet = "0.0.0.0/0".parse().unwrap();
        let lan: IpNet = "10.1.2.0/24".parse().unwrap();
        r.exports = [default4, lan].into();
        r.sync_exports_at(true, t0).unwrap();
        assert_eq!(import_table(&k), vec![("0.0.0.0/0".into(), 251), ("10.1.2.0/24".into(), 251)]);
        assert!(k.routes().iter().all(|r| r.target == RouteTarget::Blackhole && r.metric == 0));

        // The uplink fails: the default is withdrawn, first as an unreachable announcement.
        r.exports = [lan].into();
        r.sync_exports_at(true, t0).unwrap();
        assert_eq!(import_table(&k), vec![("0.0.0.0/0".into(), 252), ("10.1.2.0/24".into(), 251)]);
        // Kept through the hold, deleted after it.
        r.sync_exports_at(true, t0 + WITHDRAW_HOLD / 2).unwrap();
        assert_eq!(import_table(&k).len(), 2);
        r.sync_exports_at(true, t0 + WITHDRAW_HOLD).unwrap();
        assert_eq!(import_table(&k), vec![("10.1.2.0/24".into(), 251)]);
        assert!(r.withdrawing.is_empty());

        // Withdrawn, then back before the hold ends: announced again at once.
        r.exports = BTreeSet::new();
        r.sync_exports_at(true, t0).unwrap();
        assert_eq!(import_table(&k), vec![("10.1.2.0/24".into(), 252)]);
        r.exports = [lan].into();
        r.sync_exports_at(true, t0).unwrap();
        assert_eq!(import_table(&k), vec![("10.1.2.0/24".into(), 251)]);
        assert!(r.withdrawing.is_empty());

        // Without a running babeld nothing is announced: withdrawal deletes at once, and a
        // leftover withdrawn route from an earlier run goes too.
        r.exports = BTreeSet::new();
        r.sync_exports_at(false, t0).unwrap();
        assert!(import_table(&k).is_empty());
        let mut kk = k.clone();
        kk.replace(&TableRoute {
            dst: lan,
            table: 75,
            protocol: config::PROTO_WITHDRAWN,
            target: RouteTarget::Blackhole,
            pref_src: None,
            metric: 0,
        })
        .unwrap();
        r.sync_exports_at(true, t0).unwrap();
        assert!(import_table(&k).is_empty(), "a withdrawn route not ours to hold is deleted");
    }

    #[test]
    fn only_our_protocols_in_the_import_table_are_touched_and_prefixes_are_normalised() {
        let k = FakeRoutes::new();
        let mut kk = k.clone();
        let foreign = TableRoute {
            dst: "192.0.2.0/24".parse().unwrap(),
            table: 75,
            protocol: 4,
            target: RouteTarget::Blackhole,
            pref_src: None,
            metric: 0,
        };
        kk.replace(&foreign).unwrap();
        let mut r = idle_router(k.clone());
        let plan = RoutingPlan { neighbors: vec![], exports: vec!["10.1.2.3/24".parse().unwrap()] };
        r.apply(&plan).unwrap();
        assert_eq!(import_table(&k), vec![("10.1.2.0/24".into(), 251), ("192.0.2.0/24".into(), 4)]);
        r.apply(&RoutingPlan::default()).unwrap();
        assert_eq!(import_table(&k), vec![("192.0.2.0/24".into(), 4)]);
    }

    #[test]
    fn kernel_failures_are_reported_with_the_route() {
        let k = FakeRoutes::new();
        let mut r = idle_router(k.clone());
        k.fail_next(1);
        let err = r.apply(&RoutingPlan { neighbors: vec![], exports: vec!["::/0".parse().unwrap()] }).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        // The next apply (or tick) puts it right.
        r.apply(&RoutingPlan { neighbors: vec![], exports: vec!["::/0".parse().unwrap()] }).unwrap();
        assert_eq!(import_table(&k), vec![("::/0".into(), 251)]);
    }
}
