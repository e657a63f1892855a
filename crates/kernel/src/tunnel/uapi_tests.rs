use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use tollway_core::{IfName, WgPublicKey};

fn cfg() -> WgConfig {
    WgConfig {
        ifname: IfName::new("tw0").unwrap(),
        private_key: [0x11; 32],
        listen_port: 51820,
        peer_key: WgPublicKey([0x22; 32]),
        endpoint: Some(SocketAddrV6::new("fe80::2".parse().unwrap(), 51821, 0, 3)),
        keepalive_secs: 25,
    }
}

#[test]
fn set_request_sets_key_first_replaces_peers_and_ends_with_a_blank_line() {
    let expected = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\n\
         endpoint=[fe80::2%3]:51821\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
         allowed_ip=::/0\nallowed_ip=0.0.0.0/0\n\n",
        "11".repeat(32),
        "22".repeat(32)
    );
    assert_eq!(set_request(&cfg(), true), expected);
    assert_eq!(
        remove_peer_request(&WgPublicKey([0x33; 32])),
        format!("set=1\npublic_key={}\nremove=true\n\n", "33".repeat(32))
    );

    let mut c = cfg();
    c.endpoint = None;
    c.keepalive_secs = 0;
    let s = set_request(&c, false);
    assert!(!s.contains("listen_port"));
    assert!(!s.contains("endpoint"));
    assert!(s.contains("persistent_keepalive_interval=0\n"));
    // Exactly one blank line, at the end: boringtun ends the whole request at the first.
    assert_eq!(s.matches("\n\n").count(), 1);
    assert!(s.ends_with("\n\n"));
}

/// What boringtun 0.7's `api_get` writes for a device with one peer after a handshake.
const BORINGTUN_GET: &str = "own_public_key=3333333333333333333333333333333333333333333333333333333333333333
listen_port=51820
public_key=2222222222222222222222222222222222222222222222222222222222222222
persistent_keepalive_interval=25
endpoint=[fe80::2%3]:51821
allowed_ip=0.0.0.0/0
allowed_ip=::/0
last_handshake_time_sec=7
last_handshake_time_nsec=250000000
rx_bytes=1184
tx_bytes=1312
errno=0

";

#[test]
fn boringtun_reply_parses_with_handshake_as_an_age() {
    let d = DeviceState::parse(BORINGTUN_GET).unwrap();
    assert_eq!(d.own_public_key, Some([0x33; 32]));
    assert_eq!(d.private_key, None);
    assert_eq!(d.listen_port, Some(51820));
    assert_eq!(d.peers.len(), 1);
    let p = d.peer(&[0x22; 32]).unwrap();
    assert_eq!(p.persistent_keepalive, Some(25));
    assert_eq!(
        p.endpoint,
        Some(UapiEndpoint::Addr(SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 51821, 0, 3))))
    );
    assert_eq!(p.allowed_ips, vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)]);
    assert_eq!(p.last_handshake, Some(Handshake::Ago(Duration::from_millis(7250))));
    // An age does not depend on the clock.
    assert_eq!(p.last_handshake.unwrap().age(SystemTime::UNIX_EPOCH), Duration::from_millis(7250));
    assert_eq!((p.rx_bytes, p.tx_bytes), (1184, 1312));
}

#[test]
fn boringtun_reply_without_handshake_has_none() {
    let reply = "own_public_key=3333333333333333333333333333333333333333333333333333333333333333\n\
                 listen_port=1\npublic_key=2222222222222222222222222222222222222222222222222222222222222222\n\
                 rx_bytes=0\ntx_bytes=0\nerrno=0\n\n";
    let d = DeviceState::parse(reply).unwrap();
    assert_eq!(d.peers[0].last_handshake, None);
}

/// The example `get` reply of the cross-platform UAPI documentation (wireguard-go's form).
const SPEC_GET: &str = "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
listen_port=12912
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
last_handshake_time_sec=1
last_handshake_time_nsec=5
tx_bytes=38333
rx_bytes=2224
persistent_keepalive_interval=0
protocol_version=1
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
allowed_ip=192.168.4.6/32
persistent_keepalive_interval=111
endpoint=182.122.22.19:3233
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=1212111
rx_bytes=1929999999
protocol_version=1
public_key=662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58
endpoint=[fe80::1%eth0]:51820
allowed_ip=10.0.0.0/8
errno=0

