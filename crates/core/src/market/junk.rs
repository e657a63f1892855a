//! Junk: traffic a neighbor sends to this node or its LAN that nobody here asked for. The
//! firewall drops it before it is counted (never billed) and counts it per neighbor; this watch
//! cuts off a neighbor that keeps sending it past the operator's threshold, for a penalty time,
//! with the reason shown. A cut-off neighbor may still speak on the control session (so it
//! learns why), nothing else; junk it sends meanwhile (if the kernel still sees it) extends the
//! cut.
//!
//! What is judged is what arrives from the neighbor, wherever it came from: a node beyond a
//! neighbor can send junk through it (paying it for every byte) to get it cut off here. The
//! default threshold (10 MB a minute, cut off for 5 minutes) makes that cost the attacker a
//! sustained stream; an operator who fears it more than junk sets `junk_limit_kb = 0`.

use crate::time::Millis;

/// The operator's threshold (`[firewall] junk_limit_kb`, `junk_window_secs`,
/// `junk_cut_off_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JunkLimit {
    /// Unsolicited bytes per window beyond which the neighbor is cut off; 0: never.
    pub bytes: u64,
    pub window: Millis,
    /// How long a cut lasts after the last window that went over the limit.
    pub cut_off_for: Millis,
}

impl Default for JunkLimit {
    fn default() -> JunkLimit {
        JunkLimit { bytes: 10_000_000, window: Millis::from_secs(60), cut_off_for: Millis::from_secs(300) }
    }
}

/// A change for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JunkChange {
    /// Cut off (or the cut extended), with why.
    Cut(String),
    /// The penalty time passed: traffic from it is accepted again.
    Lifted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JunkWatch {
    /// Start of the current window and the neighbor's unsolicited byte count then.
    window: Option<(Millis, u64)>,
    /// Cut off until then, and why.
    pub cut_until: Option<Millis>,
    pub reason: Option<String>,
    /// How many times it was cut off (or the cut extended).
    pub cuts: u32,
}

impl JunkWatch {
    /// The firewall's count of unsolicited bytes from the neighbor (cumulative) as of `now`.
    pub fn observe(&mut self, now: Millis, total: u64, limit: &JunkLimit) -> Option<JunkChange> {
        if limit.bytes == 0 {
            self.window = None;
            return self.lift();
        }
        let (start, base) = match self.window {
            // A counter that went back was re-created: start again from it.
            Some((start, base)) if total >= base => (start, base),
            _ => {
                self.window = Some((now, total));
                (now, total)
            }
        };
        let sent = total - base;
        if sent > limit.bytes {
            let secs = now.since(start).as_secs().max(1);
            let why = format!(
                "sends unsolicited traffic: {sent} bytes in {secs} s, over the limit of {} bytes per {} s; cut off for {} s",
                limit.bytes,
                limit.window.as_secs(),
                limit.cut_off_for.as_secs()
            );
            self.window = Some((now, total));
            self.cut_until = Some(now + limit.cut_off_for);
            self.reason = Some(why.clone());
            self.cuts = self.cuts.saturating_add(1);
            return Some(JunkChange::Cut(why));
        }
        if now.since(start) >= limit.window {
            self.window = Some((now, total));
        }
        if self.cut_until.is_some_and(|until| now >= until) {
            return self.lift();
        }
        None
    }

    fn lift(&mut self) -> Option<JunkChange> {
        self.reason = None;
        self.cut_until.take().map(|_| JunkChange::Lifted)
    }

    /// Why it is cut off now, if it is.
    pub fn cut_off(&self) -> Option<&str> {
        self.cut_until.and(self.reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: JunkLimit = JunkLimit { bytes: 1000, window: Millis(60_000), cut_off_for: Millis(600_000) };

    #[test]
    fn junk_under_the_limit_is_tolerated_and_over_it_cuts_off_for_the_penalty_time() {
        // (what, samples of (time ms, unsolicited bytes so far), cut off at the end?)
        type Case<'a> = (&'a str, &'a [(u64, u64)], Option<bool>);
        let cases: &[Case] = &[
            ("nothing", &[(0, 0), (30_000, 0), (90_000, 0)], None),
            ("under the limit in every window", &[(0, 0), (59_000, 900), (61_000, 950), (119_000, 1800)], None),
            ("a burst over the limit", &[(0, 0), (1_000, 1_001)], Some(true)),
            (
                "slowly over the limit within one window",
                &[(0, 0), (20_000, 400), (40_000, 800), (50_000, 1_200)],
                Some(true),
            ),
            ("a re-created counter starts again", &[(0, 5_000), (1_000, 10), (2_000, 900)], None),
        ];
        for (what, samples, cut) in cases {
            let mut w = JunkWatch::default();
            let mut last = None;
            for &(t, total) in *samples {
                if let Some(c) = w.observe(Millis(t), total, &LIMIT) {
                    last = Some(c);
                }
            }
            let got = match last {
                None => None,
                Some(JunkChange::Cut(_)) => Some(true),
                Some(JunkChange::Lifted) => Some(false),
            };
            assert_eq!(got, *cut, "{what}: {w:?}");
            assert_eq!(w.cut_off().is_some(), *cut == Some(true), "{what}");
        }
    }

    #[test]
    fn a_cut_lasts_the_penalty_time_after_the_last_excess_and_then_lifts() {
        let mut w = JunkWatch::default();
        assert_eq!(w.observe(Millis(0), 0, &LIMIT), None);
        let Some(JunkChange::Cut(why)) = w.observe(Millis(2_000), 5_000, &LIMIT) else {
            panic!("cut: {w:?}");
        };
        assert!(why.contains("5000 bytes") && why.contains("limit of 1000 bytes per 60 s"), "{why}");
        // More junk while cut off extends the cut.
        assert!(matches!(w.observe(Millis(100_000), 7_000, &LIMIT), Some(JunkChange::Cut(_))));
        assert_eq!(w.cut_until, Some(Millis(700_000)));
        assert_eq!(w.observe(Millis(650_000), 7_000, &LIMIT), None, "still cut off");
        assert!(w.cut_off().is_some());
        assert_eq!(w.observe(Millis(700_000), 7_000, &LIMIT), Some(JunkChange::Lifted));
        assert_eq!(w.cut_off(), None);
        assert_eq!(w.cuts, 2);
        // A limit of 0 never cuts, and lifts a cut.
        let off = JunkLimit { bytes: 0, ..LIMIT };
        assert!(matches!(w.observe(Millis(701_000), 900_000, &LIMIT), Some(JunkChange::Cut(_))));
        assert_eq!(w.observe(Millis(702_000), 9_000_000, &off), Some(JunkChange::Lifted));
        assert_eq!(w.observe(Millis(703_000), 99_000_000, &off), None);
    }
}
