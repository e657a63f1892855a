//! `tollway speedtest-server` and `tollway speedtest` (docs/speedtest.md).

use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use tollway_core::{Identity, NodeId};
use tollway_speedtest::{keyfile, Measurement, Server, ServerOptions, TestSpec, VerifiedReceipt};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Key file (64 hex digits, the format of a node's node.key); created with mode 0600 if
    /// missing. Its public key is what nodes pin.
    #[arg(long)]
    key: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "[::]:7479")]
    listen: SocketAddr,
    /// Longest upload and longest download, each, in seconds (longer requests are shortened).
    #[arg(long, default_value_t = 30)]
    max_secs: u16,
    /// Tests running at once (more are refused as busy).
    #[arg(long, default_value_t = 4)]
    max_clients: usize,
    /// Each test's rate cap per direction, Mbit/s; 0 for none.
    #[arg(long, default_value_t = 1000)]
    max_rate_mbit: u64,
    /// Tests one client (node id) may start per minute.
    #[arg(long, default_value_t = 6)]
    tests_per_minute: u32,
    /// Connections one source address may open per minute (beyond: closed at once).
    #[arg(long, default_value_t = 60)]
    connections_per_minute: u32,
    /// Print the public key (creating the key file if missing) and exit.
    #[arg(long)]
    print_key: bool,
}

#[derive(clap::Args)]
pub struct ClientArgs {
    /// The server's address and port, e.g. [2001:db8::1]:7479. Without it: every server pinned
    /// in the config (`[[speedtest.servers]]`), as the node (its node.key).
    #[arg(long, requires = "key")]
    server: Option<SocketAddr>,
    /// The server's public key (64 hex digits), as `tollway speedtest-server` prints it.
    #[arg(long, requires = "server")]
    key: Option<String>,
    /// The config whose pinned servers to test (without --server). Default:
    /// /etc/tollway/tollway.toml.
    #[arg(long, conflicts_with = "server")]
    config: Option<PathBuf>,
    /// Source address for the test (e.g. a probe address that routes through one neighbor).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Upload seconds (the server may allow fewer).
    #[arg(long, default_value_t = 10)]
    up_secs: u16,
    /// Download seconds (the server may allow fewer).
    #[arg(long, default_value_t = 10)]
    down_secs: u16,
    /// The node key to test as (a node.key file); without one a throw-away identity is used.
    #[arg(long)]
    identity_file: Option<PathBuf>,
    /// 64 hex digits the receipt carries to name the path (e.g. a neighbor's node id). Default: zeros.
    #[arg(long)]
    path_label: Option<String>,
    /// The most megabytes (10^6 bytes) to move each way. Default: no cap.
    #[arg(long)]
    max_mb: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // To stderr (stdout carries the key line), colors only on a terminal (not in a journal).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Until SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("speedtest: {which} received, stopping");
}

pub fn serve(a: ServerArgs) -> anyhow::Result<u8> {
    let (identity, created) = keyfile::load_or_create(&a.key)?;
    if a.print_key {
        println!("{}", identity.node_id());
        return Ok(0);
    }
    init_logging();
    let opts = ServerOptions {
        max_secs: a.max_secs,
        max_clients: a.max_clients,
        max_rate_bps: (a.max_rate_mbit > 0).then(|| a.max_rate_mbit.saturating_mul(1_000_000)),
        tests_per_minute: a.tests_per_minute,
        connections_per_minute: a.connections_per_minute,
        ..ServerOptions::default()
    };
    runtime()?.block_on(async {
        let server = Server::bind(identity, a.listen, opts.clone()).await?;
        let addr = server.local_addr().context("reading the listening address")?;
        if created {
            tracing::info!(path = %a.key.display(), "speedtest: created a new key");
        }
        tracing::info!(
            key = %server.key(),
            "speedtest: listening on {addr} (at most {} tests at once, {} s each way, {} per test)",
            opts.max_clients,
            opts.max_secs,
            match opts.max_rate_bps {
                Some(r) => format!("{} Mbit/s", r / 1_000_000),
                None => "no rate cap".into(),
            }
        );
        // For the operator to pin (docs/speedtest.md): `key = "…"` in a [[speedtest.servers]]
        // entry. One line, flushed: scripts and tests read it.
        println!("speedtest server {addr} key {}", server.key());
        server.run(stop_signal()).await;
        Ok::<_, anyhow::Error>(0)
    })
}

fn hex32(what: &str, s: &str) -> anyhow::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut b).with_context(|| format!("{what}: expected 64 hex digits, got {s:?}"))?;
    Ok(b)
}

