//! A hostile neighbor for tests: a scripted peer that joins a lab node over a real link, with
//! its own identity, a real userspace WireGuard tunnel and the real control-session handshake,
//! then sends whatever messages a test crafts. It lives in the namespace of a lab node whose
//! daemon the test stopped, using that node's veth.
#![allow(dead_code)]

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddrV6, TcpStream};
use tollway_core::wire::control::{transcript, ControlMessage, FrameDecoder, VERSION_MAX, VERSION_MIN};
use tollway_core::wire::discovery::{Announce, Discovery, Hello};
use tollway_core::{Identity, IfName, NodeId, WgPublicKey};
use tollway_kernel::{Tunnels, UserspaceOptions, UserspaceTunnels, WgConfig};

pub struct Rogue {
    pub identity: Identity,
    pub victim: NodeId,
    stream: TcpStream,
    decoder: FrameDecoder,
    _tunnel: Box<dyn Tunnels>,
}

fn link_local_of(lab: &Lab, node: &str, iface: &str) -> std::net::Ipv6Addr {
    let (ok, out) = run_in(lab, node, &["ip", "-j", "-6", "addr", "show", "dev", iface, "scope", "link"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"][0]["local"].as_str().unwrap().parse().unwrap()
}

impl Rogue {
    /// Join `victim` from the namespace of lab node `host` (whose daemon must be stopped),
    /// through `host`'s veth to the victim. The rogue's id is chosen smaller than the victim's
    /// so that the rogue opens the control session.
    pub fn join(lab: &Lab, host: &str, victim: &str) -> Rogue {
        let v = status(lab, victim);
        let victim_id: NodeId = v.node.id.parse().unwrap();
        let mut wg = [0u8; 32];
        hex::decode_to_slice(&v.node.wg_public_key, &mut wg).unwrap();
        let identity = (0u32..)
            .map(|i| {
                let mut seed = [0x5a; 32];
                seed[..4].copy_from_slice(&i.to_be_bytes());
                Identity::from_seed(&seed)
            })
            .find(|id| id.node_id() < victim_id)
            .unwrap();
        let ns = lab.node(host).unwrap().namespace.clone();
        let iface = format!("v-{victim}");
        let victim_ll = link_local_of(lab, victim, &format!("v-{host}"));

        // 1. Say hello: the victim admits us and builds its tunnel towards our port.
        let port = 39000u16;
        let now = unix_ms();
        let hello = Discovery::Hello(Hello {
            node: identity.node_id(),
            wg_key: identity.wg_public(),
            to: victim_id,
            listen_port: port,
            unix_ms: now,
        })
        .encode_signed(&identity);
        let announce =
            Discovery::Announce(Announce { node: identity.node_id(), wg_key: identity.wg_public(), unix_ms: now })
                .encode_signed(&identity);
        send_discovery(&ns, &iface, vec![announce]);
        send_unicast(&ns, &iface, victim_ll, hello);
        let rogue_id = identity.node_id().to_string();
        let victim_port = wait_for(Duration::from_secs(10), "the victim to admit the rogue", || {
            neighbor(&status(lab, victim), &rogue_id).map(|n| n.listen_port)
        });

        // 2. Our end of the tunnel, inside the host namespace.
        let ifname = format!("twrog{}", std::process::id() % 100_000);
        let idx = if_index_in(&ns, &iface);
        let cfg = WgConfig {
            ifname: IfName::new(ifname.clone()).unwrap(),
            private_key: identity.wg_private(),
            listen_port: port,
            peer_key: WgPublicKey(wg),
            endpoint: Some(SocketAddrV6::new(victim_ll, victim_port, 0, idx)),
            keepalive_secs: 1,
        };
        let tunnel = tollway_kernel::netns::run_in(&ns, move || {
            let mut t: Box<dyn Tunnels> = Box::new(UserspaceTunnels::new(UserspaceOptions::default()));
            t.ensure(&cfg).unwrap();
            t
        })
        .unwrap();
        let ll = format!("{}/64", identity.node_id().tunnel_link_local());
        for argv in [vec!["ip", "addr", "add", &ll, "dev", &ifname, "nodad"], vec!["ip", "link", "set", &ifname, "up"]]
        {
            let (ok, out) = run_in(lab, host, &argv);
            assert!(ok, "{out}");
        }
        wait_for(Duration::from_secs(15), "the victim's tunnel to the rogue", || {
            neighbor(&status(lab, victim), &rogue_id).filter(|n| n.tunnel_up).map(|_| ())
        });

        // 3. The control session: we connect (our id is smaller) and authenticate.
        let tidx = if_index_in(&ns, &ifname);
        let peer = SocketAddrV6::new(victim_id.tunnel_link_local(), 7478, 0, tidx);
        let stream = wait_for(Duration::from_secs(10), "a control connection", || {
            tollway_kernel::netns::run_in(&ns, move || {
                TcpStream::connect_timeout(&peer.into(), Duration::from_secs(2)).ok()
            })
            .unwrap()
        });
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = Rogue { identity, victim: victim_id, stream, decoder: FrameDecoder::new(), _tunnel: tunnel };
        let nonce_c = [7u8; 32];
        r.send(ControlMessage::ClientHello {
            version_min: VERSION_MIN,
            version_max: VERSION_MAX,
            node: r.identity.node_id(),
            nonce: nonce_c,
        });
        let (version, nonce_s) = match r.recv() {
            Some(ControlMessage::ServerHello { version, nonce, .. }) => (version, nonce),
            other => panic!("expected a server hello, got {other:?}"),
        };
        let sig =
            r.identity.sign(&transcript(b"client", &r.identity.node_id(), &victim_id, &nonce_c, &nonce_s, version));
        r.send(ControlMessage::ClientAuth { sig });
        wait_for(Duration::from_secs(5), "the rogue's session", || {
            neighbor(&status(lab, victim), &rogue_id).filter(|n| n.state == "connected").map(|_| ())
        });
        r
    }

    pub fn send(&mut self, msg: ControlMessage) {
        self.stream.write_all(&msg.encode_frame()).unwrap();
    }

    /// The next message, or None after the read timeout.
    pub fn recv(&mut self) -> Option<ControlMessage> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame().unwrap() {
                return Some(ControlMessage::decode(&f).unwrap());
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.push(&buf[..n]),
            }
        }
    }

    /// Read (and answer pings) for about `d`, dropping what arrives: keeps the session alive.
    pub fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        self.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while Instant::now() < end {
            match self.recv() {
                Some(ControlMessage::Ping { nonce }) => self.send(ControlMessage::Pong { nonce }),
                Some(_) => {}
                None => {}
            }
        }
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    /// Read messages until one matches (answering pings), or None after the timeout.
    pub fn recv_until(&mut self, mut f: impl FnMut(&ControlMessage) -> bool) -> Option<ControlMessage> {
        while let Some(m) = self.recv() {
            if let ControlMessage::Ping { nonce } = m {
                self.send(ControlMessage::Pong { nonce });
                continue;
            }
            if f(&m) {
                return Some(m);
            }
        }
        None
    }
}

fn if_index_in(ns: &str, iface: &str) -> u32 {
    let name = iface.to_owned();
    tollway_kernel::netns::run_in(ns, move || {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
    .unwrap()
}

/// Send one discovery datagram to a link-local address from inside `namespace`.
fn send_unicast(namespace: &str, iface: &str, dst: std::net::Ipv6Addr, datagram: Vec<u8>) {
    let iface = iface.to_owned();
    tollway_kernel::netns::run_in(namespace, move || {
        let s = std::net::UdpSocket::bind("[::]:0").unwrap();
        let c = std::ffi::CString::new(iface).unwrap();
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        s.send_to(&datagram, SocketAddrV6::new(dst, 7477, 0, idx)).unwrap();
    })
    .unwrap();
}
