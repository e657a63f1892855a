use super::*;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_wireguard::WireguardTimeSpec;
use std::net::SocketAddrV6;
use tollway_core::WgPublicKey;

fn cfg() -> WgConfig {
    WgConfig {
        ifname: IfName::new("twk0").unwrap(),
        private_key: [0x11; 32],
        listen_port: 51820,
        peer_key: WgPublicKey([0x22; 32]),
        endpoint: Some(SocketAddrV6::new("fe80::2".parse().unwrap(), 51821, 0, 3)),
        keepalive_secs: 25,
    }
}

/// Serialize as the kernel would receive it (family id 0x1c) and parse it back.
fn round_trip(msg: WireguardMessage) -> (netlink_packet_core::NetlinkHeader, WireguardMessage) {
    let mut g = GenlMessage::from_payload(msg);
    g.set_resolved_family_id(0x1c);
    let bytes = crate::nl::encode(g, NLM_F_REQUEST | NLM_F_ACK, 3);
    let parsed = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&bytes).unwrap();
    assert_eq!(parsed.header.message_type, 0x1c);
    assert_eq!(parsed.header.length as usize, bytes.len());
    let NetlinkPayload::InnerMessage(g) = parsed.payload else { panic!("not an inner message") };
    (parsed.header, g.payload)
}

fn peer_of(m: &WireguardMessage) -> &WireguardPeer {
    let peers = m
        .attributes
        .iter()
        .find_map(|a| match a {
            WireguardAttribute::Peers(p) => Some(p),
            _ => None,
        })
        .expect("peers attribute");
    assert_eq!(peers.len(), 1);
    &peers[0]
}

#[test]
fn set_device_has_key_port_one_peer_and_replaces_peers_when_asked() {
    let (_, m) = round_trip(set_device(&cfg(), true));
    assert_eq!(m.cmd, WireguardCmd::SetDevice);
    assert!(m.attributes.contains(&WireguardAttribute::IfName("twk0".into())));
    assert!(m.attributes.contains(&WireguardAttribute::PrivateKey([0x11; 32])));
    assert!(m.attributes.contains(&WireguardAttribute::ListenPort(51820)));
    assert!(m.attributes.contains(&WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers)));
    let peer = peer_of(&m);
    assert!(peer.contains(&WireguardPeerAttribute::PublicKey([0x22; 32])));
    assert!(peer.contains(&WireguardPeerAttribute::Endpoint(SocketAddr::V6(cfg().endpoint.unwrap()))));
    assert!(peer.contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
    assert!(peer.contains(&WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps)));
    let ips = peer
        .iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::AllowedIps(v) => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips.iter().all(|ip| ip.contains(&WireguardAllowedIpAttr::Cidr(0))));
    assert!(ips[0].contains(&WireguardAllowedIpAttr::IpAddr(IpAddr::V6(Ipv6Addr::UNSPECIFIED))));
    assert!(ips[1].contains(&WireguardAllowedIpAttr::IpAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
}

#[test]
fn set_device_updates_in_place_and_leaves_port_zero_alone() {
    let mut c = cfg();
    c.listen_port = 0;
    c.endpoint = None;
    let (_, m) = round_trip(set_device(&c, false));
    assert!(!m.attributes.iter().any(|a| matches!(a, WireguardAttribute::ListenPort(_))));
    assert!(!m.attributes.iter().any(|a| matches!(a, WireguardAttribute::Flags(_))));
    assert!(!peer_of(&m).iter().any(|a| matches!(a, WireguardPeerAttribute::Endpoint(_))));
}

#[test]
fn get_device_names_the_interface() {
    let (h, m) = round_trip(get_device(&IfName::new("twk0").unwrap()));
    assert_eq!(m.cmd, WireguardCmd::GetDevice);
    assert_eq!(m.attributes, vec![WireguardAttribute::IfName("twk0".into())]);
    assert_eq!(h.flags, NLM_F_REQUEST | NLM_F_ACK);
}

fn reply_peer(key: u8, handshake: (i64, i64), rx: u64, tx: u64) -> WireguardPeer {
    WireguardPeer(vec![
        WireguardPeerAttribute::PublicKey([key; 32]),
        WireguardPeerAttribute::LastHandshake(WireguardTimeSpec { seconds: handshake.0, nano_seconds: handshake.1 }),
        WireguardPeerAttribute::RxBytes(rx),
        WireguardPeerAttribute::TxBytes(tx),
    ])
}

#[test]
fn stats_take_the_wanted_peer_across_messages_and_age_the_handshake() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let replies = vec![
        WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName("twk0".into()),
                WireguardAttribute::Peers(vec![reply_peer(1, (0, 0), 5, 6)]),
            ],
        },
        WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![reply_peer(2, (990, 500), 100, 200)])],
        },
    ];
    let s = stats_from_replies(&replies, Some(&[2; 32]), now);
    assert_eq!(s, TunnelStats { last_handshake_secs: Some(9), rx_bytes: 100, tx_bytes: 200 });
    // Zero time means never.
    let s = stats_from_replies(&replies, Some(&[1; 32]), now);
    assert_eq!(s, TunnelStats { last_handshake_secs: None, rx_bytes: 5, tx_bytes: 6 });
    // Unknown peer: fall back to the first; no peers at all: nothing.
    assert_eq!(stats_from_replies(&replies, Some(&[9; 32]), now).rx_bytes, 5);
    assert_eq!(stats_from_replies(&[], None, now), TunnelStats::default());
    // A handshake in the future (clock stepped back) is age 0.
    let future = vec![WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::Peers(vec![reply_peer(3, (5_000, 0), 0, 0)])],
    }];
    assert_eq!(stats_from_replies(&future, None, now).last_handshake_secs, Some(0));
}

#[test]
fn probe_names_fit_an_interface_name() {
    let name = format!("twp{:x}p{:x}", 4_194_304u32, 0xffffu32);
    assert!(IfName::new(name).is_ok());
}
