//! Unit tests of the driver: the real core `Node` behind it; the kernel's, the traffic's and the
//! store's in-memory fakes; a manual clock. A second core `Node` plays the neighbor: the harness
//! carries discovery datagrams and control messages between the two as the I/O tasks would, and
//! records everything that leaves the driver in one ordered log ([`Wire`]), into which the fake
//! store's observer writes every commit attempt at the moment it happens. So "X was stored
//! before Y was sent" and "nothing was sent after the refused commit" are read off the log.

use super::*;
use tollway_core::market::notes::Note;
use tollway_core::market::{Amount, MarketConfig, Price};
use tollway_core::node::{CounterReading, CounterSample};
use tollway_core::wire::market::MarketMessage;
use tollway_core::{CoreConfig, Identity, NeighborState, TunnelStats, DISCOVERY_GROUP};
use tollway_kernel::fake::{FakeKernel, FakeOp};
use tollway_store::fake::FakeStore;
use tollway_store::{Batch, PaymentDirection};
use tollway_traffic::fake::{FakeFirewall, FakeShaper};
use tollway_traffic::NeighborKey;

const UNIX0: u64 = 1_700_000_000_000;
const STORE_PATH: &str = "/var/lib/tollway/ledger.db";
const OUR_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const PEER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const MB: u64 = 1_000_000;

fn eth0() -> IfName {
    IfName::new("eth0").unwrap()
}

