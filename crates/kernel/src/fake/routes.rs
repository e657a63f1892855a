//! [`FakeRoutes`]: an in-memory [`Routes`](crate::Routes) for unit tests of routers.

use crate::routes::{RouteError, RouteTarget, Routes, Rule, TableRoute};
use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tollway_core::IfName;

#[derive(Default)]
struct State {
    routes: Vec<TableRoute>,
    rules: BTreeSet<Rule>,
    links: BTreeSet<IfName>,
    fail_next: u32,
    calls: u32,
}

/// Routes and rules kept in memory. Clones share one state, so a test keeps a handle to look
/// at what a router installed. Routes out of an interface need it declared with
/// [`FakeRoutes::add_link`] (as the kernel needs it to exist).
#[derive(Clone, Default)]
pub struct FakeRoutes {
    state: Arc<Mutex<State>>,
}

/// The fake's notion of "the same route": what the kernel keys a route on.
fn same_slot(a: &TableRoute, b: &TableRoute) -> bool {
    a.dst == b.dst && a.table == b.table && a.metric == b.metric
}

impl FakeRoutes {
    pub fn new() -> FakeRoutes {
        FakeRoutes::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declare an interface, so routes out of it can be added.
    pub fn add_link(&self, name: &IfName) {
        self.lock().links.insert(name.clone());
    }

    /// Remove an interface and the routes out of it, as the kernel does.
    pub fn remove_link(&self, name: &IfName) {
        let mut s = self.lock();
        s.links.remove(name);
        s.routes.retain(|r| !matches!(&r.target, RouteTarget::Dev { dev, .. } if dev == name));
    }

    /// Make the next `n` calls fail.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// How many calls were made.
    pub fn calls(&self) -> u32 {
        self.lock().calls
    }

    /// Every route held, in insertion order.
    pub fn routes(&self) -> Vec<TableRoute> {
        self.lock().routes.clone()
    }

    /// Every rule held.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().rules.iter().copied().collect()
    }

    fn enter(&self, what: &str) -> Result<MutexGuard<'_, State>, RouteError> {
        let mut s = self.lock();
        s.calls += 1;
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(RouteError::Netlink {
                op: "fake",
                what: what.to_string(),
                source: io::Error::other("injected failure"),
            });
        }
        Ok(s)
    }

    fn check_link(s: &State, r: &TableRoute) -> Result<(), RouteError> {
        match &r.target {
            RouteTarget::Dev { dev, .. } if !s.links.contains(dev) => Err(RouteError::NoSuchLink(dev.clone())),
            _ => Ok(()),
        }
    }
}

impl Routes for FakeRoutes {
    fn add(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        route.validate()?;
        let mut s = self.enter(&route.to_string())?;
        Self::check_link(&s, route)?;
        if s.routes.iter().any(|r| same_slot(r, route)) {
            return Err(RouteError::Exists(route.to_string()));
        }
        s.routes.push(route.clone());
        Ok(())
    }

    fn replace(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        route.validate()?;
        let mut s = self.enter(&route.to_string())?;
        Self::check_link(&s, route)?;
        match s.routes.iter_mut().find(|r| same_slot(r, route)) {
            Some(r) => *r = route.clone(),
            None => s.routes.push(route.clone()),
        }
        Ok(())
    }

    fn delete(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        route.validate()?;
        let mut s = self.enter(&route.to_string())?;
        s.routes.retain(|r| !(same_slot(r, route) && r.protocol == route.protocol && r.target == route.target));
        Ok(())
    }

    fn list(&mut self, table: u32, protocol: Option<u8>) -> Result<Vec<TableRoute>, RouteError> {
        let s = self.enter("routes")?;
        Ok(s.routes.iter().filter(|r| r.table == table && protocol.is_none_or(|p| p == r.protocol)).cloned().collect())
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<(), RouteError> {
        self.enter(&rule.to_string())?.rules.insert(*rule);
        Ok(())
    }

    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RouteError> {
        self.enter(&rule.to_string())?.rules.remove(rule);
        Ok(())
    }

    fn list_rules(&mut self) -> Result<Vec<Rule>, RouteError> {
        Ok(self.enter("rules")?.rules.iter().copied().collect())
    }
}
