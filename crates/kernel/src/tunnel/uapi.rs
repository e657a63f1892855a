//! The WireGuard cross-platform userspace API ("UAPI"): a line protocol of `key=value` pairs.
//! A request starts with `set=1` or `get=1` and ends with a blank line; the reply to either
//! ends with `errno=N` and a blank line (after the device's state, for `get`).
//!
//! Two dialects of `get` replies exist:
//! - the spec's (wireguard-go, `wg`): `private_key=` and `last_handshake_time_sec`/`_nsec` as a
//!   Unix time, `0`/`0` meaning never;
//! - boringtun's: `own_public_key=` instead of `private_key=`, and `last_handshake_time_sec`
//!   as the time elapsed SINCE the handshake, absent if there was none.
//!
//! [`DeviceState::parse`] recognises the dialect by the key line it finds.

use crate::WgConfig;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};
use tollway_core::WgPublicKey;

/// The allowed IPs of the single peer of every tunnel: everything, so that routing decides.
pub const ALLOWED_IPS: [&str; 2] = ["::/0", "0.0.0.0/0"];

#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("no complete reply within {0:?}")]
    Timeout(Duration),
    #[error("the device closed its control socket")]
    Closed,
    #[error("the device answered errno={0} ({err})", err = io::Error::from_raw_os_error(*.0))]
    Errno(i32),
    #[error("malformed reply line {line:?}: {reason}")]
    Malformed { line: String, reason: &'static str },
    #[error("reply ended without an errno line")]
    Unterminated,
}

/// The `set=1` request that makes a device match `cfg`: private key first (boringtun requires
/// it before any peer), the listen port if `with_port`, `replace_peers=true` (boringtun panics
/// when asked to modify a peer that exists, so the peer is always added afresh), and exactly
/// one peer.
///
/// If the device may have a live peer, remove it first with [`remove_peer_request`]:
/// boringtun's `replace_peers` forgets peers without shutting down the connected UDP socket it
/// opened for each, and that socket keeps capturing the new peer's packets from the same
/// address, so the new peer never completes a handshake.
pub fn set_request(cfg: &WgConfig, with_port: bool) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("set=1\n");
    let _ = writeln!(s, "private_key={}", hex::encode(cfg.private_key));
    if with_port && cfg.listen_port != 0 {
        let _ = writeln!(s, "listen_port={}", cfg.listen_port);
    }
    s.push_str("replace_peers=true\n");
    let _ = writeln!(s, "public_key={}", cfg.peer_key.to_hex());
    if let Some(ep) = cfg.endpoint {
        // Display gives `[fe80::1%3]:51820`: a numeric scope id, which both boringtun and
        // wireguard-go parse.
        let _ = writeln!(s, "endpoint={ep}");
    }
    let _ = writeln!(s, "persistent_keepalive_interval={}", cfg.keepalive_secs);
    s.push_str("replace_allowed_ips=true\n");
    for ip in ALLOWED_IPS {
        let _ = writeln!(s, "allowed_ip={ip}");
    }
    s.push('\n');
    s
}

/// The `set=1` request removing peer `key` (which also shuts down boringtun's connected socket
/// for it). It is a request of its own: boringtun does not reset a peer's flags at the next
/// `public_key=` of the same request, so a peer added after a `remove=true` would be removed too.
pub fn remove_peer_request(key: &WgPublicKey) -> String {
    format!("set=1\npublic_key={}\nremove=true\n\n", key.to_hex())
}

/// Which flavour of `get` reply a device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The published protocol (wireguard-go, kernel via `wg`).
    Spec,
    /// boringtun 0.7.
    Boringtun,
}

/// When the last handshake was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// This long ago (boringtun).
    Ago(Duration),
    /// At this time since the Unix epoch (spec).
    At(Duration),
}

impl Handshake {
    /// Time since the handshake as of `now`; zero if the clock says it is in the future.
    pub fn age(&self, now: SystemTime) -> Duration {
        match *self {
            Handshake::Ago(d) => d,
            Handshake::At(t) => {
                let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                now.saturating_sub(t)
            }
        }
    }
}

/// A peer's endpoint as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UapiEndpoint {
    /// An address with a numeric scope id if any (`[fe80::1%3]:51820`, `192.0.2.1:51820`).
    Addr(SocketAddr),
    /// An IPv6 address with a named zone (`[fe80::1%eth0]:51820`, as wireguard-go may print);
    /// `addr` has scope id 0.
    Zoned { addr: SocketAddrV6, zone: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<UapiEndpoint>,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    pub last_handshake: Option<Handshake>,
    /// Inner (plaintext) bytes, for boringtun.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub protocol_version: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// Spec dialect only.
    pub private_key: Option<[u8; 32]>,
    /// boringtun dialect only.
    pub own_public_key: Option<[u8; 32]>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerState>,
}