fn identity(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

/// Ours and the neighbor's, ours the smaller: the driver opens the control session.
fn identities() -> (Identity, Identity) {
    let (a, b) = (identity(1), identity(2));
    if a.node_id() < b.node_id() {
        (a, b)
    } else {
        (b, a)
    }
}

/// What left the driver (or reached the store), in order.
#[derive(Debug, Clone)]
enum Wire {
    Discovery { dst: Ipv6Addr, payload: Vec<u8> },
    Control { session: SessionId, msg: ControlMessage },
    Close { session: SessionId },
    Commit { number: u32, stored: bool, batch: Batch },
}

impl Wire {
    fn is_send(&self) -> bool {
        !matches!(self, Wire::Commit { .. })
    }

    /// The cumulative amount of a payment note sent, if this is one.
    fn payment(&self) -> Option<u64> {
        match self {
            Wire::Control { msg: ControlMessage::Market(MarketMessage::Payment { proof, .. }), .. } => {
                Some(Note::parse(proof).expect("a note").cumulative.0)
            }
            _ => None,
        }
    }

    fn is_ack(&self) -> bool {
        matches!(self, Wire::Control { msg: ControlMessage::Market(MarketMessage::PaymentAck { .. }), .. })
    }

    /// The cumulative amounts of the payments this commit stores (`direction`).
    fn stores(&self, direction: PaymentDirection) -> Vec<u64> {
        match self {
            Wire::Commit { stored: true, batch, .. } => {
                batch.payments.iter().filter(|p| p.direction == direction).map(|p| p.cumulative_after.0).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The receiving ends of the driver's channels, and the log.
#[derive(Default)]
struct Taps {
    discovery: Vec<UnboundedReceiver<Outgoing>>,
    sessions: Vec<(SessionId, UnboundedReceiver<Outbound>)>,
    opened: Vec<SessionId>,
    log: Vec<Wire>,
}

impl Taps {
    fn drain(&mut self) {
        for rx in &mut self.discovery {
            while let Ok(o) = rx.try_recv() {
                self.log.push(Wire::Discovery { dst: o.dst, payload: o.payload });
            }
        }
        for (session, rx) in &mut self.sessions {
            while let Ok(o) = rx.try_recv() {
                self.log.push(match o {
                    Outbound::Message(msg) => Wire::Control { session: *session, msg },
                    Outbound::Close => Wire::Close { session: *session },
                });
            }
        }
    }
}

type SharedTaps = Arc<Mutex<Taps>>;

fn lock(t: &SharedTaps) -> std::sync::MutexGuard<'_, Taps> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens nothing: records the session for the harness to connect.
struct FakeSessions(SharedTaps);

impl SessionOpener for FakeSessions {
    fn open(
        &mut self,
        session: SessionId,
        _: IfName,
        _: Ipv6Addr,
        _: SocketAddrV6,
        outbound: UnboundedReceiver<Outbound>,
    ) {
        let mut t = lock(&self.0);
        t.sessions.push((session, outbound));
        t.opened.push(session);
    }
}

fn core_config(market: MarketConfig) -> CoreConfig {
    CoreConfig { interfaces: vec![eth0()], market, ..CoreConfig::default() }
}

/// We pay: the neighbor asks 0.002 per MB, we ask nothing.
fn payer_markets() -> (MarketConfig, MarketConfig) {
    let ours = MarketConfig {
        max_price: Price(10_000),
        pay_threshold: Amount(1_000),
        credit_limit: Amount(1_000_000),
        ..MarketConfig::default()
    };
    let theirs = MarketConfig { ask: Price(2_000), credit_limit: Amount(1_000_000_000), ..ours.clone() };
    (ours, theirs)
}

/// We are paid: we ask 0.002 per MB, the neighbor asks nothing.
fn payee_markets() -> (MarketConfig, MarketConfig) {
    let (ours, theirs) = payer_markets();
    (theirs, ours)
}

/// The fakes a driver runs on, with handles kept to inspect them.
struct Fakes {
    kernel: FakeKernel,
    firewall: FakeFirewall,
    shaper: FakeShaper,
    store: FakeStore,
    taps: SharedTaps,
}

impl Fakes {
    fn new(store: FakeStore, firewall: FakeFirewall) -> Fakes {
        let kernel = FakeKernel::new();
        kernel.add_link(&IfName::new("lo").unwrap());
        kernel.add_link(&eth0());
        let taps: SharedTaps = Arc::default();
        let observer = taps.clone();
        store.observe(move |attempt, batch| {
            let mut t = lock(&observer);
            t.drain();
            t.log.push(Wire::Commit { number: attempt.number, stored: attempt.stored, batch: batch.clone() });
        });
        Fakes { kernel, firewall, shaper: FakeShaper::new(), store, taps }
    }

    /// A driver for `us` on these fakes, its clock standing at `now` (not prepared yet).
    fn driver(&self, us: Identity, market: MarketConfig, now: Now) -> (Driver, ManualClock) {
        let (clock, hand) = Clock::manual(now);
        let (tx, rx) = unbounded_channel();
        lock(&self.taps).discovery.push(rx);
        let backends = Backends {
            tunnels: Box::new(self.kernel.tunnels()),
            links: Box::new(self.kernel.links()),
            firewall: Box::new(self.firewall.clone()),
            shaper: Box::new(self.shaper.clone()),
            store: Box::new(self.store.clone()),
        };
        let io = Io {
            discovery: HashMap::from([(eth0(), tx)]),
            discovery_queue: DiscoveryQueue::new(16),
            sessions: Box::new(FakeSessions(self.taps.clone())),
        };
        let node = Node::new(core_config(market), us, now, [7; 32]);
        let currency = Currency { name: "XTW".into(), decimals: 6 };
        (Driver::new(node, clock, backends, io, currency, 7478, tollway_traffic::Admission::default()), hand)
    }
}

/// The driver with fakes, the neighbor's core, and what connects them.
struct Harness {
    driver: Driver,
    clock: ManualClock,
    kernel: FakeKernel,
    firewall: FakeFirewall,
    shaper: FakeShaper,
    store: FakeStore,
    taps: SharedTaps,
    us: Identity,
    them: Identity,
    peer: Node,
    /// Log entries already delivered to the neighbor.
    delivered: usize,
    /// (our session, its session).
    session: Option<(SessionId, SessionId)>,
    next_accept: u64,
    /// The neighbor's tunnel for us, once it made one.
    peer_tunnel: Option<IfName>,
    /// The neighbor's counters: bytes it received from us, bytes it sent us.
    peer_rx: u64,
    peer_tx: u64,
}

impl Harness {
    /// A driver for `us` starting at `start`, on `store` and `firewall` (which outlive a
    /// restart, as the database file and the kernel's counters do), next to the neighbor `peer`.
    fn start(us: Identity, market: MarketConfig, store: FakeStore, firewall: FakeFirewall, peer: Peer) -> Harness {
        let f = Fakes::new(store, firewall);
        let (mut driver, clock) = f.driver(us.clone(), market, peer.now);
        driver.prepare().expect("prepare");
        Harness {
            driver,
            clock,
            kernel: f.kernel,
            firewall: f.firewall,
            shaper: f.shaper,
            store: f.store,
            taps: f.taps,
            us,
            them: peer.id,
            peer: peer.node,
            delivered: 0,
            session: None,
            next_accept: 0,
            peer_tunnel: peer.tunnel,
            peer_rx: peer.rx,
            peer_tx: peer.tx,
        }
    }

    fn new(markets: (MarketConfig, MarketConfig), store: FakeStore) -> Harness {
        let (us, them) = identities();
        let peer = Peer::new(them, markets.1, Now::new(Millis(0), UNIX0));
        Harness::start(us, markets.0, store, FakeFirewall::new(), peer)
    }

    fn now(&self) -> Now {
        self.clock.now()
    }

    fn our_tunnel(&self) -> IfName {
        IfName::for_tunnel(&self.us.node_id(), &self.them.node_id())
    }

    /// Everything logged so far.
    fn wire(&self) -> Vec<Wire> {
        let mut t = lock(&self.taps);
        t.drain();
        t.log.clone()
    }

    /// Carry messages both ways until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let (fresh, opened) = {
                let mut t = lock(&self.taps);
                t.drain();
                (t.log[self.delivered..].to_vec(), std::mem::take(&mut t.opened))
            };
            self.delivered += fresh.len();
            for w in fresh {
                busy |= w.is_send();
                self.deliver_to_peer(w);
            }
            for ours in opened {
                busy = true;
                self.next_accept += 1;
                let theirs = SessionId(SessionId::ACCEPTED_BIT | self.next_accept);
                self.session = Some((ours, theirs));
                let ifname = IfName::for_tunnel(&self.them.node_id(), &self.us.node_id());
                let from = SocketAddrV6::new(self.us.node_id().tunnel_link_local(), 40_000, 0, 5);
                self.peer.handle_control_accepted(self.now(), theirs, &ifname, from);
                self.driver.handle(Input::ControlOpened { session: ours });
            }
            while let Some(a) = self.peer.poll_action() {
                busy = true;
                self.execute_peer(a);
            }
            if self.peer_tunnel.is_some() {
                self.kernel.set_handshake_age(&self.our_tunnel(), Some(1));
            }
            if !busy {
                return;
            }
        }
        panic!("messages never settle");
    }

    fn deliver_to_peer(&mut self, w: Wire) {
        let now = self.now();
        match w {
            Wire::Discovery { dst, payload } if dst == DISCOVERY_GROUP || dst == PEER_LL => {
                self.peer.handle_discovery(now, &eth0(), OUR_LL, &payload)
            }
            Wire::Control { session, msg } => {
                if let Some((_, theirs)) = self.session.filter(|(ours, _)| *ours == session) {
                    self.peer.handle_control_message(now, theirs, msg);
                }
            }
            Wire::Close { session } => {
                if let Some((_, theirs)) = self.session.filter(|(ours, _)| *ours == session) {
                    self.session = None;
                    self.peer.handle_control_closed(now, theirs, "closed by the neighbor");
                }
            }
            _ => {}
        }
    }

    fn execute_peer(&mut self, a: Action) {
        let now = self.now();
        match a {
            Action::SendDiscovery { dst, payload, .. } if dst == DISCOVERY_GROUP || dst == OUR_LL => {
                self.driver.handle(Input::Discovery { iface: eth0(), src: PEER_LL, bytes: payload });
            }
            Action::SendControl { session, msg } => {
                if let Some((ours, _)) = self.session.filter(|(_, theirs)| *theirs == session) {
                    self.driver.handle(Input::ControlMessage { session: ours, msg });
                }
            }
            Action::CloseControl { session } => {
                if let Some((ours, _)) = self.session.filter(|(_, theirs)| *theirs == session) {
                    self.session = None;
                    self.driver.handle(Input::ControlClosed { session: ours, reason: "closed by the neighbor".into() });
                }
            }
            Action::EnsureTunnel(spec) => self.peer_tunnel = Some(spec.ifname),
            Action::RemoveTunnel { .. } => self.peer_tunnel = None,
            Action::SampleTunnels => {
                let Some(ifname) = self.peer_tunnel.clone() else { return };
                let up = self.kernel.tunnel(&self.our_tunnel()).is_some();
                let stats = TunnelStats { last_handshake_secs: up.then_some(1), ..TunnelStats::default() };
                self.peer.handle_tunnel_stats(now, &ifname, stats);
                let sample = CounterSample {
                    ifname,
                    rx: Some(CounterReading { instance: 1, value: self.peer_rx }),
                    tx: Some(CounterReading { instance: 2, value: self.peer_tx }),
                    dropped: None,
                };
                self.peer.handle_counters(now, &[sample]);
            }
            _ => {}
        }
    }

    /// Advance the clock in 10 ms steps, running both sides' timers and carrying messages.
    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.clock.advance(10);
            self.driver.poll();
            let now = self.now();
            if self.peer.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.peer.handle_timeout(now);
            }
            self.pump();
        }
    }

    fn connected(&self) -> bool {
        let ours = self.driver.node().neighbor(&self.them.node_id()).map(|n| n.state());
        let theirs = self.peer.neighbor(&self.us.node_id()).map(|n| n.state());
        ours == Some(NeighborState::Connected) && theirs == Some(NeighborState::Connected)
    }

    /// Run until both sides are connected and have agreed on prices.
    fn connect(&mut self) {
        for _ in 0..300 {
            if self.connected() {
                self.run_for(1000);
                return;
            }
            self.run_for(100);
        }
        panic!("not connected within 30 s");
    }

    /// `bytes` travel from the neighbor to us: its tunnel sent them, our firewall counted them.
    fn bytes_to_us(&mut self, bytes: u64) {
        self.firewall.add_traffic(&NeighborKey::of(&self.them.node_id()), bytes, bytes / 1000);
        self.peer_tx += bytes;
    }

    /// Until the driver stops on its own or `secs` have passed: `mb_per_sec` MB a second from
    /// the neighbor to us.
    fn traffic(&mut self, secs: u64, mb_per_sec: u64) {
        for _ in 0..secs {
            if self.driver.fatal().is_some() {
                return;
            }
            self.bytes_to_us(mb_per_sec * MB);
            self.run_for(1000);
        }
    }

    /// The neighbor, taken out of the harness when this driver is gone.
    fn into_peer(self) -> Peer {
        Peer {
            node: self.peer,
            id: self.them,
            now: self.clock.now(),
            tunnel: self.peer_tunnel,
            rx: self.peer_rx,
            tx: self.peer_tx,
        }
    }
}

