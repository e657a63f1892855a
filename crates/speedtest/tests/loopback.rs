//! Client and server in one process over loopback: real TCP, real TLS sessions, real receipts.
//! The relays in the middle stand for a forwarder on the path (a neighbor routing the test):
//! they carry the bytes, and may slow them down or alter them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tollway_core::{Identity, NodeId};
use tollway_speedtest::framed::{Frame, Framed};
use tollway_speedtest::proto::{client_transcript, ClientMsg, Hello, RefuseReason, ServerMsg, EXPORTER_LABEL};
use tollway_speedtest::{run_test, Receipt, Server, ServerOptions, TestError, TestSpec};

/// Tests that move bulk data take this, so that they do not compete for the two cores.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Running {
    addr: SocketAddr,
    key: NodeId,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.task).await.expect("server stops").unwrap();
    }
}

async fn start(ip: IpAddr, opts: ServerOptions) -> Running {
    let identity = Identity::from_seed(&rand::random());
    let server = Server::bind(identity, SocketAddr::new(ip, 0), opts).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let key = server.key();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running { addr, key, stop: Some(tx), task }
}

fn spec(server: SocketAddr, key: NodeId, secs: u16) -> TestSpec {
    TestSpec {
        server,
        server_key: key,
        bind: None,
        mark: None,
        identity: Identity::from_seed(&rand::random()),
        path_label: rand::random(),
        up_secs: secs,
        down_secs: secs,
        max_bytes: u64::MAX,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_over_loopback_gives_a_verified_receipt_with_plausible_figures() {
    let _heavy = HEAVY.lock().await;
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let srv = start(ip, ServerOptions { max_rate_bps: Some(200_000_000), ..Default::default() }).await;
        let s = spec(srv.addr, srv.key, 2);
        let t0 = std::time::Instant::now();
        let v = run_test(s.clone()).await.unwrap_or_else(|e| panic!("{ip}: {e}"));
        let took = t0.elapsed();
        let m = v.measurement();
        assert_eq!(m.server_key, srv.key);
        assert_eq!(m.client, s.identity.node_id());
        assert_eq!(m.path_label, s.path_label);
        // Each direction lasted its two seconds (plus draining), and moved data near the
        // server's 200 Mbit/s cap.
        for (dir, us, bps) in [("up", m.up_duration_us, m.up_bps()), ("down", m.down_duration_us, m.down_bps())] {
            assert!((1_900_000..6_000_000).contains(&us), "{ip} {dir}: {us} µs");
            assert!(bps > 50e6 && bps < 210e6, "{ip} {dir}: {:.1} Mbit/s", bps / 1e6);
        }
        assert!(m.rtt_idle_us > 0 && m.rtt_idle_us < 100_000, "{ip}: idle rtt {} µs", m.rtt_idle_us);
        assert!(m.rtt_loaded_us > 0 && m.rtt_loaded_us < 1_000_000, "{ip}: loaded rtt {} µs", m.rtt_loaded_us);
        assert!(m.up_loss_ppm < 10_000 && m.down_loss_ppm < 10_000, "{ip}: {m:?}");
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(m.start_unix_ms <= now_ms && m.start_unix_ms + took.as_millis() as u64 + 1000 >= now_ms);
        // The receipt stands on its own: encoded, decoded, verified again.
        let bytes = v.receipt().encode();
        let nonce = m.client_nonce;
        Receipt::decode_and_verify(&bytes, &srv.key, &nonce, &s.identity.node_id(), &s.path_label).unwrap();
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinning_another_key_fails_with_a_clear_error() {
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    let wrong = Identity::from_seed(&[9; 32]).node_id();
    let err = run_test(spec(srv.addr, wrong, 1)).await.unwrap_err();
    match &err {
        TestError::WrongServerKey { server, pinned, presented } => {
            assert_eq!((*server, *pinned, *presented), (srv.addr, wrong, srv.key));
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&srv.key.to_string()) && text.contains(&wrong.to_string()), "{text}");
    srv.stop().await;
}

/// A TCP relay between a listener and `to`. Each direction goes through `carry`.
async fn relay<F, Fut>(to: SocketAddr, carry: F) -> SocketAddr
where
    F: Fn(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf, bool) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let carry = Arc::new(carry);
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let Ok(s) = TcpStream::connect(to).await else { continue };
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            tokio::spawn(carry(cr, sw, true));
            tokio::spawn(carry(sr, cw, false));
        }
    });
    addr
}