";

#[test]
fn spec_reply_parses_with_handshake_as_a_unix_time() {
    let d = DeviceState::parse(SPEC_GET).unwrap();
    assert!(d.private_key.is_some());
    assert_eq!(d.own_public_key, None);
    assert_eq!(d.listen_port, Some(12912));
    assert_eq!(d.peers.len(), 3);
    let p0 = &d.peers[0];
    assert!(p0.preshared_key.is_some());
    assert_eq!(p0.last_handshake, Some(Handshake::At(Duration::new(1, 5))));
    assert_eq!(p0.persistent_keepalive, None);
    assert_eq!(p0.protocol_version, Some(1));
    assert_eq!((p0.rx_bytes, p0.tx_bytes), (2224, 38333));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(101);
    assert_eq!(p0.last_handshake.unwrap().age(now).as_secs(), 99);
    // A handshake "in the future" (clock stepped back) is age zero, not a panic.
    assert_eq!(p0.last_handshake.unwrap().age(SystemTime::UNIX_EPOCH), Duration::ZERO);

    let p1 = &d.peers[1];
    assert_eq!(p1.preshared_key, None, "all-zero preshared key means none");
    assert_eq!(p1.last_handshake, None, "0/0 means never");
    assert_eq!(p1.persistent_keepalive, Some(111));
    assert_eq!(p1.endpoint, Some(UapiEndpoint::Addr("182.122.22.19:3233".parse().unwrap())));

    let p2 = &d.peers[2];
    assert_eq!(
        p2.endpoint,
        Some(UapiEndpoint::Zoned {
            addr: SocketAddrV6::new("fe80::1".parse().unwrap(), 51820, 0, 0),
            zone: "eth0".into()
        })
    );
}

#[test]
fn dialect_can_be_forced() {
    // A boringtun reply read as the spec would take "7 s ago" for "7 s after 1970".
    let d = DeviceState::parse_as(BORINGTUN_GET, Dialect::Spec).unwrap();
    assert_eq!(d.peers[0].last_handshake, Some(Handshake::At(Duration::from_millis(7250))));
}

#[test]
fn unknown_keys_are_ignored() {
    let reply = "listen_port=5\nfuture_device_key=1\npublic_key=2222222222222222222222222222222222222222222222222222222222222222\nfuture_peer_key=x\nerrno=0\n\n";
    let d = DeviceState::parse(reply).unwrap();
    assert_eq!(d.listen_port, Some(5));
    assert_eq!(d.peers.len(), 1);
}

#[test]
fn invalid_replies_are_rejected() {
    let key = "22".repeat(32);
    let cases: Vec<(String, &str)> = vec![
        ("listen_port=5\n".into(), "unterminated"),
        ("garbage\nerrno=0\n\n".into(), "no '='"),
        ("listen_port=abc\nerrno=0\n\n".into(), "bad port"),
        ("listen_port=70000\nerrno=0\n\n".into(), "bad port"),
        ("public_key=zz\nerrno=0\n\n".into(), "bad key"),
        (format!("public_key={}\nerrno=0\n\n", &key[..62]), "bad key"),
        ("rx_bytes=5\nerrno=0\n\n".into(), "peer attribute before any public_key"),
        (format!("public_key={key}\nlisten_port=3\nerrno=0\n\n"), "device attribute after a peer"),
        (format!("public_key={key}\nallowed_ip=::/129\nerrno=0\n\n"), "bad allowed ip"),
        (format!("public_key={key}\nallowed_ip=10.0.0.0/33\nerrno=0\n\n"), "bad allowed ip"),
        (format!("public_key={key}\nallowed_ip=10.0.0.0\nerrno=0\n\n"), "bad allowed ip"),
        (format!("public_key={key}\nendpoint=nowhere\nerrno=0\n\n"), "bad endpoint"),
        (format!("public_key={key}\nendpoint=[fe80::1%]:5\nerrno=0\n\n"), "bad endpoint"),
        (format!("public_key={key}\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n"), "nanoseconds out of range"),
        (format!("public_key={key}\nrx_bytes=-1\nerrno=0\n\n"), "bad byte count"),
        ("errno=x\n\n".into(), "errno is not a number"),
    ];
    for (reply, want) in cases {
        match DeviceState::parse(&reply) {
            Err(UapiError::Malformed { reason, .. }) => assert_eq!(reason, want, "{reply:?}"),
            Err(UapiError::Unterminated) => assert_eq!(want, "unterminated", "{reply:?}"),
            other => panic!("{reply:?} gave {other:?}"),
        }
    }
    assert!(matches!(DeviceState::parse("errno=5\n\n"), Err(UapiError::Errno(5))));
    // Errors do not repeat secrets.
    let e = DeviceState::parse(&format!("private_key={}\nerrno=0\n\n", &key[..63])).unwrap_err().to_string();
    assert!(!e.contains("2222"), "{e}");
}

