//! The speed-test server: accepts TLS sessions authenticated by its key, runs one test per
//! session, signs the receipt. Bounded: concurrent tests (`max_clients`), open connections,
//! test length (`max_secs` each way), rate (`max_rate_bps` each way per test), tests per
//! client per minute, connections per source address per minute, and every stage has a
//! deadline. Every refusal and failure is logged with its reason (at most 30 lines a minute).

use crate::framed::{data_block, Frame, FrameError, Framed, Pacer, BLOCK_PAYLOAD};
use crate::limits::{LogLimiter, RateLimiter};
use crate::proto::{client_transcript, ClientMsg, RefuseReason, ServerMsg, EXPORTER_LABEL, PINGS, PROTOCOL_VERSION};
use crate::receipt::Measurement;
use crate::tcpinfo::{loss_ppm, TcpInfo};
use crate::tls::{server_config, TlsSetupError};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tollway_core::{Identity, NodeId};
use tracing::{info, warn};

/// How long a client has for each step before the transfer (TLS handshake, hello, auth).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to answer one ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that may be open beyond the test slots (handshaking, or being refused).
pub const EXTRA_CONNECTIONS: usize = 16;
/// Distinct clients and addresses remembered by the rate limiters.
const MAX_TRACKED: usize = 4096;

/// How long a transfer of `secs` may run past its end while the buffered bytes drain (a slow
/// path can hold many seconds of data in its queues).
pub fn drain_grace(secs: u16) -> Duration {
    Duration::from_secs(15.max(secs as u64))
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The longest upload and the longest download, each (s); longer requests are shortened.
    pub max_secs: u16,
    /// Tests running at once; more are refused as busy.
    pub max_clients: usize,
    /// Each test's rate cap in each direction (bit/s); `None`: no cap.
    pub max_rate_bps: Option<u64>,
    /// Tests one client (node id) may start per minute.
    pub tests_per_minute: u32,
    /// Connections one source address may open per minute (beyond: closed without TLS).
    pub connections_per_minute: u32,
    /// How long running tests may go on after a stop is asked for.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_secs: 30,
            max_clients: 4,
            max_rate_bps: Some(1_000_000_000),
            tests_per_minute: 6,
            connections_per_minute: 60,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("invalid option: {0}")]
    Option(&'static str),
}