/// The neighbor's core, carried from one driver's harness to the next.
struct Peer {
    node: Node,
    id: Identity,
    now: Now,
    /// Its tunnel for us, and its counters (see `Harness`).
    tunnel: Option<IfName>,
    rx: u64,
    tx: u64,
}

impl Peer {
    fn new(id: Identity, market: MarketConfig, now: Now) -> Peer {
        let mut node = Node::new(core_config(market), id.clone(), now, [9; 32]);
        node.handle_timeout(now);
        Peer { node, id, now, tunnel: None, rx: 0, tx: 0 }
    }
}

/// A Vec<u8> behind a lock, as a log writer.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `f` with this thread's log lines written to a string.
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    // A global subscriber as interested as the capturing one: otherwise a callsite first reached
    // on a thread without a subscriber, while no capture was alive anywhere, is cached as never
    // interesting, and a test capturing its lines on another thread (tests run in parallel)
    // would miss them.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let sink = tracing_subscriber::fmt().with_writer(std::io::sink).with_max_level(tracing::Level::INFO).finish();
        let _ = tracing::subscriber::set_global_default(sink);
    });
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

/// Number of the first commit attempt that stores a payment in `direction`, in a run on a
/// healthy store.
fn first_commit_storing(wire: &[Wire], direction: PaymentDirection, nth: usize) -> u32 {
    wire.iter()
        .filter(|w| !w.stores(direction).is_empty())
        .nth(nth)
        .map(|w| match w {
            Wire::Commit { number, .. } => *number,
            _ => unreachable!(),
        })
        .expect("the run stores such a payment")
}