#[test]
fn errno_of_set_replies() {
    assert_eq!(parse_errno("errno=0\n\n").unwrap(), 0);
    assert_eq!(parse_errno("errno=98\n\n").unwrap(), 98);
    assert!(matches!(parse_errno("\n"), Err(UapiError::Unterminated)));
    assert!(matches!(parse_errno("errno=\n\n"), Err(UapiError::Malformed { .. })));
}

/// Render a state as a `get` reply, the inverse of the parser, for round trips.
fn render(d: &DeviceState, dialect: Dialect) -> String {
    let mut s = String::new();
    if let Some(k) = d.private_key {
        let _ = writeln!(s, "private_key={}", hex::encode(k));
    }
    if let Some(k) = d.own_public_key {
        let _ = writeln!(s, "own_public_key={}", hex::encode(k));
    }
    if let Some(p) = d.listen_port {
        let _ = writeln!(s, "listen_port={p}");
    }
    if let Some(m) = d.fwmark {
        let _ = writeln!(s, "fwmark={m}");
    }
    for p in &d.peers {
        let _ = writeln!(s, "public_key={}", hex::encode(p.public_key));
        if let Some(k) = p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", hex::encode(k));
        }
        match &p.endpoint {
            Some(UapiEndpoint::Addr(a)) => {
                let _ = writeln!(s, "endpoint={a}");
            }
            Some(UapiEndpoint::Zoned { addr, zone }) => {
                let _ = writeln!(s, "endpoint=[{}%{zone}]:{}", addr.ip(), addr.port());
            }
            None => {}
        }
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "persistent_keepalive_interval={k}");
        }
        for (ip, len) in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={ip}/{len}");
        }
        match (p.last_handshake, dialect) {
            (Some(Handshake::Ago(d)), Dialect::Boringtun) | (Some(Handshake::At(d)), Dialect::Spec) => {
                let _ = writeln!(
                    s,
                    "last_handshake_time_sec={}\nlast_handshake_time_nsec={}",
                    d.as_secs(),
                    d.subsec_nanos()
                );
            }
            (None, Dialect::Spec) => s.push_str("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"),
            (None, Dialect::Boringtun) => {}
            (Some(h), d) => panic!("{h:?} cannot be written in {d:?}"),
        }
        let _ = writeln!(s, "rx_bytes={}\ntx_bytes={}", p.rx_bytes, p.tx_bytes);
        if let Some(v) = p.protocol_version {
            let _ = writeln!(s, "protocol_version={v}");
        }
    }
    s.push_str("errno=0\n\n");
    s
}

#[test]
fn parse_inverts_render_in_both_dialects() {
    for (reply, dialect) in [(BORINGTUN_GET, Dialect::Boringtun), (SPEC_GET, Dialect::Spec)] {
        let d = DeviceState::parse(reply).unwrap();
        let again = DeviceState::parse_as(&render(&d, dialect), dialect).unwrap();
        assert_eq!(again, d);
    }
}

#[test]
fn reply_is_complete_after_errno_and_blank_line() {
    assert!(!reply_complete(b""));
    assert!(!reply_complete(b"errno=0\n"));
    assert!(reply_complete(b"errno=0\n\n"));
    assert!(reply_complete(b"listen_port=1\nerrno=0\n\n"));
    assert!(!reply_complete(b"listen_port=1\n\n"));
}

