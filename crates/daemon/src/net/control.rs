//! Control sessions: TCP inside tunnels, between tunnel link-local addresses. These tasks only
//! frame and parse; the handshake and everything after it is the core's.
//!
//! Bounds: frames over `MAX_FRAME` close the session before being buffered; each session may
//! deliver at most `MSG_RATE` messages per second (burst `MSG_BURST`); connections that do not
//! arrive through an interface (link-local with scope) are dropped before a byte is read.

use crate::driver::Input;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tollway_core::wire::control::{ControlMessage, FrameDecoder};
use tollway_core::{IfName, SessionId};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MSG_RATE: f64 = 50.0;
const MSG_BURST: f64 = 200.0;

/// What the driver sends down a session.
#[derive(Debug)]
pub enum Outbound {
    Message(ControlMessage),
    Close,
}

/// Accept control connections on `port` for as long as the driver lives.
pub async fn listen(port: u16, to_driver: Sender<Input>) -> std::io::Result<()> {
    let listener =
        TcpListener::bind(SocketAddr::from(SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0))).await?;
    tracing::info!(port, "control sessions listening");
    let next = Arc::new(AtomicU64::new(1));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let SocketAddr::V6(peer) = peer else { continue };
            let ifname = (peer.scope_id() != 0).then(|| super::if_name(peer.scope_id())).flatten();
            let Some(ifname) = ifname else {
                tracing::warn!(%peer, "control connection not from a link-local tunnel address; dropped");
                continue;
            };
            let session = SessionId(SessionId::ACCEPTED_BIT | next.fetch_add(1, Ordering::Relaxed));
            let (tx, rx) = unbounded_channel();
            let input = Input::ControlAccepted { session, ifname, peer, outbound: tx };
            if to_driver.send(input).is_err() {
                return;
            }
            tokio::spawn(run_session(stream, session, to_driver.clone(), rx));
        }
    });
    Ok(())
}

/// Opens the sessions the core asks for as tasks on the I/O runtime.
pub struct TokioSessions {
    pub runtime: tokio::runtime::Handle,
    pub to_driver: Sender<Input>,
}

impl crate::driver::SessionOpener for TokioSessions {
    fn open(
        &mut self,
        session: SessionId,
        ifname: IfName,
        local: std::net::Ipv6Addr,
        peer: SocketAddrV6,
        outbound: UnboundedReceiver<Outbound>,
    ) {
        let _guard = self.runtime.enter();
        connect(session, ifname, local, peer, self.to_driver.clone(), outbound);
    }
}

/// Open a session the core asked for, from our derived link-local address on the tunnel
/// (`local`). The driver keeps the sending end of `rx`.
pub fn connect(
    session: SessionId,
    ifname: IfName,
    local: std::net::Ipv6Addr,
    peer: SocketAddrV6,
    to_driver: Sender<Input>,
    rx: UnboundedReceiver<Outbound>,
) {
    tokio::spawn(async move {
        let Some(scope) = super::if_index(&ifname) else {
            let _ =
                to_driver.send(Input::ControlClosed { session, reason: format!("tunnel interface {ifname} missing") });
            return;
        };
        let addr = SocketAddrV6::new(*peer.ip(), peer.port(), 0, scope);
        let connect = async {
            let sock = tokio::net::TcpSocket::new_v6()?;
            sock.bind(SocketAddr::V6(SocketAddrV6::new(local, 0, 0, scope)))?;
            sock.connect(SocketAddr::V6(addr)).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => {
                if to_driver.send(Input::ControlOpened { session }).is_ok() {
                    run_session(stream, session, to_driver, rx).await;
                }
            }
            Ok(Err(e)) => {
                let _ = to_driver.send(Input::ControlClosed { session, reason: format!("connect to {addr}: {e}") });
            }
            Err(_) => {
                let _ =
                    to_driver.send(Input::ControlClosed { session, reason: format!("connect to {addr}: timed out") });
            }
        }
    });
}

async fn run_session(
    stream: TcpStream,
    session: SessionId,
    to_driver: Sender<Input>,
    mut rx: UnboundedReceiver<Outbound>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let inbound = {
        let to_driver = to_driver.clone();
        async move {
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut tokens = MSG_BURST;
            let mut last = Instant::now();
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) => return "connection closed by neighbor".to_string(),
                    Ok(n) => n,
                    Err(e) => return format!("read: {e}"),
                };
                dec.push(&buf[..n]);
                loop {
                    let frame = match dec.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return format!("bad frame: {e}"),
                    };
                    let msg = match ControlMessage::decode(&frame) {
                        Ok(m) => m,
                        Err(e) => return format!("bad message: {e}"),
                    };
                    let now = Instant::now();
                    tokens = (tokens + now.duration_since(last).as_secs_f64() * MSG_RATE).min(MSG_BURST);
                    last = now;
                    if tokens < 1.0 {
                        return format!("more than {MSG_RATE} messages per second");
                    }
                    tokens -= 1.0;
                    if to_driver.send(Input::ControlMessage { session, msg }).is_err() {
                        return "daemon stopping".into();
                    }
                }
            }
        }
    };
    let outbound = async move {
        while let Some(o) = rx.recv().await {
            match o {
                Outbound::Message(m) => {
                    if let Err(e) = writer.write_all(&m.encode_frame()).await {
                        return Some(format!("write: {e}"));
                    }
                }
                Outbound::Close => {
                    let _ = writer.shutdown().await;
                    return None;
                }
            }
        }
        None
    };
    let reason = tokio::select! {
        r = inbound => Some(r),
        r = outbound => r,
    };
    if let Some(reason) = reason {
        tracing::debug!(session = session.0, %reason, "control connection ended");
        let _ = to_driver.send(Input::ControlClosed { session, reason });
    }
}
