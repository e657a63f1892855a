//! The client: one test against a pinned server, ending with a verified receipt.

use crate::framed::{data_block, Frame, FrameError, Framed, Pacer, BLOCK_PAYLOAD};
use crate::proto::{
    client_transcript, ClientMsg, Hello, RefuseReason, ServerMsg, TcpCounters, EXPORTER_LABEL, PROTOCOL_VERSION,
};
use crate::receipt::{ReceiptError, VerifiedReceipt};
use crate::server::{drain_grace, STEP_TIMEOUT};
use crate::tcpinfo::TcpInfo;
use crate::tls::{client_config, PinnedKeyVerifier, TlsSetupError, SERVER_NAME};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tollway_core::{Identity, NodeId};

/// What to test.
#[derive(Debug, Clone)]
pub struct TestSpec {
    pub server: SocketAddr,
    /// The server's Ed25519 key, pinned: the session fails unless the server proves it holds it.
    pub server_key: NodeId,
    /// Source address (e.g. the probe address that routes the test through one neighbor).
    pub bind: Option<IpAddr>,
    /// Firewall mark of the connection (`SO_MARK`, needs CAP_NET_ADMIN): a policy rule for it
    /// can send the test's packets out through one neighbor.
    pub mark: Option<u32>,
    /// The node running the test (signs to prove it; named in the receipt).
    pub identity: Identity,
    /// Named in the receipt (e.g. the node id of the neighbor tested through).
    pub path_label: [u8; 32],
    /// Asked for; the server may grant less (its `max_secs`).
    pub up_secs: u16,
    pub down_secs: u16,
    /// The most bytes to move in each direction (a test through a paid neighbor costs money).
    pub max_bytes: u64,
}

/// Why a test gave no receipt. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("speed test {server}: {what}: {source}")]
    Io { server: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("speed test {server}: timed out {what}")]
    Timeout { server: SocketAddr, what: &'static str },
    #[error("speed test {server}: the server's key is {presented}, not the pinned {pinned}")]
    WrongServerKey { server: SocketAddr, pinned: NodeId, presented: NodeId },
    #[error("speed test {server}: TLS handshake failed: {source}")]
    Tls { server: SocketAddr, source: std::io::Error },
    #[error("speed test {server}: refused: {reason}: {detail}{}", retry(*retry_after_secs))]
    Refused { server: SocketAddr, reason: RefuseReason, retry_after_secs: u16, detail: String },
    #[error("speed test {server}: protocol error: {what}")]
    Protocol { server: SocketAddr, what: String },
    #[error("speed test {server}: {source}")]
    Receipt { server: SocketAddr, source: ReceiptError },
    #[error("speed test {server}: {source}")]
    Setup { server: SocketAddr, source: TlsSetupError },
}

fn retry(secs: u16) -> String {
    if secs > 0 {
        format!(" (retry in {secs} s)")
    } else {
        String::new()
    }
}

struct Session {
    f: Framed<TlsStream<TcpStream>>,
    server: SocketAddr,
}

impl Session {
    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> TestError {
        let server = self.server;
        move |source| TestError::Io { server, what, source }
    }

    fn protocol(&self, what: String) -> TestError {
        TestError::Protocol { server: self.server, what }
    }

    async fn send(&mut self, m: ClientMsg, what: &'static str) -> Result<(), TestError> {
        let e = self.io(what);
        self.f.send(&m.encode()).await.map_err(e)
    }

    fn frame_error(&self, what: &'static str, e: FrameError) -> TestError {
        match e {
            FrameError::Closed => self.protocol(format!("the server closed the session while {what}")),
            FrameError::Io(source) => TestError::Io { server: self.server, what, source },
            FrameError::Decode(d) => self.protocol(format!("{what}: {d}")),
        }
    }