/// A stand-in device on the other end of a socketpair that answers like boringtun.
fn fake_device(answer: impl Fn(&str) -> Option<String> + Send + 'static) -> UapiClient {
    let (ours, theirs) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(theirs.try_clone().unwrap());
        let mut writer = theirs;
        loop {
            let mut req = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                req.push_str(&line);
                if line == "\n" {
                    break;
                }
            }
            if let Some(a) = answer(&req) {
                if writer.write_all(a.as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
    UapiClient::new(ours, Duration::from_millis(300)).unwrap()
}

#[test]
fn client_exchanges_get_and_set() {
    let mut c = fake_device(|req| {
        Some(match req {
            "get=1\n\n" => BORINGTUN_GET.to_string(),
            r if r.starts_with("set=1\n") && r.contains("listen_port=1\n") => "errno=98\n\n".into(),
            _ => "errno=0\n\n".into(),
        })
    });
    assert_eq!(c.get().unwrap().listen_port, Some(51820));
    c.set(&set_request(&cfg(), true)).unwrap();
    let mut busy = cfg();
    busy.listen_port = 1;
    assert!(matches!(c.set(&set_request(&busy, true)), Err(UapiError::Errno(98))));
}

#[test]
fn client_times_out_then_discards_the_late_reply() {
    let slow = std::sync::atomic::AtomicBool::new(true);
    let mut c = fake_device(move |req| {
        if slow.swap(false, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            return Some("errno=77\n\n".into());
        }
        assert_eq!(req, "get=1\n\n");
        Some(BORINGTUN_GET.to_string())
    });
    assert!(matches!(c.set("set=1\n\n"), Err(UapiError::Timeout(_))));
    std::thread::sleep(Duration::from_millis(400));
    // The late "errno=77" must not be taken for the answer to this get.
    assert_eq!(c.get().unwrap().peers.len(), 1);
}

#[test]
fn client_reports_a_closed_device() {
    let mut c = fake_device(|_| None);
    // The fake answers nothing: a timeout.
    assert!(matches!(c.get(), Err(UapiError::Timeout(_))));
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    let mut c = UapiClient::new(ours, Duration::from_millis(100)).unwrap();
    assert!(matches!(c.get(), Err(UapiError::Closed) | Err(UapiError::Io(_))));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "private_key",
        "own_public_key",
        "listen_port",
        "fwmark",
        "public_key",
        "preshared_key",
        "endpoint",
        "persistent_keepalive_interval",
        "allowed_ip",
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "rx_bytes",
        "tx_bytes",
        "protocol_version",
        "errno",
    ];

    fn line() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "[0-9a-f]{64}",
            "[0-9]{1,12}",
            "-?[0-9]{1,3}",
            "\\[[0-9a-f:]{2,12}(%[a-z0-9]{1,4})?\\]:[0-9]{1,6}",
            "[0-9a-f:.]{1,16}/[0-9]{1,3}",
            ".{0,20}",
        ];
        (prop::sample::select(KEYS), value).prop_map(|(k, v)| format!("{k}={v}"))
    }

    proptest! {
        /// The parser never panics, whatever the device says.
        #[test]
        fn parse_never_panics(lines in prop::collection::vec(line(), 0..30), junk in ".{0,40}") {
            let mut reply = lines.join("\n");
            reply.push_str(&junk);
            let _ = DeviceState::parse(&reply);
            reply.push_str("\nerrno=0\n\n");
            let _ = DeviceState::parse(&reply);
            let _ = parse_errno(&reply);
        }

        /// Whatever parses renders back to the same state.
        #[test]
        fn parsed_states_round_trip(lines in prop::collection::vec(line(), 0..30)) {
            let reply = format!("{}\nerrno=0\n\n", lines.join("\n"));
            if let Ok(d) = DeviceState::parse_as(&reply, Dialect::Boringtun) {
                let again = DeviceState::parse_as(&render(&d, Dialect::Boringtun), Dialect::Boringtun).unwrap();
                prop_assert_eq!(again, d);
            }
        }
    }
}