/// Raw handshake fields, interpreted once the dialect is known.
#[derive(Default)]
struct RawHandshake {
    sec: Option<u64>,
    nsec: Option<u32>,
}

impl DeviceState {
    /// Parse a `get` reply, recognising the dialect: `own_public_key=` means boringtun,
    /// anything else the spec. (A boringtun device without a key has no peers, so nothing
    /// depends on the dialect then.)
    pub fn parse(reply: &str) -> Result<DeviceState, UapiError> {
        let dialect =
            if reply.lines().any(|l| l.starts_with("own_public_key=")) { Dialect::Boringtun } else { Dialect::Spec };
        DeviceState::parse_as(reply, dialect)
    }

    /// Parse a `get` reply in a known dialect. The reply must end with `errno=0`; a nonzero
    /// errno is [`UapiError::Errno`]. Unknown keys are ignored (the protocol grows).
    pub fn parse_as(reply: &str, dialect: Dialect) -> Result<DeviceState, UapiError> {
        let mut dev = DeviceState::default();
        let mut raw: Vec<RawHandshake> = Vec::new();
        for line in reply.lines() {
            if line.is_empty() {
                continue;
            }
            let bad = |reason| UapiError::Malformed { line: redact(line), reason };
            let (key, value) = line.split_once('=').ok_or_else(|| bad("no '='"))?;
            if key == "errno" {
                let errno: i32 = value.parse().map_err(|_| bad("errno is not a number"))?;
                if errno != 0 {
                    return Err(UapiError::Errno(errno));
                }
                for (peer, h) in dev.peers.iter_mut().zip(raw) {
                    peer.last_handshake = h.resolve(dialect);
                }
                return Ok(dev);
            }
            if key == "public_key" {
                dev.peers.push(PeerState {
                    public_key: parse_key(value).ok_or_else(|| bad("bad key"))?,
                    ..Default::default()
                });
                raw.push(RawHandshake::default());
                continue;
            }
            match (dev.peers.last_mut(), raw.last_mut()) {
                (None, _) | (_, None) => match key {
                    "private_key" => dev.private_key = Some(parse_key(value).ok_or_else(|| bad("bad key"))?),
                    "own_public_key" => dev.own_public_key = Some(parse_key(value).ok_or_else(|| bad("bad key"))?),
                    "listen_port" => dev.listen_port = Some(value.parse().map_err(|_| bad("bad port"))?),
                    "fwmark" => dev.fwmark = Some(value.parse().map_err(|_| bad("bad fwmark"))?),
                    _ if is_peer_key(key) => return Err(bad("peer attribute before any public_key")),
                    _ => {}
                },
                (Some(peer), Some(h)) => match key {
                    "preshared_key" => {
                        let k = parse_key(value).ok_or_else(|| bad("bad key"))?;
                        // The spec reports an unset preshared key as all zeros.
                        peer.preshared_key = (k != [0u8; 32]).then_some(k);
                    }
                    "endpoint" => peer.endpoint = Some(parse_endpoint(value).ok_or_else(|| bad("bad endpoint"))?),
                    "persistent_keepalive_interval" => {
                        let k: u16 = value.parse().map_err(|_| bad("bad keepalive"))?;
                        peer.persistent_keepalive = (k != 0).then_some(k);
                    }
                    "allowed_ip" => peer.allowed_ips.push(parse_cidr(value).ok_or_else(|| bad("bad allowed ip"))?),
                    "last_handshake_time_sec" => h.sec = Some(value.parse().map_err(|_| bad("bad seconds"))?),
                    "last_handshake_time_nsec" => {
                        let n: u32 = value.parse().map_err(|_| bad("bad nanoseconds"))?;
                        if n >= 1_000_000_000 {
                            return Err(bad("nanoseconds out of range"));
                        }
                        h.nsec = Some(n);
                    }
                    "rx_bytes" => peer.rx_bytes = value.parse().map_err(|_| bad("bad byte count"))?,
                    "tx_bytes" => peer.tx_bytes = value.parse().map_err(|_| bad("bad byte count"))?,
                    "protocol_version" => peer.protocol_version = Some(value.parse().map_err(|_| bad("bad version"))?),
                    "private_key" | "own_public_key" | "listen_port" | "fwmark" => {
                        return Err(bad("device attribute after a peer"))
                    }
                    _ => {}
                },
            }
        }
        Err(UapiError::Unterminated)
    }

    /// The peer with public key `key`.
    pub fn peer(&self, key: &[u8; 32]) -> Option<&PeerState> {
        self.peers.iter().find(|p| &p.public_key == key)
    }
}