/// Carry bytes at most at `bps`, like a bottleneck link: time left idle is not saved up for
/// a later burst (beyond 4 KiB).
async fn throttled(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, bps: f64) {
    let mut next = tokio::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        next = next.max(tokio::time::Instant::now()) + Duration::from_secs_f64(n as f64 * 8.0 / bps);
        tokio::time::sleep_until(next).await;
    }
    let _ = w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_relay_gives_a_slower_receipt_that_still_verifies() {
    let _heavy = HEAVY.lock().await;
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    // The forwarder carries 8 Mbit/s each way.
    let via = relay(srv.addr, |r, w, _| throttled(r, w, 8e6)).await;
    let v =
        run_test(TestSpec { server: via, ..spec(srv.addr, srv.key, 3) }).await.expect("a receipt through the relay");
    let m = v.measurement();
    for (dir, bps) in [("up", m.up_bps()), ("down", m.down_bps())] {
        // What the relay really carried, less TLS and framing overhead; never more.
        assert!(bps <= 8e6 && bps > 5e6, "{dir}: {:.2} Mbit/s through an 8 Mbit/s relay", bps / 1e6);
    }
    srv.stop().await;
}

/// Carry bytes, but flip one bit of the byte at `at` (counted in this direction).
async fn tamper(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, at: Option<u64>) {
    let mut seen = 0u64;
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Some(at) = at {
            if (seen..seen + n as u64).contains(&at) {
                buf[(at - seen) as usize] ^= 0x01;
            }
        }
        seen += n as u64;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_alters_bytes_breaks_the_session_and_gets_no_receipt() {
    let _heavy = HEAVY.lock().await;
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    // Flip a bit in the upload (client → server), then in the download (server → client), each
    // well past the handshake.
    for upstream in [true, false] {
        let via =
            relay(srv.addr, move |r, w, to_server| tamper(r, w, (to_server == upstream).then_some(200_000))).await;
        let err = run_test(TestSpec { server: via, ..spec(srv.addr, srv.key, 1) }).await.unwrap_err();
        // The session breaks (TLS detects the change); no figures come back.
        assert!(
            matches!(err, TestError::Io { .. } | TestError::Protocol { .. }),
            "altered {}: {err}",
            if upstream { "upload" } else { "download" }
        );
    }
    // The same relay without tampering carries a whole test.
    let via = relay(srv.addr, |r, w, _| tamper(r, w, None)).await;
    run_test(TestSpec { server: via, ..spec(srv.addr, srv.key, 1) }).await.expect("an honest relay");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_shortens_long_tests_and_caps_their_rate() {
    let _heavy = HEAVY.lock().await;
    let opts = ServerOptions { max_secs: 1, max_rate_bps: Some(20_000_000), ..Default::default() };
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), opts).await;
    let v = run_test(spec(srv.addr, srv.key, 5)).await.unwrap();
    let m = v.measurement();
    for (dir, us, bps) in [("up", m.up_duration_us, m.up_bps()), ("down", m.down_duration_us, m.down_bps())] {
        assert!(us < 2_500_000, "{dir}: asked 5 s, server allows 1 s, took {us} µs");
        assert!(bps < 22e6 && bps > 10e6, "{dir}: {:.1} Mbit/s with a 20 Mbit/s cap", bps / 1e6);
    }
    // The client's byte cap holds both ways.
    let v = run_test(TestSpec { max_bytes: 100_000, ..spec(srv.addr, srv.key, 1) }).await.unwrap();
    assert_eq!((v.measurement().up_bytes, v.measurement().down_bytes), (100_000, 100_000));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_rate_limited_clients_are_refused_with_a_reason() {
    let _heavy = HEAVY.lock().await;
    let opts =
        ServerOptions { max_clients: 1, tests_per_minute: 2, max_rate_bps: Some(10_000_000), ..Default::default() };
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), opts).await;
    let first = tokio::spawn(run_test(spec(srv.addr, srv.key, 2)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    match run_test(spec(srv.addr, srv.key, 1)).await.unwrap_err() {
        TestError::Refused { reason: RefuseReason::Busy, retry_after_secs, detail, .. } => {
            assert!(retry_after_secs > 0 && detail.contains("1 test slots"), "{detail}");
        }
        other => panic!("{other}"),
    }
    first.await.unwrap().expect("the first test is not disturbed");
    // One node, three tests in a row, two allowed a minute.
    let me = spec(srv.addr, srv.key, 0);
    run_test(me.clone()).await.unwrap();
    run_test(me.clone()).await.unwrap();
    match run_test(me.clone()).await.unwrap_err() {
        e @ TestError::Refused { reason: RefuseReason::RateLimited, .. } => {
            assert!(e.to_string().contains("retry in"), "{e}")
        }
        other => panic!("{other}"),
    }
    srv.stop().await;
}

/// A hand-made client session up to the server's challenge.
async fn raw_session(srv: &Running) -> (Framed<tokio_rustls::client::TlsStream<TcpStream>>, [u8; 32]) {
    let verifier = tollway_speedtest::tls::PinnedKeyVerifier::new(srv.key);
    let cfg = tollway_speedtest::tls::client_config(verifier).unwrap();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("x").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    let mut exporter = [0u8; 32];
    tls.get_ref().1.export_keying_material(&mut exporter, EXPORTER_LABEL, None).unwrap();
    (Framed::new(tls, false), exporter)
}

async fn next_msg(f: &mut Framed<tokio_rustls::client::TlsStream<TcpStream>>) -> ServerMsg {
    match tokio::time::timeout(Duration::from_secs(10), f.read_frame()).await.unwrap().unwrap() {
        Frame::Control(h, p) => ServerMsg::decode(h, p).unwrap(),
        Frame::Data(_) => panic!("data"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_claiming_another_node_id_is_refused() {
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    let me = Identity::from_seed(&[1; 32]);
    let victim = Identity::from_seed(&[2; 32]).node_id();
    let (mut f, exporter) = raw_session(&srv).await;
    let hello = Hello {
        version: 1,
        client: victim,
        client_nonce: [3; 32],
        path_label: [4; 32],
        up_secs: 1,
        down_secs: 1,
        max_down_bytes: u64::MAX,
    };
    f.send(&ClientMsg::Hello(hello.clone()).encode()).await.unwrap();
    let ServerMsg::Challenge { server_nonce, .. } = next_msg(&mut f).await else { panic!("no challenge") };
    // Signed with our key, not the victim's.
    let signature = me.sign(&client_transcript(&srv.key, &hello, &server_nonce, &exporter));
    f.send(&ClientMsg::Auth { signature }.encode()).await.unwrap();
    match next_msg(&mut f).await {
        ServerMsg::Refused { reason: RefuseReason::AuthFailed, detail, .. } => {
            assert!(detail.contains(&victim.to_string()))
        }
        other => panic!("{other:?}"),
    }
    // A signature made for another session (another TLS exporter value) does not pass either.
    let (mut f, _) = raw_session(&srv).await;
    let hello = Hello { client: me.node_id(), ..hello };
    f.send(&ClientMsg::Hello(hello.clone()).encode()).await.unwrap();
    let ServerMsg::Challenge { server_nonce, .. } = next_msg(&mut f).await else { panic!("no challenge") };
    let signature = me.sign(&client_transcript(&srv.key, &hello, &server_nonce, &[0; 32]));
    f.send(&ClientMsg::Auth { signature }.encode()).await.unwrap();
    assert!(matches!(next_msg(&mut f).await, ServerMsg::Refused { reason: RefuseReason::AuthFailed, .. }));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_the_server_keeps_serving() {
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    // Not TLS at all: the server closes the connection.
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await.expect("closed");
    // TLS, then a frame type the client may not send: refused with the reason.
    let (mut f, _) = raw_session(&srv).await;
    f.send(&[0x86, 0x00, 0x01, 0x00]).await.unwrap();
    match next_msg(&mut f).await {
        ServerMsg::Refused { reason: RefuseReason::Protocol, detail, .. } => {
            assert!(detail.contains("unknown message type 0x86"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // TLS, then a hello that is cut short: the same.
    let (mut f, _) = raw_session(&srv).await;
    f.send(&[0x01, 0x00, 0x02, 0x01, 0x02]).await.unwrap();
    assert!(matches!(next_msg(&mut f).await, ServerMsg::Refused { reason: RefuseReason::Protocol, .. }));
    // And then a real test still works.
    run_test(spec(srv.addr, srv.key, 0)).await.expect("served after the garbage");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_when_asked_and_closes_its_port() {
    let srv = start(IpAddr::V4(Ipv4Addr::LOCALHOST), ServerOptions::default()).await;
    let addr = srv.addr;
    run_test(spec(addr, srv.key, 0)).await.unwrap();
    srv.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening after stop");
}