/// The log entries after the refused commit.
fn after_refusal(wire: &[Wire]) -> (u32, &[Wire]) {
    let i = wire.iter().position(|w| matches!(w, Wire::Commit { stored: false, .. })).expect("a refused commit");
    let Wire::Commit { number, .. } = &wire[i] else { unreachable!() };
    (*number, &wire[i + 1..])
}

// ----- order -----

#[test]
fn actions_are_executed_in_order_and_a_payment_is_stored_before_it_is_sent() {
    let mut h = Harness::new(payer_markets(), FakeStore::new(STORE_PATH));
    h.connect();
    h.traffic(5, 5);
    let wire = h.wire();
    let payments: Vec<(usize, u64)> = wire.iter().enumerate().filter_map(|(i, w)| Some((i, w.payment()?))).collect();
    assert!(payments.len() >= 3, "we paid several times: {payments:?}");
    for (i, cumulative) in &payments {
        // The last commit before the note went out stored exactly that note.
        let stored = wire[..*i].iter().rev().find(|w| matches!(w, Wire::Commit { .. })).unwrap();
        assert_eq!(stored.stores(PaymentDirection::Sent), vec![*cumulative], "note {cumulative} stored just before");
    }
    // The statement of a tick precedes its payment on the session, as the core queued them.
    let first_payment = payments[0].0;
    let statement = wire[..first_payment]
        .iter()
        .rposition(|w| matches!(w, Wire::Control { msg: ControlMessage::Market(MarketMessage::Statement(_)), .. }));
    assert!(statement.is_some(), "a statement before the first payment");
    // What the neighbor holds is what we stored.
    let stored = h.store.neighbor(&h.them.node_id()).unwrap().payment.issued.unwrap();
    assert_eq!(h.peer.neighbor(&h.us.node_id()).unwrap().market.record.ledger.received, stored.cumulative);
    assert_eq!(h.driver.node().neighbor(&h.them.node_id()).unwrap().market.record.ledger.paid, stored.cumulative);

    // Shutting down: the neighbor is told why, then the session is closed, then the ledger is
    // stored one last time; the tunnel and the traffic rules are removed.
    let from = h.wire().len();
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Input::Shutdown).unwrap();
    h.driver.run(rx);
    let tail = &h.wire()[from..];
    let close_msg = tail.iter().position(|w| matches!(w, Wire::Control { msg: ControlMessage::Close { .. }, .. }));
    let close = tail.iter().position(|w| matches!(w, Wire::Close { .. }));
    assert!(close_msg.is_some() && close_msg < close, "Close message, then the session closed: {tail:?}");
    assert!(h.kernel.tunnel_names().is_empty());
    assert!(h.firewall.applied().is_none() && h.shaper.removals() > 0);
}

