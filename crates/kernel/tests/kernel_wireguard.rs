//! Kernel WireGuard against the real kernel, in a namespace made by the test. Where the kernel
//! has no WireGuard (as on the development machine), this checks the failure paths: the probe
//! says no and leaves nothing behind, the kernel backend reports clean errors, and `Auto`
//! falls back to userspace. Skipped when not root.

mod common;

use common::{keys, skip, unique};
use std::net::SocketAddrV6;
use tollway_kernel::netns::NetNs;
use tollway_kernel::{
    open_tunnels, probe_kernel_wireguard, KernelTunnels, Links, NetlinkLinks, TunnelBackend, TunnelError, Tunnels,
    UserspaceOptions, WgConfig,
};

fn config() -> WgConfig {
    let (ours, theirs) = (keys(1), keys(2));
    WgConfig {
        ifname: unique("twk"),
        private_key: ours.private,
        listen_port: 51820,
        peer_key: theirs.public,
        endpoint: Some(SocketAddrV6::new("fe80::2".parse().unwrap(), 51821, 0, 1)),
        keepalive_secs: 25,
    }
}

#[test]
fn kernel_backend_works_or_fails_cleanly() {
    if skip("kernel_backend_works_or_fails_cleanly", &[]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    ns.run(|| {
        let available = probe_kernel_wireguard();
        // The probe leaves no interface behind either way.
        assert_eq!(NetlinkLinks::new().list("").unwrap().len(), 1, "only lo");
        let cfg = config();
        let mut k = KernelTunnels::new();
        if available {
            eprintln!("this kernel has WireGuard: exercising the kernel backend");
            k.ensure(&cfg).unwrap();
            k.ensure(&cfg).unwrap();
            assert_eq!(k.list("twk").unwrap(), vec![cfg.ifname.clone()]);
            let s = k.stats(&cfg.ifname).unwrap();
            assert_eq!(s.last_handshake_secs, None);
            let mut moved = cfg.clone();
            moved.endpoint = Some(SocketAddrV6::new("fe80::3".parse().unwrap(), 51821, 0, 1));
            k.ensure(&moved).unwrap();
            k.remove(&cfg.ifname).unwrap();
            k.remove(&cfg.ifname).unwrap();
            assert!(NetlinkLinks::new().index_of(&cfg.ifname).unwrap().is_none());
            assert_eq!(open_tunnels(TunnelBackend::Auto, UserspaceOptions::default()).unwrap().backend(), "kernel");
        } else {
            eprintln!("this kernel has no WireGuard: checking the failure paths");
            let err = k.ensure(&cfg).unwrap_err();
            assert!(matches!(err, TunnelError::Create { .. }), "{err}");
            assert!(err.to_string().contains(cfg.ifname.as_str()), "{err}");
            assert!(NetlinkLinks::new().index_of(&cfg.ifname).unwrap().is_none());
            assert!(matches!(k.stats(&cfg.ifname), Err(TunnelError::Read { .. }) | Err(TunnelError::Missing(_))));
            k.remove(&cfg.ifname).unwrap();
            assert!(k.list("twk").unwrap().is_empty());
            assert!(matches!(
                open_tunnels(TunnelBackend::Kernel, UserspaceOptions::default()),
                Err(TunnelError::Unavailable { .. })
            ));
            let auto = open_tunnels(TunnelBackend::Auto, UserspaceOptions::default()).unwrap();
            assert_eq!(auto.backend(), "userspace");
        }
        // Userspace is always there.
        let mut u = open_tunnels(TunnelBackend::Userspace, UserspaceOptions::default()).unwrap();
        u.ensure(&cfg).unwrap();
        assert_eq!(u.list("twk").unwrap(), vec![cfg.ifname.clone()]);
        u.remove(&cfg.ifname).unwrap();
        assert!(u.list("twk").unwrap().is_empty());
    })
    .unwrap();
}
