//! Start-up and shutdown of the daemon: config, logging, identity, kernel backends, I/O tasks,
//! the driver thread, signals.

use crate::config::{Backend, Config};
use crate::driver::{Backends, Clock, Driver, Input, Io};
use crate::{api, net, storage};
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use tokio::sync::mpsc::unbounded_channel;
use tollway_core::{IfName, Node, NodeId};
use tollway_kernel::Links;

/// Run the daemon with the config at `path` until SIGTERM or SIGINT.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    init_logging(&cfg.log_level);
    storage::ensure_private_dir(&cfg.data_dir)?;
    let _lock = storage::DataDirLock::acquire(&cfg.data_dir)?;
    let (identity, created) = storage::load_or_create_identity(&cfg.data_dir)?;
    let id = identity.node_id();
    tracing::info!(node = %id, mesh_ip = %id.mesh_ip(), new_key = created, "tollway starting");

    raise_fd_limit();
    for w in crate::warnings::warnings(&cfg, &crate::warnings::existing_interfaces()) {
        tracing::warn!("{w}");
    }
    let backends = open_backends(&cfg, &id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tollway-io")
        .build()
        .context("starting the I/O runtime")?;

    let (to_driver, inputs) = std::sync::mpsc::channel::<Input>();
    let (view_tx, view_rx) = tokio::sync::watch::channel(None);
    let health = crate::health::Health::default();
    let mut discovery = HashMap::new();
    let discovery_queue = net::discovery::DiscoveryQueue::new(net::discovery::DISCOVERY_QUEUE);
    let clock = Clock::new();
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let speedtest_identity = cfg.speedtest.serve.then(|| identity.clone());
    let test_identity = identity.clone();
    let node = Node::new(cfg.core_config(), identity, clock.now(), seed);
    {
        let _guard = runtime.enter();
        for iface in cfg.interface_names() {
            let (tx, rx) = unbounded_channel();
            discovery.insert(iface.clone(), tx);
            tokio::spawn(net::discovery::run(
                iface,
                cfg.discovery.port,
                to_driver.clone(),
                discovery_queue.clone(),
                rx,
            ));
        }
        runtime
            .block_on(net::control::listen(cfg.control.port, to_driver.clone()))
            .with_context(|| format!("listening for control sessions on TCP port {}", cfg.control.port))?;
        let history = match tollway_store::HistoryReader::open(cfg.data_dir.join(LEDGER_FILE)) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the ledger read-only; the driver will answer history queries");
                None
            }
        };
        let readers = crate::readers::Readers::new(view_rx, history, cfg.market.currency(), to_driver.clone());
        api::serve(&cfg.api_socket, readers.clone())?;
        if cfg.http.enabled {
            let listen = cfg.http.addr();
            if let Err(e) =
                runtime.block_on(crate::http::serve(listen, cfg.http.token.clone(), readers, health.clone()))
            {
                tracing::error!(%listen, error = %e,
                    "cannot serve the dashboard and /metrics (http.listen); going on without them");
            }
        }
        if let Some(identity) = speedtest_identity {
            let listen = cfg.speedtest.addr();
            let opts = tollway_speedtest::ServerOptions::default();
            match runtime.block_on(tollway_speedtest::Server::bind(identity, listen, opts)) {
                Ok(server) => {
                    tracing::info!(%listen, key = %server.key(), "serving speed tests (other nodes pin this node's id)");
                    tokio::spawn(server.run(std::future::pending::<()>()));
                }
                Err(e) => tracing::error!(%listen, error = %e,
                    "cannot serve speed tests (speedtest.listen); going on without them"),
            }
        }
        let signals = to_driver.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            let which = tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" };
            tracing::info!(signal = which, "shutdown requested");
            let _ = signals.send(Input::Shutdown);
        });
    }

    let io = Io {
        discovery,
        discovery_queue,
        sessions: Box::new(net::control::TokioSessions {
            runtime: runtime.handle().clone(),
            to_driver: to_driver.clone(),
        }),
    };
    let mesh = open_mesh(&cfg, &id)?;
    let mut driver =
        Driver::new(node, clock, backends, io, cfg.market.currency(), cfg.control.port, cfg.admission(&id))
            .with_mesh(mesh)
            .with_view(view_tx)
            .with_health(health);
    if cfg.core_config().quality.testing {
        driver = driver.with_speed_tests(crate::driver::SpeedTests::new(
            cfg.speedtest.pins(),
            Box::new(crate::driver::TokioSpeedTests {
                runtime: runtime.handle().clone(),
                to_driver: to_driver.clone(),
                identity: test_identity.clone(),
            }),
        ));
        if cfg.tests_upload_only() {
            tracing::info!(servers = cfg.speedtest.servers.len(), routing = cfg.routing.kind.as_str(),
                "speed tests through each neighbor on: upload only (the download comes back by the operator's routes), no live checks");
        } else {
            tracing::info!(servers = cfg.speedtest.servers.len(), "speed tests through each neighbor on");
        }
    } else if !cfg.speedtest.servers.is_empty() && cfg.quality.tests {
        tracing::warn!(
            routing = cfg.routing.kind.as_str(),
            "speed tests through each neighbor need mesh routing (babel, static or controller); not testing"
        );
    }
    driver.prepare().map_err(anyhow::Error::msg).context("restoring the ledger and preparing the kernel state")?;
    tracing::info!(backend = driver.tunnel_backend(), "ready");
    let handle = std::thread::Builder::new()
        .name("tollway-driver".into())
        .spawn(move || {
            driver.run(inputs);
            driver.fatal().map(|stop| stop.to_string())
        })
        .context("starting the driver thread")?;
    drop(to_driver);
    let fatal = handle.join().map_err(|_| anyhow::anyhow!("the driver thread panicked"))?;
    let _ = std::fs::remove_file(&cfg.api_socket);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match fatal {
        Some(why) => Err(anyhow::anyhow!("stopped: {why}")),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Userspace tunnels hold several descriptors each (and boringtun 0.7 leaks four per device it
/// creates): lift the soft limit on open files to the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(soft = lim.rlim_cur, "could not raise the open-file limit");
            }
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colors only on a terminal: not in a journal, a log file or the lab's node logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}

/// The routes that lead to the pinned speed-test servers, where quality penalties apply, each
/// with its destination (`crate::destinations`).
fn penalized_prefixes(pins: &[(std::net::SocketAddr, NodeId)]) -> Vec<(u8, ipnet::IpNet)> {
    let (_, destinations) = crate::destinations::destinations(pins).unwrap_or_default();
    destinations.into_iter().flat_map(|d| d.prefixes.into_iter().map(move |p| (d.number, p))).collect()
}

/// Static and controller routing: each pinned server's address and its destination, whose
/// routes the neighbors' quality penalties rank (none when the node does not test).
fn tested_addresses(cfg: &Config) -> Vec<(std::net::IpAddr, u8)> {
    if !cfg.core_config().quality.testing {
        return Vec::new();
    }
    let (pins, _) = crate::destinations::destinations(&cfg.speedtest.pins()).unwrap_or_default();
    pins.into_iter().map(|p| (p.server.ip(), p.destination)).collect()
}

/// Routing as the config says: the settings, and the router (babeld started here).
fn open_mesh(cfg: &Config, id: &NodeId) -> anyhow::Result<crate::driver::Mesh> {
    use crate::mesh_config::RoutingKind;
    use tollway_routing::table::{Candidate, TableRouter};
    let settings = cfg.mesh(id).map_err(|(field, problem)| anyhow::anyhow!("field `{field}`: {problem}"))?;
    let kernel = || Box::new(tollway_kernel::NetlinkRoutes::new());
    let router: Option<Box<dyn tollway_routing::Router>> = match settings.kind {
        RoutingKind::None => None,
        RoutingKind::Babel => {
            let runtime_dir = babel_runtime_dir(cfg);
            let mut b = tollway_routing::babel::BabelSettings::new(
                runtime_dir,
                tollway_routing::babel::RouterId::for_node(id),
                id.mesh_ip(),
                Some(settings.mesh_ipv4),
            );
            b.program = settings.babeld.clone();
            b.export_table = settings.table;
            b.import_table = settings.table + 1;
            b.hello_interval = std::time::Duration::from_millis(settings.hello_interval_ms as u64);
            // Full updates every 2 s at least (a restarted neighbor waits for the next one), and
            // not more often than every two hellos.
            b.update_interval = (b.hello_interval * 2).max(std::time::Duration::from_secs(2));
            if cfg.core_config().quality.testing {
                let slots = cfg.discovery.max_neighbors.min(256) as u16;
                b.probe = Some(tollway_routing::babel::ProbeSettings {
                    prefix: id.probe_prefix(),
                    slots,
                    penalized: penalized_prefixes(&cfg.speedtest.pins()),
                });
            }
            let router = tollway_routing::babel::BabelRouter::start(b, kernel())
                .with_context(|| format!("starting babeld ({})", settings.babeld.display()))?;
            Some(Box::new(router))
        }
        RoutingKind::Static => {
            let candidates = settings
                .static_routes
                .iter()
                .map(|r| Candidate { prefix: r.prefix, via: r.via, metric: r.metric })
                .collect();
            Some(Box::new(
                TableRouter::new_static(settings.table, id.mesh_ip(), settings.mesh_ipv4, kernel(), candidates)
                    .with_tested(tested_addresses(cfg)),
            ))
        }
        RoutingKind::Controller => {
            let file = settings.controller_file.clone().expect("validated: controller needs its file");
            Some(Box::new(
                TableRouter::new_controller(settings.table, id.mesh_ip(), settings.mesh_ipv4, kernel(), file)
                    .with_tested(tested_addresses(cfg)),
            ))
        }
    };
    Ok(crate::driver::Mesh::new(settings, router, kernel(), Box::new(tollway_traffic::nat::NftNat::new())))
}

/// Where babeld's files go: beside the API socket (a runtime directory such as /run/tollway),
/// in a directory of its own.
fn babel_runtime_dir(cfg: &Config) -> std::path::PathBuf {
    cfg.api_socket.parent().unwrap_or(std::path::Path::new("/run/tollway")).join("babel")
}

/// The ledger's file in the data directory.
pub const LEDGER_FILE: &str = "ledger.db";

fn open_backends(cfg: &Config, id: &NodeId) -> anyhow::Result<Backends> {
    let backend = match cfg.tunnel.backend {
        Backend::Auto => tollway_kernel::TunnelBackend::Auto,
        Backend::Kernel => tollway_kernel::TunnelBackend::Kernel,
        Backend::Userspace => tollway_kernel::TunnelBackend::Userspace,
    };
    let opts = tollway_kernel::UserspaceOptions { threads: cfg.tunnel.userspace_threads, ..Default::default() };
    let tunnels = tollway_kernel::open_tunnels(backend, opts).context("opening the tunnel backend")?;
    let links: Box<dyn Links> = Box::new(tollway_kernel::NetlinkLinks::new());
    // Shaping devices are named after the node (unique host-wide like the tunnels): tq<id6><group>.
    let ifb_prefix = format!("tq{}", &IfName::tunnel_prefix(id)[2..]);
    let shaper = tollway_traffic::TcShaper::new(&ifb_prefix).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = cfg.data_dir.join(LEDGER_FILE);
    let options = tollway_store::StoreOptions {
        retention: Some(std::time::Duration::from_secs(cfg.market.history_days as u64 * 86_400)),
        ..Default::default()
    };
    let store = tollway_store::Store::open_with(&path, options).context("opening the ledger")?;
    let (firewall, shaper): (Box<dyn tollway_traffic::Firewall>, Box<dyn tollway_traffic::Shaper>) =
        if cfg.market.traffic_control {
            (Box::new(tollway_traffic::NftFirewall::new()), Box::new(shaper))
        } else {
            tracing::warn!("market.traffic_control = false: no traffic is counted, billed, throttled or shaped");
            (Box::new(tollway_traffic::NoopFirewall), Box::new(tollway_traffic::NoopShaper))
        };
    Ok(Backends { tunnels, links, firewall, shaper, store: Box::new(store) })
}
