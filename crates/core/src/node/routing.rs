//! The routing seam: which neighbors routing may use and what each link costs, sent to the
//! driver as one `SetRoutingNeighbors` whenever it changes.

use super::Node;
use crate::action::Action;
use crate::market::OurBid;
use crate::routing::{LinkCost, RoutedNeighbor};

impl Node {
    /// The neighbors routing may use now, and their costs (as last sent to the driver).
    pub fn routing_neighbors(&self) -> &[RoutedNeighbor] {
        &self.routed
    }

    /// Recompute the routing neighbors; tell the driver if they changed. A neighbor is routed
    /// through while its tunnel is up, its control session established (it is alive and we can
    /// settle with it) and we bid for its ask (we pay for what we send through it; a neighbor
    /// whose price we declined would restrict us). Once speed tests have ranked the neighbors,
    /// each gets the penalty its ranking says for the tested destinations (`quality_penalty`).
    pub(super) fn update_routing(&mut self) {
        let max_price = self.config.market.max_price;
        let routed: Vec<RoutedNeighbor> = self
            .neighbors
            .values()
            .filter(|n| n.tunnel_up() && n.session_established_since().is_some())
            .filter(|n| matches!(n.market.our_bid, OurBid::Bid(_)))
            .map(|n| RoutedNeighbor {
                neighbor: n.id,
                ifname: n.ifname.clone(),
                peer_link_local: n.id.tunnel_link_local(),
                cost: LinkCost::from_price(n.market.our_price(), max_price),
                penalty: self.quality_penalty(&n.id),
                slot: n.slot,
            })
            .collect();
        if routed != self.routed {
            for r in &routed {
                let old = self.routed.iter().find(|o| o.neighbor == r.neighbor).map(|o| (o.cost, &o.penalty));
                if old != Some((r.cost, &r.penalty)) {
                    tracing::info!(neighbor = %r.neighbor.short(), ifname = %r.ifname, cost = r.cost.0, penalty = %r.penalty, "routing through neighbor");
                }
            }
            for o in self.routed.iter().filter(|o| !routed.iter().any(|r| r.neighbor == o.neighbor)) {
                tracing::info!(neighbor = %o.neighbor.short(), ifname = %o.ifname, "no longer routing through neighbor");
            }
            self.routed = routed.clone();
            self.actions.push_back(Action::SetRoutingNeighbors(routed));
        }
    }
}
