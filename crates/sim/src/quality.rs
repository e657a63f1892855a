//! Speed tests in the simulator: what a test from a node through one neighbor measures is set
//! per (node, neighbor) by [`Sim::set_path`] ([`PathModel`]: goodput, round trip, an optional
//! degradation from a given time). A test reports after [`TEST_TIME`]; through a neighbor with
//! no model it finds no route. The model is the path as it really is, so a neighbor that claims
//! more than it delivers (a liar) is measured at what it delivers.

use crate::driver::Event;
use crate::{NodeIdx, Sim};
use tollway_core::node::TestOutcome;
use tollway_core::quality::Sample;
use tollway_core::{Millis, NodeId};

/// How long a simulated test takes.
pub const TEST_TIME: Millis = Millis(2000);

/// The path from a node through one neighbor to the test server, as tests measure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathModel {
    pub down_kbit: u64,
    pub up_kbit: u64,
    pub rtt_us: u32,
    /// From this time on, the neighbor forwards at most this many kbit/s (a degrader).
    pub degrade: Option<(Millis, u64)>,
}

impl PathModel {
    pub fn new(kbit: u64) -> PathModel {
        PathModel { down_kbit: kbit, up_kbit: kbit, rtt_us: 20_000, degrade: None }
    }

    /// Goodput down and up at `now`.
    pub fn goodput(&self, now: Millis) -> (u64, u64) {
        match self.degrade {
            Some((at, cap)) if now >= at => (self.down_kbit.min(cap), self.up_kbit.min(cap)),
            _ => (self.down_kbit, self.up_kbit),
        }
    }
}

impl Sim {
    /// Set what tests from `from` through its neighbor `via` measure.
    pub fn set_path(&mut self, from: NodeIdx, via: NodeIdx, model: PathModel) {
        self.trace.note(self.now, format_args!("path {from} via {via} {model:?}"));
        self.paths.insert((from, via), model);
    }

    /// Set what tests from `from` through `via` against another destination than the internet
    /// (a node serving tests inside the mesh: `destination` 1 or more) measure. A node tests
    /// the destinations it has a path to through a neighbor in turn.
    pub fn set_destination_path(&mut self, from: NodeIdx, via: NodeIdx, destination: u8, model: PathModel) {
        self.trace.note(self.now, format_args!("path {from} via {via} to destination {destination} {model:?}"));
        self.destination_paths.insert((from, via, destination), model);
    }

    /// Forget the path from `from` through `via`: tests through it find no route.
    pub fn remove_path(&mut self, from: NodeIdx, via: NodeIdx) {
        self.trace.note(self.now, format_args!("path {from} via {via} removed"));
        self.paths.remove(&(from, via));
    }

    /// Test bytes the node's core has spent in the last hour and in all.
    pub fn test_budget(&self, n: NodeIdx) -> (u64, u64) {
        self.nodes[n.0].core.as_ref().map_or((0, 0), |c| c.test_budget(self.now))
    }

    pub(crate) fn run_speed_test(&mut self, n: NodeIdx, test: u64, neighbor: NodeId, max_bytes: u64) {
        let via = self.by_id.get(&neighbor).copied();
        // The destinations it has a path to through this neighbor, taken in turn.
        let mut reachable: Vec<(u8, PathModel)> = Vec::new();
        if let Some(v) = via {
            reachable.extend(self.paths.get(&(n, v)).map(|m| (0, *m)));
            reachable.extend(self.destination_paths.range((n, v, 1)..=(n, v, u8::MAX)).map(|((_, _, d), m)| (*d, *m)));
        }
        let chosen = via.filter(|_| !reachable.is_empty()).map(|v| {
            let turn = self.test_turns.entry((n, v)).or_default();
            *turn += 1;
            reachable[(*turn - 1) % reachable.len()]
        });
        let outcome = match chosen {
            None => TestOutcome::NoRoute("no model of a path through this neighbor".into()),
            Some((destination, m)) => {
                let (down, up) = m.goodput(self.now);
                // Each direction moves what the goodput allows in a second, at most max_bytes.
                let bytes = (down * 1000 / 8).min(max_bytes) + (up * 1000 / 8).min(max_bytes);
                let at = self.now + TEST_TIME;
                TestOutcome::Measured {
                    sample: Sample { at, down_kbit: down, up_kbit: up, rtt_us: m.rtt_us, loss_ppm: 0 },
                    bytes,
                    destination,
                }
            }
        };
        let generation = self.nodes[n.0].generation;
        self.schedule(self.now + TEST_TIME, Event::SpeedTestDone { node: n, generation, test, outcome });
    }

    pub(crate) fn on_speed_test_done(&mut self, n: NodeIdx, generation: u64, test: u64, outcome: TestOutcome) {
        if self.nodes[n.0].generation != generation {
            return;
        }
        let now = self.now_for(n);
        if let Some(core) = self.nodes[n.0].core.as_mut() {
            core.handle_speed_test(now, test, outcome);
        }
    }
}
