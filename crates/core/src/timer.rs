//! The core's timers: a closed set, each handled in one place (`Node::handle_timeout`).

use crate::time::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Multicast an Announce and unicast a Hello to each neighbor.
    Announce,
    /// Ask the driver to read kernel tunnel state.
    Sample,
    /// Start a speed test through a neighbor that is due one; judge the neighbors' quality.
    Quality,
}

impl Timer {
    pub const ALL: [Timer; 3] = [Timer::Announce, Timer::Sample, Timer::Quality];
}

#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    at: [Option<Millis>; 3],
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, when: Millis) {
        self.at[t as usize] = Some(when);
    }

    pub fn get(&self, t: Timer) -> Option<Millis> {
        self.at[t as usize]
    }

    pub fn next(&self) -> Option<Millis> {
        self.at.iter().flatten().min().copied()
    }

    /// Timers due at `now`, cleared as they are returned.
    pub fn expire(&mut self, now: Millis) -> Vec<Timer> {
        let mut due = Vec::new();
        for t in Timer::ALL {
            if matches!(self.at[t as usize], Some(w) if w <= now) {
                self.at[t as usize] = None;
                due.push(t);
            }
        }
        due
    }
}