// ----- kernel failures -----

#[test]
fn a_failed_tunnel_call_is_logged_and_retried() {
    let mut h = Harness::new(payer_markets(), FakeStore::new(STORE_PATH));
    h.kernel.fail_always(FakeOp::TunnelEnsure, None);
    let ((), logs) = with_logs(|| h.run_for(500));
    assert!(logs.contains("tunnel operation failed"), "{logs}");
    assert!(logs.contains("injected failure of TunnelEnsure"), "the error is in the log: {logs}");
    let tried = h.kernel.count(FakeOp::TunnelEnsure);
    assert!(tried >= 1 && h.kernel.tunnel(&h.our_tunnel()).is_none());
    // Not hammered: retried after a pause (5 s), and again while it keeps failing.
    h.run_for(4_000);
    assert_eq!(h.kernel.count(FakeOp::TunnelEnsure), tried, "no retry within the pause");
    h.run_for(1_500);
    assert!(h.kernel.count(FakeOp::TunnelEnsure) > tried, "retried after the pause");
    // Once the kernel accepts it, the tunnel is made and the neighbor connects.
    h.kernel.clear_failures();
    h.connect();
    assert!(h.kernel.tunnel(&h.our_tunnel()).is_some());
}

#[test]
fn kernel_state_removed_or_refused_is_put_back_by_the_reconcile_loop() {
    let mut h = Harness::new(payer_markets(), FakeStore::new(STORE_PATH));
    h.connect();
    let ifname = h.our_tunnel();
    // Someone deletes our route; the next reconcile (every 10 samples) puts it back.
    let route = h.kernel.routes().into_iter().find(|r| r.dev == ifname).expect("a route through the tunnel");
    let mut links = h.kernel.links();
    tollway_kernel::Links::remove_route(&mut links, &route).unwrap();
    assert!(!h.kernel.routes().contains(&route));
    h.run_for(10_500);
    assert!(h.kernel.routes().contains(&route), "route restored");

    // A firewall update that fails is logged and applied at the next reconcile.
    let applies = h.firewall.applies();
    h.firewall.fail_next_apply("Error: Could not process rule: No buffer space available");
    h.firewall.flush_ruleset(); // what an operator's `nft flush ruleset` does
    let ((), logs) = with_logs(|| h.run_for(1_000));
    assert!(logs.contains("traffic rules were removed by someone else"), "{logs}");
    assert!(logs.contains("applying firewall rules failed"), "{logs}");
    assert!(logs.contains("No buffer space available"), "{logs}");
    h.run_for(10_500);
    assert!(h.firewall.applies() > applies, "applied again");
    assert!(h.firewall.applied().is_some_and(|p| p.neighbors().count() == 1));

    // A tunnel deleted behind our back comes back.
    assert!(h.kernel.delete_link_externally(&ifname));
    h.run_for(10_500);
    assert!(h.kernel.tunnel(&ifname).is_some(), "tunnel re-created");
    assert!(h.kernel.routes().contains(&route), "with its route");
}

