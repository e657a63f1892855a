//! [`FakeRouter`]: records what the driver asks of a router, for unit tests of the driver.

use crate::{RouteEntry, Router, RouterKind, RoutingError, RoutingPlan};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    plans: Vec<RoutingPlan>,
    ticks: u32,
    shutdowns: u32,
    routes: Vec<RouteEntry>,
    fail_next: u32,
}

/// A router that keeps every plan it is given and answers [`Router::routes`] with what the
/// test configured. Clones share one state: hand one to the driver, keep one to look.
#[derive(Clone)]
pub struct FakeRouter {
    kind: RouterKind,
    state: Arc<Mutex<State>>,
}

impl FakeRouter {
    pub fn new(kind: RouterKind) -> FakeRouter {
        FakeRouter { kind, state: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every plan applied, oldest first.
    pub fn plans(&self) -> Vec<RoutingPlan> {
        self.lock().plans.clone()
    }

    /// The last plan applied.
    pub fn current(&self) -> Option<RoutingPlan> {
        self.lock().plans.last().cloned()
    }

    pub fn ticks(&self) -> u32 {
        self.lock().ticks
    }

    pub fn shutdowns(&self) -> u32 {
        self.lock().shutdowns
    }

    /// What [`Router::routes`] answers from now on.
    pub fn set_routes(&self, routes: Vec<RouteEntry>) {
        self.lock().routes = routes;
    }

    /// Make the next `n` calls (of any method) fail with [`RoutingError::NotRunning`].
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    fn enter(&self) -> Result<MutexGuard<'_, State>, RoutingError> {
        let mut s = self.lock();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(RoutingError::NotRunning);
        }
        Ok(s)
    }
}

impl Router for FakeRouter {
    fn kind(&self) -> RouterKind {
        self.kind
    }

    fn apply(&mut self, plan: &RoutingPlan) -> Result<(), RoutingError> {
        self.enter()?.plans.push(plan.clone());
        Ok(())
    }

    fn tick(&mut self) -> Result<(), RoutingError> {
        self.enter()?.ticks += 1;
        Ok(())
    }

    fn routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        Ok(self.enter()?.routes.clone())
    }

    fn shutdown(&mut self) -> Result<(), RoutingError> {
        self.enter()?.shutdowns += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinkCost, RoutedNeighbor};
    use tollway_core::{IfName, NodeId};

    #[test]
    fn records_plans_and_answers_configured_routes_through_shared_handles() {
        let fake = FakeRouter::new(RouterKind::Babel);
        let mut boxed: Box<dyn Router> = Box::new(fake.clone());
        assert_eq!(boxed.kind(), RouterKind::Babel);
        let plan = RoutingPlan {
            neighbors: vec![RoutedNeighbor {
                neighbor: NodeId([7; 32]),
                ifname: IfName::new("tw1").unwrap(),
                peer_link_local: "fe80::7".parse().unwrap(),
                cost: LinkCost::GOOD,
                penalty: Default::default(),
                slot: 0,
            }],
            exports: vec!["0.0.0.0/0".parse().unwrap()],
        };
        boxed.apply(&RoutingPlan::default()).unwrap();
        boxed.apply(&plan).unwrap();
        boxed.tick().unwrap();
        assert_eq!(fake.plans().len(), 2);
        assert_eq!(fake.current(), Some(plan));
        assert_eq!(fake.ticks(), 1);

        let entry = RouteEntry {
            prefix: "fd00::3/128".parse().unwrap(),
            ifname: Some(IfName::new("tw1").unwrap()),
            next_hop: Some("fe80::7".parse().unwrap()),
            metric: 512,
            refmetric: Some(256),
            installed: true,
            router_id: Some("02:00:00:00:00:00:00:03".into()),
            source: RouterKind::Babel,
        };
        fake.set_routes(vec![entry.clone()]);
        assert_eq!(boxed.routes().unwrap(), vec![entry]);

        fake.fail_next(1);
        assert!(matches!(boxed.tick(), Err(RoutingError::NotRunning)));
        boxed.tick().unwrap();
        boxed.shutdown().unwrap();
        assert_eq!((fake.ticks(), fake.shutdowns()), (2, 1));
    }
}