struct Shared {
    identity: Identity,
    key: NodeId,
    opts: ServerOptions,
    tls: TlsAcceptor,
    slots: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    per_client: Mutex<RateLimiter<NodeId>>,
    per_addr: Mutex<RateLimiter<IpAddr>>,
    log: Mutex<LogLimiter>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// A rate-limited warning.
    fn warn(&self, peer: SocketAddr, client: Option<NodeId>, what: &str) {
        if let Some(suppressed) = lock(&self.log).allow(std::time::Instant::now()) {
            let client = client.map(|c| c.short()).unwrap_or_else(|| "-".into());
            if suppressed > 0 {
                warn!(%peer, %client, suppressed, "speedtest: {what} ({suppressed} similar lines not logged)");
            } else {
                warn!(%peer, %client, "speedtest: {what}");
            }
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Listen on `listen` with `identity`'s key.
    pub async fn bind(identity: Identity, listen: SocketAddr, opts: ServerOptions) -> Result<Server, ServerError> {
        if opts.max_clients == 0 {
            return Err(ServerError::Option("max_clients must be at least 1"));
        }
        if opts.max_secs == 0 {
            return Err(ServerError::Option("max_secs must be at least 1"));
        }
        let listener = TcpListener::bind(listen).await.map_err(|source| ServerError::Bind { addr: listen, source })?;
        let tls = TlsAcceptor::from(Arc::new(server_config(&identity)?));
        let shared = Arc::new(Shared {
            key: identity.node_id(),
            identity,
            tls,
            slots: Arc::new(Semaphore::new(opts.max_clients)),
            connections: Arc::new(Semaphore::new(opts.max_clients + EXTRA_CONNECTIONS)),
            per_client: Mutex::new(RateLimiter::new(opts.tests_per_minute, MAX_TRACKED)),
            per_addr: Mutex::new(RateLimiter::new(opts.connections_per_minute, MAX_TRACKED)),
            log: Mutex::new(LogLimiter::new(30)),
            opts,
        });
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The key clients pin.
    pub fn key(&self) -> NodeId {
        self.shared.key
    }

    /// Serve until `shutdown` completes; then stop accepting, let running tests finish for up
    /// to `shutdown_grace`, and end the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let sh = self.shared;
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                r = self.listener.accept() => match r {
                    Ok((tcp, peer)) => {
                        if let Err(wait) = lock(&sh.per_addr).check(&peer.ip(), std::time::Instant::now()) {
                            sh.warn(peer, None, &format!(
                                "connection refused: more than {} connections a minute from {} (next in {:.0} s)",
                                sh.opts.connections_per_minute, peer.ip(), wait.as_secs_f64().ceil()));
                            continue;
                        }
                        let Ok(permit) = sh.connections.clone().try_acquire_owned() else {
                            sh.warn(peer, None, "connection refused: too many open connections");
                            continue;
                        };
                        let sh = sh.clone();
                        tasks.spawn(async move {
                            serve_connection(&sh, tcp, peer).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: don't spin.
                        sh.warn(sh_addr(&self.listener), None, &format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        drop(self.listener);
        let running = tasks.len();
        if running > 0 {
            info!(running, "speedtest: stopping; waiting up to {:?} for running tests", sh.opts.shutdown_grace);
            let _ = timeout(sh.opts.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
            if !tasks.is_empty() {
                info!(ended = tasks.len(), "speedtest: ending tests still running");
                tasks.shutdown().await;
            }
        }
        info!("speedtest: server stopped");
    }
}

fn sh_addr(l: &TcpListener) -> SocketAddr {
    l.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Why a session ended without a receipt.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("{stage}: {source}")]
    Frame { stage: &'static str, source: FrameError },
    #[error("{stage}: {source}")]
    Io { stage: &'static str, source: std::io::Error },
    #[error("refused ({reason}): {detail}")]
    Refused { reason: RefuseReason, detail: String },
}

type Tls = Framed<TlsStream<TcpStream>>;

async fn serve_connection(sh: &Shared, tcp: TcpStream, peer: SocketAddr) {
    let mut client = None;
    match session(sh, tcp, &mut client).await {
        Ok(m) => {
            let ms = |us: u32| us as f64 / 1000.0;
            info!(
                %peer,
                client = %m.client.short(),
                path = %hex::encode(&m.path_label[..4]),
                "speedtest: up {:.2} Mbit/s ({} B in {:.2} s), down {:.2} Mbit/s ({} B in {:.2} s), rtt {:.2} ms idle / {:.2} ms loaded, retransmitted {:.3} % up / {:.3} % down",
                m.up_bps() / 1e6,
                m.up_bytes,
                m.up_duration_us as f64 / 1e6,
                m.down_bps() / 1e6,
                m.down_bytes,
                m.down_duration_us as f64 / 1e6,
                ms(m.rtt_idle_us),
                ms(m.rtt_loaded_us),
                m.up_loss_ppm as f64 / 1e4,
                m.down_loss_ppm as f64 / 1e4,
            );
        }
        Err(e) => sh.warn(peer, client, &format!("test failed: {e}")),
    }
}

async fn read_msg(f: &mut Tls, stage: &'static str, deadline: Instant) -> Result<ClientMsg, SessionError> {
    let frame = timeout_at(deadline, f.read_frame())
        .await
        .map_err(|_| SessionError::Timeout(stage))?
        .map_err(|source| SessionError::Frame { stage, source })?;
    match frame {
        Frame::Control(h, p) => {
            ClientMsg::decode(h, p).map_err(|e| SessionError::Frame { stage, source: FrameError::Decode(e) })
        }
        Frame::Data(_) => Err(protocol(stage, "unexpected data")),
    }
}

fn protocol(stage: &'static str, what: &str) -> SessionError {
    SessionError::Refused { reason: RefuseReason::Protocol, detail: format!("{stage}: {what}") }
}

/// Tell the client why, then close. Errors sending are ignored (it may be gone).
async fn refuse(f: &mut Tls, reason: RefuseReason, retry_after: Duration, detail: String) -> SessionError {
    let msg = ServerMsg::Refused {
        reason,
        retry_after_secs: retry_after.as_secs().min(u16::MAX as u64) as u16,
        detail: detail.clone(),
    };
    let _ = timeout(Duration::from_secs(2), async {
        let _ = f.send(&msg.encode()).await;
        let _ = f.io.shutdown().await;
    })
    .await;
    SessionError::Refused { reason, detail }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

async fn session(sh: &Shared, tcp: TcpStream, client: &mut Option<NodeId>) -> Result<Measurement, SessionError> {
    let _ = tcp.set_nodelay(true);
    let tls = timeout(STEP_TIMEOUT, sh.tls.accept(tcp))
        .await
        .map_err(|_| SessionError::Timeout("the TLS handshake"))?
        .map_err(SessionError::Handshake)?;
    let mut exporter = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut exporter, EXPORTER_LABEL, None)
        .map_err(|e| SessionError::Io { stage: "TLS exporter", source: std::io::Error::other(e) })?;
    let mut f = Framed::new(tls, true);

    // Hello → Challenge.
    let hello = match read_msg(&mut f, "hello", Instant::now() + STEP_TIMEOUT).await {
        Ok(ClientMsg::Hello(h)) => h,
        Ok(other) => {
            return Err(refuse(
                &mut f,
                RefuseReason::Protocol,
                Duration::ZERO,
                format!("expected hello, got {other:?}"),
            )
            .await)
        }
        Err(e @ SessionError::Frame { source: FrameError::Decode(_), .. }) => {
            return Err(refuse(&mut f, RefuseReason::Protocol, Duration::ZERO, e.to_string()).await)
        }
        Err(e) => return Err(e),
    };
    *client = Some(hello.client);
    if hello.version != PROTOCOL_VERSION {
        let detail = format!("protocol version {} asked, this server speaks {PROTOCOL_VERSION}", hello.version);
        return Err(refuse(&mut f, RefuseReason::Version, Duration::ZERO, detail).await);
    }
    let up_secs = hello.up_secs.min(sh.opts.max_secs);
    let down_secs = hello.down_secs.min(sh.opts.max_secs);
    let mut server_nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut server_nonce);
    let max_rate_kbit = sh.opts.max_rate_bps.map(|r| (r / 1000).clamp(1, u32::MAX as u64) as u32).unwrap_or(0);
    let challenge = ServerMsg::Challenge { version: PROTOCOL_VERSION, server_nonce, up_secs, down_secs, max_rate_kbit };
    f.send(&challenge.encode()).await.map_err(|source| SessionError::Io { stage: "sending the challenge", source })?;

    // Auth: the client proves it holds the key of the node id it gave.
    let signature = match read_msg(&mut f, "auth", Instant::now() + STEP_TIMEOUT).await? {
        ClientMsg::Auth { signature } => signature,
        other => {
            return Err(
                refuse(&mut f, RefuseReason::Protocol, Duration::ZERO, format!("expected auth, got {other:?}")).await
            )
        }
    };
    let transcript = client_transcript(&sh.key, &hello, &server_nonce, &exporter);
    if let Err(e) = tollway_core::identity::verify(&hello.client, &transcript, &signature) {
        let detail = format!("signature of client {} does not verify: {e}", hello.client);
        return Err(refuse(&mut f, RefuseReason::AuthFailed, Duration::ZERO, detail).await);
    }
    let limited = lock(&sh.per_client).check(&hello.client, std::time::Instant::now());
    if let Err(wait) = limited {
        let detail = format!("more than {} tests a minute from this node", sh.opts.tests_per_minute);
        return Err(refuse(&mut f, RefuseReason::RateLimited, wait, detail).await);
    }
    let Ok(_slot) = sh.slots.clone().try_acquire_owned() else {
        let busy_for = Duration::from_secs(2 * sh.opts.max_secs as u64 + 10);
        let detail = format!("all {} test slots are in use", sh.opts.max_clients);
        return Err(refuse(&mut f, RefuseReason::Busy, busy_for, detail).await);
    };
    let start_unix_ms = unix_ms();

    // Pings: the idle RTT, before any bulk data.
    let mut rtt_idle = Duration::MAX;
    for seq in 0..PINGS {
        let t = Instant::now();
        f.send(&ServerMsg::Ping { seq }.encode()).await.map_err(|source| SessionError::Io { stage: "ping", source })?;
        match read_msg(&mut f, "pong", t + PING_TIMEOUT).await? {
            ClientMsg::Pong { seq: s } if s == seq => rtt_idle = rtt_idle.min(t.elapsed()),
            other => {
                return Err(refuse(
                    &mut f,
                    RefuseReason::Protocol,
                    Duration::ZERO,
                    format!("expected pong {seq}, got {other:?}"),
                )
                .await)
            }
        }
    }

    // Upload: count what arrives until the client's end marker. The client keeps to the rate
    // cap; reading at the cap holds one that does not to it (TCP flow control).
    f.send(&ServerMsg::StartUpload.encode())
        .await
        .map_err(|source| SessionError::Io { stage: "start upload", source })?;
    let up_start = Instant::now();
    let up_deadline = up_start + Duration::from_secs(up_secs as u64) + drain_grace(up_secs);
    let pacer = Pacer::new(up_start, sh.opts.max_rate_bps);
    let mut up_bytes = 0u64;
    loop {
        let frame = timeout_at(up_deadline, f.read_frame())
            .await
            .map_err(|_| SessionError::Timeout("the end of the upload"))?
            .map_err(|source| SessionError::Frame { stage: "upload", source })?;
        match frame {
            Frame::Data(n) => {
                up_bytes += n as u64;
                pacer.pace(up_bytes).await;
            }
            Frame::Control(h, p) => match ClientMsg::decode(h, p) {
                Ok(ClientMsg::UploadEnd { bytes }) if bytes == up_bytes => break,
                other => {
                    let detail = format!("upload end after {up_bytes} bytes: got {other:?}");
                    return Err(refuse(&mut f, RefuseReason::Protocol, Duration::ZERO, detail).await);
                }
            },
        }
    }
    let up_duration = up_start.elapsed();

    // Download: send for down_secs (or up to the client's cap), then wait for its
    // acknowledgement of every byte.
    let before = TcpInfo::of(f.io.get_ref().0).map_err(|source| SessionError::Io { stage: "TCP_INFO", source })?;
    let down_start = Instant::now();
    let down_end = down_start + Duration::from_secs(down_secs as u64);
    let down_deadline = down_end + drain_grace(down_secs);
    let pacer = Pacer::new(down_start, sh.opts.max_rate_bps);
    let block = data_block();
    let mut sent = 0u64;
    let (mut rtt_sum, mut rtt_samples) = (0u64, 0u64);
    let mut next_sample = down_start + Duration::from_millis(100);
    let send_all = async {
        while Instant::now() < down_end && sent < hello.max_down_bytes {
            let n = (hello.max_down_bytes - sent).min(BLOCK_PAYLOAD as u64) as usize;
            f.send_data(&block, n).await?;
            sent += n as u64;
            pacer.pace(sent).await;
            if Instant::now() >= next_sample {
                if let Ok(i) = TcpInfo::of(f.io.get_ref().0) {
                    rtt_sum += i.rtt_us as u64;
                    rtt_samples += 1;
                }
                next_sample += Duration::from_millis(100);
            }
        }
        f.send(&ServerMsg::DownloadEnd { bytes: sent }.encode()).await
    };
    timeout_at(down_deadline, send_all)
        .await
        .map_err(|_| SessionError::Timeout("the client to take the download"))?
        .map_err(|source| SessionError::Io { stage: "download", source })?;
    let tcp = match read_msg(&mut f, "download acknowledgement", down_deadline).await? {
        ClientMsg::DownloadAck { bytes, tcp } if bytes == sent => tcp,
        other => {
            let detail = format!("download acknowledgement of {sent} bytes: got {other:?}");
            return Err(refuse(&mut f, RefuseReason::Protocol, Duration::ZERO, detail).await);
        }
    };
    let down_duration = down_start.elapsed();
    let after = TcpInfo::of(f.io.get_ref().0).map_err(|source| SessionError::Io { stage: "TCP_INFO", source })?;
    let (retrans, segs) = after.since(&before);
    let rtt_loaded = rtt_sum.checked_div(rtt_samples).unwrap_or(after.rtt_us as u64);

    let m = Measurement {
        server_key: sh.key,
        client: hello.client,
        client_nonce: hello.client_nonce,
        server_nonce,
        path_label: hello.path_label,
        start_unix_ms,
        up_bytes,
        up_duration_us: micros(up_duration),
        down_bytes: sent,
        down_duration_us: micros(down_duration),
        rtt_idle_us: micros(rtt_idle).min(u32::MAX as u64) as u32,
        rtt_loaded_us: rtt_loaded.min(u32::MAX as u64) as u32,
        up_loss_ppm: loss_ppm(tcp.retrans_segs, tcp.data_segs_out),
        down_loss_ppm: loss_ppm(retrans, segs),
    };
    let receipt = m.clone().sign(&sh.identity);
    timeout(STEP_TIMEOUT, async {
        f.send(&ServerMsg::Receipt(Box::new(receipt)).encode()).await?;
        f.io.shutdown().await
    })
    .await
    .map_err(|_| SessionError::Timeout("the receipt to be taken"))?
    .map_err(|source| SessionError::Io { stage: "sending the receipt", source })?;
    Ok(m)
}
