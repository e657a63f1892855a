//! Tunnels, addresses and routes: applying the core's specs, sampling, reconciling.

use super::Driver;
use std::net::SocketAddrV6;
use tollway_core::{IfName, TunnelSpec};
use tollway_kernel::{Route6, TunnelError, WgConfig};

impl Driver {
    pub(super) fn remove_leftover_tunnels(&mut self) -> Result<(), String> {
        self.remove_own_tunnels("left by a previous run")
    }

    /// Remove every tunnel and interface named after this node (`tw<own id>…`), saying `why`.
    pub(super) fn remove_own_tunnels(&mut self, why: &str) -> Result<(), String> {
        let prefix = IfName::tunnel_prefix(&self.node.node_id());
        let tunnels = self.k.tunnels.list(&prefix).map_err(|e| e.to_string())?;
        for ifname in tunnels {
            tracing::info!(%ifname, "removing tunnel {why}");
            if let Err(e) = self.k.tunnels.remove(&ifname) {
                tracing::warn!(%ifname, error = %e, "could not remove tunnel");
            }
        }
        for ifname in self.k.links.list(&prefix).map_err(|e| e.to_string())? {
            tracing::info!(%ifname, "removing interface {why}");
            self.k.links.delete(&ifname).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub(super) fn ensure_tunnel(&mut self, spec: TunnelSpec) {
        let ifname = spec.ifname.clone();
        match self.apply_tunnel(&spec) {
            Ok(()) => {
                self.desired.insert(ifname, spec);
                // A re-created tunnel needs its redirect into the shaper again.
                self.reapply_shaper();
            }
            Err(e) => {
                self.desired.remove(&ifname);
                self.node.handle_tunnel_error(self.clock.now(), &ifname, &e);
            }
        }
    }

    fn apply_tunnel(&mut self, spec: &TunnelSpec) -> Result<(), String> {
        let endpoint = match &spec.endpoint {
            Some(e) => {
                let scope = self
                    .k
                    .links
                    .index_of(&e.via)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("physical interface {} is gone", e.via))?;
                Some(SocketAddrV6::new(e.addr, e.port, 0, scope))
            }
            None => None,
        };
        let cfg = WgConfig {
            ifname: spec.ifname.clone(),
            private_key: self.node.identity().wg_private(),
            listen_port: spec.listen_port,
            peer_key: spec.peer_key,
            endpoint,
            keepalive_secs: spec.keepalive_secs,
        };
        self.k.tunnels.ensure(&cfg).map_err(|e| e.to_string())?;
        let err = |e: tollway_kernel::LinkError| e.to_string();
        self.k.links.disable_ipv6_autoconf(&spec.ifname).map_err(err)?;
        self.k.links.set_up(&spec.ifname, Some(spec.mtu)).map_err(err)?;
        self.k.links.ensure_address(&spec.ifname, spec.local_link_local, 64).map_err(err)?;
        // A probe that cannot be set up (a kernel without altnames, say) costs the tests through
        // this neighbor, not the tunnel: they fail and say why.
        if let Err(e) = self.ensure_probe(spec) {
            tracing::warn!(ifname = %spec.ifname, error = %e, "setting up the speed-test probe through this tunnel failed");
        }
        // With babel, routes to the neighbor come from babeld (in the mesh table); a /128 of
        // ours in main would override its choice, so ours goes into the mesh table below
        // babeld's (a higher metric): the neighbor stays reachable across the tunnel while
        // babeld has no route to it (not routed yet, or not at our price).
        if let Some(fallback) = self.babel_neighbor_fallback(spec) {
            self.mesh_routes_replace(&fallback)?;
        } else if self.routes_neighbors_itself() {
            let route = Route6 {
                dst: spec.peer_mesh_ip,
                prefix_len: 128,
                dev: spec.ifname.clone(),
                src: Some(self.node.node_id().mesh_ip()),
            };
            self.k.links.ensure_route(&route).map_err(err)?;
        }
        Ok(())
    }

    pub(super) fn sample_tunnels(&mut self) {
        let ifnames: Vec<(IfName, bool)> =
            self.node.neighbors().map(|n| (n.ifname.clone(), n.last_tunnel_error.is_none())).collect();
        for (ifname, healthy) in ifnames {
            if !self.desired.contains_key(&ifname) {
                continue;
            }
            match self.k.tunnels.stats(&ifname) {
                Ok(stats) => self.node.handle_tunnel_stats(self.clock.now(), &ifname, stats),
                Err(e @ TunnelError::Missing(_)) if healthy => {
                    self.desired.remove(&ifname);
                    self.node.handle_tunnel_error(self.clock.now(), &ifname, &e.to_string());
                }
                Err(e) => tracing::debug!(%ifname, error = %e, "reading tunnel state failed"),
            }
        }
    }

    /// Re-apply the desired state of every tunnel; cheap when nothing changed.
    pub(super) fn reconcile_tunnels(&mut self) {
        let specs: Vec<TunnelSpec> = self.desired.values().cloned().collect();
        for spec in specs {
            if let Err(e) = self.apply_tunnel(&spec) {
                tracing::warn!(ifname = %spec.ifname, error = %e, "reconciling tunnel failed");
                self.desired.remove(&spec.ifname);
                self.node.handle_tunnel_error(self.clock.now(), &spec.ifname, &e);
            }
        }
    }
}