// ----- the store refuses a write -----

/// A payer run of a fixed script: connect, then 5 MB a second for `secs` seconds. Deterministic
/// (manual clock, fixed seeds), so two runs commit the same batches in the same order.
fn payer_run(store: FakeStore, secs: u64) -> Harness {
    let mut h = Harness::new(payer_markets(), store);
    h.connect();
    h.traffic(secs, 5);
    h
}

#[test]
fn a_refused_commit_stops_every_action_queued_after_it() {
    // Where the first payment is stored in a healthy run ...
    let healthy = payer_run(FakeStore::new(STORE_PATH), 8);
    let n = first_commit_storing(&healthy.wire(), PaymentDirection::Sent, 0);
    // ... is where the disk fills up in this one.
    let store = FakeStore::new(STORE_PATH);
    store.fail_from_commit(n);
    let mut h = payer_run(store, 8);
    let wire = h.wire();
    let (refused, after) = after_refusal(&wire);
    assert_eq!(refused, n);
    assert!(after.is_empty(), "nothing after the refused commit: {after:?}");
    assert!(wire.iter().all(|w| w.payment().is_none()), "the unstored payment was never sent");
    let stop = h.driver.fatal().expect("the driver stopped").to_string();
    assert!(stop.contains(STORE_PATH) && stop.contains("No space left on device"), "{stop}");

    // It executes nothing more, whatever arrives or whatever time it is.
    let calls = h.kernel.calls().len();
    let applies = (h.firewall.applies(), h.shaper.applies());
    h.bytes_to_us(5 * MB);
    h.run_for(5_000);
    h.driver.handle(Input::ControlMessage { session: h.session.unwrap().0, msg: ControlMessage::Ping { nonce: 1 } });
    assert!(h.wire().len() == wire.len(), "still nothing sent");
    assert_eq!(h.kernel.calls().len(), calls, "no kernel call");
    assert_eq!((h.firewall.applies(), h.shaper.applies()), applies);
    assert_eq!(h.store.attempts(), refused, "no further commit");

    // `run` returns at once; it removes the tunnel, keeps the firewall's counters (the bytes not
    // stored yet are billed after the restart) and sends nothing.
    let (_tx, rx) = std::sync::mpsc::channel();
    let ((), logs) = with_logs(|| h.driver.run(rx));
    assert!(logs.contains("stopping without executing the actions queued after the refused write"), "{logs}");
    assert!(h.wire().len() == wire.len(), "nothing sent while stopping");
    assert!(h.kernel.tunnel_names().is_empty(), "tunnel removed");
    assert!(h.firewall.applied().is_some(), "firewall counters kept");
}