    /// The next control message (a Refused becomes an error).
    async fn recv(&mut self, what: &'static str, deadline: Instant) -> Result<ServerMsg, TestError> {
        let server = self.server;
        let frame = match timeout_at(deadline, self.f.read_frame()).await {
            Err(_) => return Err(TestError::Timeout { server, what }),
            Ok(Err(e)) => return Err(self.frame_error(what, e)),
            Ok(Ok(f)) => f,
        };
        let msg = match frame {
            Frame::Data(_) => {
                return Err(TestError::Protocol { server, what: format!("unexpected data while {what}") })
            }
            Frame::Control(h, p) => {
                ServerMsg::decode(h, p).map_err(|e| TestError::Protocol { server, what: format!("{what}: {e}") })?
            }
        };
        match msg {
            ServerMsg::Refused { reason, retry_after_secs, detail } => {
                Err(TestError::Refused { server, reason, retry_after_secs, detail })
            }
            m => Ok(m),
        }
    }
}

async fn connect(spec: &TestSpec) -> Result<TcpStream, TestError> {
    let server = spec.server;
    let io = |what| move |source| TestError::Io { server, what, source };
    let socket = if server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io("socket"))?;
    if let Some(mark) = spec.mark {
        socket2::SockRef::from(&socket).set_mark(mark).map_err(io("marking the socket (SO_MARK)"))?;
    }
    if let Some(ip) = spec.bind {
        socket.bind(SocketAddr::new(ip, 0)).map_err(io("binding the source address"))?;
    }
    let tcp = timeout(STEP_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| TestError::Timeout { server, what: "connecting" })?
        .map_err(io("connecting"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Run one test; the receipt is verified against the pinned key, our nonce, our id and the
/// path label before it is returned.
pub async fn run_test(spec: TestSpec) -> Result<VerifiedReceipt, TestError> {
    let server = spec.server;
    let overall = Duration::from_secs(spec.up_secs as u64 + spec.down_secs as u64)
        + drain_grace(spec.up_secs)
        + drain_grace(spec.down_secs)
        + 4 * STEP_TIMEOUT;
    timeout(overall, run(&spec)).await.map_err(|_| TestError::Timeout { server, what: "(the whole test)" })?
}

async fn run(spec: &TestSpec) -> Result<VerifiedReceipt, TestError> {
    let server = spec.server;
    let tcp = connect(spec).await?;
    let verifier = PinnedKeyVerifier::new(spec.server_key);
    let cfg = client_config(verifier.clone()).map_err(|source| TestError::Setup { server, source })?;
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a valid name");
    let tls = match timeout(STEP_TIMEOUT, TlsConnector::from(Arc::new(cfg)).connect(name, tcp)).await {
        Err(_) => return Err(TestError::Timeout { server, what: "in the TLS handshake" }),
        Ok(Err(source)) => {
            return Err(match verifier.presented() {
                Some(Ok(presented)) if presented != spec.server_key => {
                    TestError::WrongServerKey { server, pinned: spec.server_key, presented }
                }
                _ => TestError::Tls { server, source },
            })
        }
        Ok(Ok(t)) => t,
    };
    let mut exporter = [0u8; 32];
    tls.get_ref().1.export_keying_material(&mut exporter, EXPORTER_LABEL, None).map_err(|e| TestError::Io {
        server,
        what: "TLS exporter",
        source: std::io::Error::other(e),
    })?;
    let mut s = Session { f: Framed::new(tls, false), server };

    let mut client_nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut client_nonce);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: spec.identity.node_id(),
        client_nonce,
        path_label: spec.path_label,
        up_secs: spec.up_secs,
        down_secs: spec.down_secs,
        max_down_bytes: spec.max_bytes,
    };
    s.send(ClientMsg::Hello(hello.clone()), "sending hello").await?;
    let (server_nonce, up_secs, down_secs, max_rate_kbit) =
        match s.recv("waiting for the challenge", Instant::now() + STEP_TIMEOUT).await? {
            ServerMsg::Challenge { version, server_nonce, up_secs, down_secs, max_rate_kbit }
                if version == PROTOCOL_VERSION && up_secs <= spec.up_secs && down_secs <= spec.down_secs =>
            {
                (server_nonce, up_secs, down_secs, max_rate_kbit)
            }
            other => return Err(s.protocol(format!("expected a challenge, got {other:?}"))),
        };
    let signature = spec.identity.sign(&client_transcript(&spec.server_key, &hello, &server_nonce, &exporter));
    s.send(ClientMsg::Auth { signature }, "sending auth").await?;

    // Answer pings until told to upload.
    loop {
        match s.recv("waiting for pings", Instant::now() + STEP_TIMEOUT).await? {
            ServerMsg::Ping { seq } => s.send(ClientMsg::Pong { seq }, "answering a ping").await?,
            ServerMsg::StartUpload => break,
            other => return Err(s.protocol(format!("expected a ping or the upload to start, got {other:?}"))),
        }
    }

    // Upload.
    let before = TcpInfo::of(s.f.io.get_ref().0).map_err(s.io("TCP_INFO"))?;
    let block = data_block();
    let up_start = Instant::now();
    let up_end = up_start + Duration::from_secs(up_secs as u64);
    // Keep to the server's cap: sending faster would only fill the buffers, which then take
    // time to drain after the granted seconds.
    let pacer = Pacer::new(up_start, (max_rate_kbit > 0).then_some(max_rate_kbit as u64 * 1000));
    let mut up_bytes = 0u64;
    while Instant::now() < up_end && up_bytes < spec.max_bytes {
        let n = (spec.max_bytes - up_bytes).min(BLOCK_PAYLOAD as u64) as usize;
        let e = s.io("uploading");
        match timeout_at(up_end + drain_grace(up_secs), s.f.send_data(&block, n)).await {
            Err(_) => return Err(TestError::Timeout { server, what: "uploading" }),
            Ok(r) => r.map_err(e)?,
        }
        up_bytes += n as u64;
        pacer.pace(up_bytes).await;
    }
    s.send(ClientMsg::UploadEnd { bytes: up_bytes }, "ending the upload").await?;

    // Download.
    let down_deadline =
        Instant::now() + drain_grace(up_secs) + Duration::from_secs(down_secs as u64) + drain_grace(down_secs);
    let mut down_bytes = 0u64;
    loop {
        let frame = match timeout_at(down_deadline, s.f.read_frame()).await {
            Err(_) => return Err(TestError::Timeout { server, what: "downloading" }),
            Ok(Err(e)) => return Err(s.frame_error("downloading", e)),
            Ok(Ok(f)) => f,
        };
        match frame {
            Frame::Data(n) => down_bytes += n as u64,
            Frame::Control(h, p) => match ServerMsg::decode(h, p) {
                Ok(ServerMsg::DownloadEnd { bytes }) if bytes == down_bytes => break,
                Ok(ServerMsg::Refused { reason, retry_after_secs, detail }) => {
                    return Err(TestError::Refused { server, reason, retry_after_secs, detail })
                }
                other => return Err(s.protocol(format!("download end after {down_bytes} bytes: got {other:?}"))),
            },
        }
        if down_bytes > spec.max_bytes {
            return Err(
                s.protocol(format!("the server sent {down_bytes} bytes, more than the {} asked", spec.max_bytes))
            );
        }
    }
    let after = TcpInfo::of(s.f.io.get_ref().0).map_err(s.io("TCP_INFO"))?;
    let (retrans_segs, data_segs_out) = after.since(&before);
    s.send(
        ClientMsg::DownloadAck { bytes: down_bytes, tcp: TcpCounters { data_segs_out, retrans_segs } },
        "acknowledging the download",
    )
    .await?;

    let receipt = match s.recv("waiting for the receipt", Instant::now() + STEP_TIMEOUT).await? {
        ServerMsg::Receipt(r) => *r,
        other => return Err(s.protocol(format!("expected the receipt, got {other:?}"))),
    };
    let _ = timeout(Duration::from_secs(2), s.f.io.shutdown()).await;
    let verified = receipt
        .verify(&spec.server_key, &client_nonce, &spec.identity.node_id(), &spec.path_label)
        .map_err(|source| TestError::Receipt { server, source })?;
    let m = verified.measurement();
    if m.up_bytes != up_bytes || m.down_bytes != down_bytes {
        return Err(s.protocol(format!(
            "the receipt says {} bytes up and {} down; we sent {up_bytes} and received {down_bytes}",
            m.up_bytes, m.down_bytes
        )));
    }
    Ok(verified)
}