impl RawHandshake {
    fn resolve(&self, dialect: Dialect) -> Option<Handshake> {
        let sec = self.sec?;
        let d = Duration::new(sec, self.nsec.unwrap_or(0));
        match dialect {
            Dialect::Boringtun => Some(Handshake::Ago(d)),
            Dialect::Spec if d.is_zero() => None,
            Dialect::Spec => Some(Handshake::At(d)),
        }
    }
}

/// A reply line fit for an error message: secret keys' values are left out.
fn redact(line: &str) -> String {
    match line.split_once('=') {
        Some((k @ ("private_key" | "preshared_key"), _)) => format!("{k}=(redacted)"),
        _ => line.to_string(),
    }
}

fn is_peer_key(key: &str) -> bool {
    matches!(
        key,
        "preshared_key"
            | "endpoint"
            | "persistent_keepalive_interval"
            | "allowed_ip"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec"
            | "rx_bytes"
            | "tx_bytes"
            | "protocol_version"
    )
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(s, &mut k).ok()?;
    Some(k)
}

fn parse_endpoint(s: &str) -> Option<UapiEndpoint> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(UapiEndpoint::Addr(a));
    }
    // `[ip%zone]:port` with a zone name.
    let rest = s.strip_prefix('[')?;
    let (host, port) = rest.split_once("]:")?;
    let (ip, zone) = host.split_once('%')?;
    if zone.is_empty() {
        return None;
    }
    let addr = SocketAddrV6::new(ip.parse().ok()?, port.parse().ok()?, 0, 0);
    Some(UapiEndpoint::Zoned { addr, zone: zone.to_string() })
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// The errno of a `set` reply.
pub fn parse_errno(reply: &str) -> Result<i32, UapiError> {
    for line in reply.lines() {
        if let Some(v) = line.strip_prefix("errno=") {
            return v
                .parse()
                .map_err(|_| UapiError::Malformed { line: line.to_string(), reason: "errno is not a number" });
        }
    }
    Err(UapiError::Unterminated)
}

/// Our end of a device's control socket.
pub struct UapiClient {
    stream: UnixStream,
    timeout: Duration,
}

impl UapiClient {
    pub fn new(stream: UnixStream, timeout: Duration) -> io::Result<UapiClient> {
        stream.set_read_timeout(Some(timeout))?;
        Ok(UapiClient { stream, timeout })
    }

    /// Apply a `set=1` request (as built by [`set_request`]).
    pub fn set(&mut self, request: &str) -> Result<(), UapiError> {
        let reply = self.transact(request)?;
        match parse_errno(&reply)? {
            0 => Ok(()),
            e => Err(UapiError::Errno(e)),
        }
    }

    /// Read the device's state.
    pub fn get(&mut self) -> Result<DeviceState, UapiError> {
        let reply = self.transact("get=1\n\n")?;
        DeviceState::parse(&reply)
    }

    /// Send one request in a single write (boringtun reads a request with a fresh buffered
    /// reader per wake-up, so a request split across writes could be misread) and read until
    /// the blank line that ends the reply.
    fn transact(&mut self, request: &str) -> Result<String, UapiError> {
        self.drain_stale()?;
        send_all(&self.stream, request.as_bytes())?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        while !reply_complete(&buf) {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(UapiError::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(UapiError::Timeout(self.timeout))
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline && !reply_complete(&buf) {
                return Err(UapiError::Timeout(self.timeout));
            }
        }
        String::from_utf8(buf).map_err(|e| UapiError::Malformed {
            line: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "not UTF-8",
        })
    }

    /// Discard anything left from an earlier exchange (a reply that arrived after we gave up
    /// waiting), so that it is not taken for the answer to the next request.
    fn drain_stale(&mut self) -> Result<(), UapiError> {
        let mut chunk = [0u8; 1024];
        loop {
            // SAFETY: `chunk` is valid for writes of its length.
            let n = unsafe {
                libc::recv(self.stream.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT)
            };
            match n {
                0 => return Err(UapiError::Closed),
                n if n > 0 => tracing::debug!(bytes = n, "discarding a stale UAPI reply"),
                _ => {
                    let e = io::Error::last_os_error();
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(()),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(e.into()),
                    };
                }
            }
        }
    }
}

/// `send` with `MSG_NOSIGNAL`: a device that went away gives `EPIPE`, not a SIGPIPE.
fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// A reply is complete once an `errno=` line has been followed by the blank line.
fn reply_complete(buf: &[u8]) -> bool {
    if !buf.ends_with(b"\n\n") {
        return false;
    }
    buf.starts_with(b"errno=") || buf.windows(7).any(|w| w == b"\nerrno=")
}

#[cfg(test)]
#[path = "uapi_tests.rs"]
mod tests;