#[test]
fn whichever_commit_is_refused_nothing_queued_after_it_is_executed() {
    let healthy = payer_run(FakeStore::new(STORE_PATH), 6);
    let commits = healthy.store.attempts();
    assert!(commits >= 6, "{commits}");
    for n in 1..=commits {
        let store = FakeStore::new(STORE_PATH);
        store.fail_from_commit(n);
        let h = payer_run(store, 6);
        let wire = h.wire();
        let (refused, after) = after_refusal(&wire);
        assert_eq!(refused, n);
        assert!(after.is_empty(), "commit {n} refused, then sent: {after:?}");
        assert!(h.driver.fatal().is_some());
        // Every note the neighbor got was stored before it left.
        let mut stored = 0;
        for w in &wire {
            stored = w.stores(PaymentDirection::Sent).into_iter().fold(stored, u64::max);
            if let Some(c) = w.payment() {
                assert!(c <= stored, "commit {n} refused: note {c} sent, {stored} stored");
            }
        }
    }
}

#[test]
fn a_payment_whose_receipt_cannot_be_stored_is_not_acknowledged() {
    let payee_run = |store: FakeStore| {
        let mut h = Harness::new(payee_markets(), store);
        h.connect();
        h.traffic(8, 5);
        h
    };
    let healthy = payee_run(FakeStore::new(STORE_PATH));
    let wire = healthy.wire();
    assert!(wire.iter().any(Wire::is_ack), "a healthy payee acknowledges");
    let n = first_commit_storing(&wire, PaymentDirection::Received, 0);
    let store = FakeStore::new(STORE_PATH);
    store.fail_from_commit(n);
    let h = payee_run(store);
    let wire = h.wire();
    let (_, after) = after_refusal(&wire);
    assert!(after.is_empty(), "{after:?}");
    assert!(!wire.iter().any(Wire::is_ack), "no acknowledgement of the payment it could not store");
}

// ----- restart -----

#[test]
fn a_restart_on_a_healthy_store_neither_loses_nor_repeats_a_payment() {
    // The disk fills up when the second payment is being stored.
    let healthy = payer_run(FakeStore::new(STORE_PATH), 8);
    let n = first_commit_storing(&healthy.wire(), PaymentDirection::Sent, 1);
    let lost = healthy.wire().iter().flat_map(|w| w.stores(PaymentDirection::Sent)).nth(1).unwrap();
    let store = FakeStore::new(STORE_PATH);
    store.fail_from_commit(n);
    let mut h = payer_run(store.clone(), 8);
    assert!(h.driver.fatal().is_some());
    let (_tx, rx) = std::sync::mpsc::channel();
    h.driver.run(rx);
    let first_run = h.wire();
    let first = store.neighbor(&h.them.node_id()).unwrap().payment.issued.expect("the first note was stored");
    assert!(first.cumulative.0 < lost);
    // The process is gone: its connection drops. The kernel's counters stay.
    let firewall = h.firewall.clone();
    if let Some((_, theirs)) = h.session.take() {
        let now = h.now();
        h.peer.handle_control_closed(now, theirs, "connection reset");
    }
    let mut peer = h.into_peer();
    peer.now = peer.now.advance(Duration::from_secs(2));

    // Restart on the same store, now with space.
    store.heal();
    let (us, _) = identities();
    let mut h = Harness::start(us, payer_markets().0, store.clone(), firewall, peer);
    h.connect();
    h.run_for(3_000);
    let second_run = h.wire();
    let notes: Vec<u64> = second_run.iter().filter_map(Wire::payment).collect();
    // The stored note is re-sent (or was acknowledged); the debt that the lost note was for is
    // paid with exactly the lost note's amount, not more.
    assert!(notes.iter().all(|c| *c == first.cumulative.0 || *c == lost), "{notes:?} (stored {first:?}, lost {lost})");
    assert!(notes.contains(&lost), "the debt is paid again: {notes:?}");
    let stored = store.neighbor(&h.them.node_id()).unwrap().payment.issued.unwrap();
    assert_eq!(stored.cumulative.0, lost);
    assert_eq!(h.peer.neighbor(&h.us.node_id()).unwrap().market.record.ledger.received.0, lost);
    // Across both runs, the neighbor never got a note we had not stored first.
    let mut max_stored = 0;
    for w in first_run.iter().chain(&second_run) {
        max_stored = w.stores(PaymentDirection::Sent).into_iter().fold(max_stored, u64::max);
        if let Some(c) = w.payment() {
            assert!(c <= max_stored, "note {c} sent with {max_stored} stored");
        }
    }
    // And payments go on.
    h.traffic(3, 5);
    let paid = store.neighbor(&h.them.node_id()).unwrap().payment.issued.unwrap().cumulative.0;
    assert!(paid > lost);
    assert_eq!(h.peer.neighbor(&h.us.node_id()).unwrap().market.record.ledger.received.0, paid);
}