pub fn test(a: ClientArgs) -> anyhow::Result<u8> {
    // The servers to test, and who we test as.
    let (targets, identity, ephemeral) = match (&a.server, &a.key) {
        (Some(server), Some(key)) => {
            let server_key = NodeId::from_str(key.trim()).map_err(|e| anyhow::anyhow!("--key {key:?}: {e}"))?;
            let (identity, ephemeral) = match &a.identity_file {
                Some(p) => (keyfile::load(p)?, false),
                None => (Identity::from_seed(&rand::random()), true),
            };
            (vec![(*server, server_key)], identity, ephemeral)
        }
        _ => {
            let path = a.config.clone().unwrap_or_else(|| PathBuf::from(crate::DEFAULT_CONFIG));
            let cfg = tollway_daemon::Config::load(&path)?;
            let pins = cfg.speedtest.pins();
            if pins.is_empty() {
                anyhow::bail!(
                    "no speed-test servers are pinned in {} ([[speedtest.servers]] address and key); \
                     or give --server and --key",
                    path.display()
                );
            }
            let identity = match &a.identity_file {
                Some(p) => keyfile::load(p)?,
                None => keyfile::load(&cfg.data_dir.join("node.key"))
                    .with_context(|| format!("the node's key in {} (data_dir)", cfg.data_dir.display()))?,
            };
            (pins, identity, false)
        }
    };
    let path_label = match &a.path_label {
        Some(s) => hex32("--path-label", s)?,
        None => [0; 32],
    };
    let rt = runtime()?;
    let mut failed = 0u8;
    let mut all = Vec::new();
    for (server, server_key) in targets {
        let spec = TestSpec {
            server,
            server_key,
            bind: a.bind,
            mark: None,
            identity: identity.clone(),
            path_label,
            up_secs: a.up_secs,
            down_secs: a.down_secs,
            max_bytes: a.max_mb.map(|m| m.saturating_mul(1_000_000)).unwrap_or(u64::MAX),
        };
        match rt.block_on(tollway_speedtest::run_test(spec)) {
            Ok(v) if a.json => all.push(receipt_json(&v, server, ephemeral)),
            Ok(v) => print!("{}", receipt_text(&v, server, ephemeral)),
            Err(e) => {
                failed = 1;
                eprintln!("speed test against {server} (key {server_key}) failed: {e}");
                if a.json {
                    all.push(serde_json::json!({ "server": server.to_string(), "server_key": server_key.to_string(), "error": e.to_string() }));
                }
            }
        }
    }
    if a.json {
        let out = if all.len() == 1 && a.server.is_some() { all.remove(0) } else { serde_json::Value::Array(all) };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(failed)
}

fn direction(bytes: u64, us: u64, bps: f64, loss_ppm: u32, loss_by: &str) -> serde_json::Value {
    serde_json::json!({
        "bytes": bytes,
        "duration_s": us as f64 / 1e6,
        "mbit_s": bps / 1e6,
        "retransmitted_ppm": loss_ppm,
        "retransmissions_counted_by": loss_by,
    })
}

fn receipt_json(v: &VerifiedReceipt, server: SocketAddr, ephemeral: bool) -> serde_json::Value {
    let m: &Measurement = v.measurement();
    serde_json::json!({
        "server": server.to_string(),
        "server_key": m.server_key.to_string(),
        "client": m.client.to_string(),
        "ephemeral_identity": ephemeral,
        "path_label": hex::encode(m.path_label),
        "client_nonce": hex::encode(m.client_nonce),
        "server_nonce": hex::encode(m.server_nonce),
        "start_unix_ms": m.start_unix_ms,
        "up": direction(m.up_bytes, m.up_duration_us, m.up_bps(), m.up_loss_ppm, "client"),
        "down": direction(m.down_bytes, m.down_duration_us, m.down_bps(), m.down_loss_ppm, "server"),
        "rtt_idle_ms": m.rtt_idle_us as f64 / 1e3,
        "rtt_loaded_ms": m.rtt_loaded_us as f64 / 1e3,
        "receipt": hex::encode(v.receipt().encode()),
    })
}

fn receipt_text(v: &VerifiedReceipt, server: SocketAddr, ephemeral: bool) -> String {
    let m = v.measurement();
    let dir = |bytes: u64, us: u64, bps: f64| {
        format!("{:>9.2} Mbit/s  ({} in {:.2} s)", bps / 1e6, crate::output::bytes(bytes), us as f64 / 1e6)
    };
    let mut out = format!("speed test against {server}, key {}: receipt verified\n", m.server_key);
    out += &format!(
        "  client     {}{}\n",
        m.client,
        if ephemeral { " (a throw-away identity: no --identity-file given)" } else { "" }
    );
    out += &format!("  upload   {}  received by the server\n", dir(m.up_bytes, m.up_duration_us, m.up_bps()));
    out += &format!(
        "  download {}  sent by the server, acknowledged by us\n",
        dir(m.down_bytes, m.down_duration_us, m.down_bps())
    );
    out += &format!(
        "  rtt        {:.2} ms idle, {:.2} ms under load (server's TCP)\n",
        m.rtt_idle_us as f64 / 1e3,
        m.rtt_loaded_us as f64 / 1e3
    );
    out += &format!(
        "  retransmitted  {:.3} % up (our TCP), {:.3} % down (server's TCP)\n",
        m.up_loss_ppm as f64 / 1e4,
        m.down_loss_ppm as f64 / 1e4
    );
    out
}