#[test]
fn a_store_that_cannot_be_read_stops_the_start() {
    let store = FakeStore::new(STORE_PATH);
    store.fail_load(true);
    let f = Fakes::new(store, FakeFirewall::new());
    let (mut driver, _) = f.driver(identities().0, payer_markets().0, Now::new(Millis(0), UNIX0));
    let err = driver.prepare().unwrap_err();
    assert!(err.contains(STORE_PATH), "{err}");
}

#[test]
fn the_discovery_queue_place_is_freed_when_the_driver_takes_a_datagram() {
    let mut h = Harness::new(payer_markets(), FakeStore::new(STORE_PATH));
    let q = h.driver.discovery_queue.clone();
    assert!(q.try_reserve());
    h.driver.handle(Input::Discovery { iface: eth0(), src: PEER_LL, bytes: b"junk".to_vec() });
    assert_eq!(q.queued(), 0);
    for _ in 0..20 {
        q.try_reserve();
    }
    assert_eq!(h.driver.discovery_dropped(), 4, "16 places");
    let status = crate::status::build(&h.driver);
    assert_eq!(status.discovery_rejected.get(crate::status::DRIVER_QUEUE_FULL), Some(&4));
    assert_eq!(status.discovery_rejected.get("malformed"), Some(&1));
}

#[test]
fn run_time_prices_are_stored_before_they_apply_survive_a_restart_and_reset_to_the_config() {
    use tollway_api::Request;
    let store = FakeStore::new(STORE_PATH);
    let mut h = Harness::new(payer_markets(), store.clone());
    let config_ask = h.driver.node().market_config().ask;
    let ask = |h: &Harness| h.driver.node().market_config().ask;
    let r = h.driver.request(Request::PriceSet { ask: Some("0.0042".into()), max_price: None, bid: None });
    assert!(r.ok, "{r:?}");
    assert_eq!(ask(&h), Price(4200));
    let r = h.driver.request(Request::Payments { paused: true });
    assert!(r.ok, "{r:?}");
    let stored = store.settings().unwrap();
    assert_eq!((stored.ask, stored.payments_paused), (Some(4200), Some(true)));

    // A store that refuses: the request is refused and nothing changes.
    store.fail_from_next_commit();
    let r = h.driver.request(Request::PriceSet { ask: Some("0.005".into()), max_price: None, bid: None });
    assert!(!r.ok && r.error.as_deref().unwrap_or("").contains(STORE_PATH), "{r:?}");
    assert_eq!(ask(&h), Price(4200));
    store.heal();

    // A restart on the same store applies them over the config, and says so.
    let (us, them) = identities();
    let peer = Peer::new(them, payer_markets().1, h.now());
    let h2 = Harness::start(us, payer_markets().0, store.clone(), FakeFirewall::new(), peer);
    assert_eq!(ask(&h2), Price(4200));
    assert!(h2.driver.node().market_config().payments_paused);
    let status = crate::status::build(&h2.driver);
    assert_eq!(status.node.market.overrides, ["ask 0.004200 (config 0.000000)", "payments paused (config running)"]);

    // Reset: the config's settings, and nothing stored.
    let mut h2 = h2;
    assert!(h2.driver.request(Request::PriceReset).ok);
    assert_eq!(ask(&h2), config_ask);
    assert!(!h2.driver.node().market_config().payments_paused);
    assert!(store.settings().unwrap().is_empty());
}
