//! The SWIM-only scale simulation (issue 10 §3, first part): N simulated members of the SWIM
//! core ([`crate::core::swim`]) on a simulated network, seeded, with message loss, pauses of
//! healthy members and crashes, measured against the SWIM and Lifeguard papers.
//!
//! One `u64` seed drives the network (delays, losses, which member crashes or pauses) and every
//! member's rng; a run's [`SwimReport::digest`] hashes every delivered message, so the same seed
//! gives the same run. The cores are the production code; only the network and the scheduler
//! are simulated. Members join one after another through member 0's address, and the
//! measurements start once every member knows every other.
//!
//! What is measured (the definitions matter to compare with the papers):
//! - **first detection** of a crash, in protocol periods the SWIM paper's way (§3.1, §5): the
//!   number of the first detecting member's own periods that began after the crash, up to and
//!   including the one at whose end its probe failed (a period under way at the crash counts
//!   as one). The paper expects e/(e−1) ≈ 1.58 for any group size. The same in simulated time
//!   over the protocol period is reported beside it: members' periods run at random phases, so
//!   wall time adds the wait for the detector's next period.
//! - **all suspect / all dead**: simulated time from the crash until every live member
//!   suspects it (or holds it dead), and until every live member holds it dead (the
//!   suspicion timeout included).
//! - **messages** per member per protocol period: pings, acks, ping-reqs and nacks over the
//!   measured phase; PUSH_PULL chunks apart (those of joining, and the periodic ones).
//! - **false positives**: suspicions of live members (distinct member × incarnation suspected
//!   by anyone), and live members declared dead (distinct member × incarnation, too).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::swim::{Config, Event, Message, State, Swim};
use crate::core::time::{Duration, Instant};

/// Largest group the simulation runs (memory and time of a run grow with it).
pub const MEMBERS_MAX: usize = 4_096;
/// Periods a run may spend getting every member to know every other before it gives up.
pub const CONVERGE_PERIODS_MAX: u64 = 300;
/// Periods a crash may take to be known dead by every live member before the run counts it
/// undetected and moves on.
pub const DETECT_PERIODS_MAX: u64 = 300;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct SwimSimConfig {
    pub seed: u64,
    pub members: usize,
    pub lifeguard: bool,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Members crashed one after another once the group converged (each waits for the last
    /// to be known dead by all, or for `DETECT_PERIODS_MAX`).
    pub crashes: usize,
    /// Periods of the measured steady phase (messages, false positives) before the crashes.
    pub periods: u64,
    /// Pauses during the steady phase: every `pause_every` periods on average a random member
    /// stops for `pause_periods` periods (it hears nothing and runs no timer, then catches up),
    /// as a garbage collector or an overloaded machine would make it. 0 = no pauses.
    pub pause_every: u64,
    pub pause_periods: u64,
    /// One-way delay of a message, drawn uniformly from this range (µs).
    pub delay_us: (u64, u64),
}

impl SwimSimConfig {
    pub fn new(seed: u64, members: usize) -> SwimSimConfig {
        SwimSimConfig {
            seed,
            members,
            lifeguard: true,
            loss: 0.0,
            crashes: 0,
            periods: 20,
            pause_every: 0,
            pause_periods: 3,
            delay_us: (200, 2_000),
        }
    }
}

/// One crash, measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// In the first detector's own protocol periods (module doc).
    pub first_periods: f64,
    /// Simulated time to the first detection, in protocol periods.
    pub first_time_periods: f64,
    /// Simulated time until every live member suspected it or held it dead.
    pub all_suspect_periods: f64,
    /// Simulated time until every live member held it dead.
    pub all_dead_periods: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct SwimReport {
    pub members: usize,
    /// Simulated periods until every member knew every other (joins through one seed).
    pub converge_periods: f64,
    pub detections: Vec<Detection>,
    /// Crashes not known dead by every live member within `DETECT_PERIODS_MAX`.
    pub undetected: usize,
    /// Probe messages (ping, ack, ping-req, nack) per live member per period, steady phase.
    pub messages_per_member_period: f64,
    /// Bytes of those probe messages (their record bodies, spec §8.12) per live member per
    /// period, steady phase: what piggybacked gossip costs beside the message count.
    pub probe_bytes_per_member_period: f64,
    /// PUSH_PULL chunks per live member per period, steady phase (the periodic exchange).
    pub push_pulls_per_member_period: f64,
    /// PUSH_PULL chunks sent while the group formed (the joins), per member.
    pub join_push_pulls_per_member: f64,
    /// Distinct (member, incarnation) suspected by anyone while the member was alive.
    pub suspicions_of_live: u64,
    /// Distinct (member, incarnation) declared dead by anyone while the member was alive
    /// (a paused member is alive).
    pub live_declared_dead: u64,
    /// Pauses that happened.
    pub pauses: u64,
    /// Largest local health multiplier any member reached.
    pub health_max_seen: u32,
    /// FNV-1a hash of every delivered message (time, from, to, kind, seq): equal for equal
    /// seeds.
    pub digest: u64,
    pub messages_delivered: u64,
}

/// Protocol period of the simulated members (the core's default).
const PERIOD: Duration = Duration::from_millis(1_000);

enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Resume {
        member: usize,
    },
}

struct Sim {
    cfg: SwimSimConfig,
    rng: ChaCha8Rng,
    now: Instant,
    members: Vec<Swim>,
    addrs: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    crashed: Vec<bool>,
    paused: Vec<Option<VecDeque<(usize, Message)>>>,
    queue: BTreeMap<(Instant, u64), Ev>,
    order: u64,
    timers: BTreeSet<(Instant, usize)>,
    timer_at: Vec<Instant>,
    digest: u64,
    delivered: u64,
    /// Per member: bytes of the probe messages it sent (record bodies).
    probe_bytes: Vec<u64>,
    health_max_seen: u32,
    /// Suspicions and deaths seen, for the false-positive counts and the detection times.
    suspected: HashSet<(usize, u64)>,
    declared_dead: HashSet<(usize, u64)>,
    /// Per crashed member: (crash time, every member's period count at the crash).
    watch: Option<Watch>,
}

struct Watch {
    victim: usize,
    at: Instant,
    periods_at_crash: Vec<u64>,
    first: Option<(f64, f64)>,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
}

fn id_of(i: usize) -> u64 {
    i as u64 + 1
}

fn fnv(mut h: u64, x: u64) -> u64 {
    for b in x.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Sim {
    fn new(cfg: SwimSimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.members;
        let addrs: Vec<SocketAddr> = (0..n).map(addr_of).collect();
        let members = (0..n)
            .map(|i| {
                let mut c = Config::new(id_of(i), addrs[i]);
                c.lifeguard = cfg.lifeguard;
                Swim::new(c, rng.gen(), Instant::ZERO).expect("default config is valid")
            })
            .collect();
        Sim {
            by_addr: addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect(),
            addrs,
            members,
            crashed: vec![false; n],
            paused: (0..n).map(|_| None).collect(),
            queue: BTreeMap::new(),
            order: 0,
            timers: BTreeSet::new(),
            timer_at: vec![Instant::MAX; n],
            digest: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            probe_bytes: vec![0; n],
            health_max_seen: 0,
            suspected: HashSet::new(),
            declared_dead: HashSet::new(),
            watch: None,
            now: Instant::ZERO,
            rng,
            cfg,
        }
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.order += 1;
        self.queue.insert((at, self.order), ev);
    }

    /// Sends what member `i` queued, arms its timer and records its events.
    fn after_input(&mut self, i: usize) {
        while let Some(t) = self.members[i].poll_transmit() {
            if !matches!(t.msg, Message::PushPull { .. }) {
                // Counted when sent, as the members' own message counters are.
                self.probe_bytes[i] += t.msg.body_len() as u64;
            }
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            if self.rng.gen_bool(self.cfg.loss) {
                continue;
            }
            let (lo, hi) = self.cfg.delay_us;
            let delay = Duration::from_micros(self.rng.gen_range(lo..=hi));
            self.push(
                self.now + delay,
                Ev::Deliver {
                    from: i,
                    to,
                    msg: t.msg,
                },
            );
        }
        self.health_max_seen = self.health_max_seen.max(self.members[i].health());
        while let Some(e) = self.members[i].poll_event() {
            self.on_event(i, e);
        }
        let t = self.members[i].poll_timeout();
        if self.timer_at[i] != t {
            self.timers.remove(&(self.timer_at[i], i));
            self.timers.insert((t, i));
            self.timer_at[i] = t;
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        match e {
            Event::Suspect { id, incarnation } => {
                let who = (id - 1) as usize;
                if !self.crashed[who] {
                    self.suspected.insert((who, incarnation));
                }
                if let Some(w) = &mut self.watch {
                    if w.victim == who && w.first.is_none() {
                        // A failed probe ends a period and the next one starts in the same
                        // `handle_timeout`: the counter already holds the new period.
                        let own =
                            (self.members[i].periods() - 1).saturating_sub(w.periods_at_crash[i]);
                        let time = self.now.saturating_since(w.at).as_micros() as f64
                            / PERIOD.as_micros() as f64;
                        w.first = Some((own.max(1) as f64, time));
                    }
                }
            }
            Event::Dead { id } => {
                let who = (id - 1) as usize;
                if !self.crashed[who] {
                    let incarnation = self.members[i].member(id).map_or(0, |m| m.1);
                    self.declared_dead.insert((who, incarnation));
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        if self.crashed[to] {
            return;
        }
        if let Some(q) = &mut self.paused[to] {
            q.push_back((from, msg));
            return;
        }
        let kind = match &msg {
            Message::Ping { seq, .. } => (1, *seq),
            Message::Ack { seq, .. } => (2, *seq),
            Message::PingReq { seq, .. } => (3, *seq),
            Message::Nack { seq } => (4, *seq),
            Message::PushPull { members, .. } => (5, members.len() as u32),
        };
        self.digest = fnv(self.digest, self.now.as_micros());
        self.digest = fnv(self.digest, ((from as u64) << 32) | to as u64);
        self.digest = fnv(self.digest, ((kind.0 as u64) << 32) | kind.1 as u64);
        self.delivered += 1;
        self.members[to].handle_message(self.now, id_of(from), self.addrs[from], msg);
        self.after_input(to);
    }

    /// Runs until `until`, pausing members at random when asked.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_ev = self
                .queue
                .keys()
                .next()
                .map(|k| k.0)
                .unwrap_or(Instant::MAX);
            let next_timer = self
                .timers
                .iter()
                .next()
                .map(|t| t.0)
                .unwrap_or(Instant::MAX);
            let next = next_ev.min(next_timer);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_timer <= next_ev {
                let (_, i) = self.timers.pop_first().expect("a timer is due");
                self.timer_at[i] = Instant::MAX;
                if self.crashed[i] || self.paused[i].is_some() {
                    continue;
                }
                self.members[i].handle_timeout(self.now);
                self.after_input(i);
            } else {
                let (_, ev) = self.queue.pop_first().expect("an event is due");
                match ev {
                    Ev::Deliver { from, to, msg } => self.deliver(from, to, msg),
                    Ev::Resume { member } => self.resume(member),
                }
            }
        }
    }

    fn pause(&mut self, i: usize, periods: u64) {
        self.paused[i] = Some(VecDeque::new());
        let at = self.now + Duration::from_micros(PERIOD.as_micros() * periods);
        self.push(at, Ev::Resume { member: i });
    }

    /// A paused member wakes: its expired timers run first (as an event loop that was stopped
    /// finds them due), then what arrived meanwhile, in order.
    fn resume(&mut self, i: usize) {
        let Some(q) = self.paused[i].take() else {
            return;
        };
        self.members[i].handle_timeout(self.now);
        self.after_input(i);
        for (from, msg) in q {
            self.deliver(from, i, msg);
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| !self.crashed[*i])
    }

    fn converged(&self) -> bool {
        let n = self.live().count();
        self.live().all(|i| self.members[i].group_size() == n)
    }

    fn probe_messages(&self) -> (u64, u64) {
        self.live().fold((0, 0), |(m, p), i| {
            let s = self.members[i].stats();
            (m + s.probe_messages(), p + s.push_pulls_sent)
        })
    }

    /// Bytes of the probe messages live members sent (record bodies).
    fn probe_bytes(&self) -> u64 {
        self.live().map(|i| self.probe_bytes[i]).sum()
    }
}

fn periods_since(now: Instant, since: Instant) -> f64 {
    now.saturating_since(since).as_micros() as f64 / PERIOD.as_micros() as f64
}

/// Runs one configuration (see the module doc).
pub fn run(cfg: &SwimSimConfig) -> SwimReport {
    assert!(
        cfg.members >= 2 && cfg.members <= MEMBERS_MAX,
        "members 2..={MEMBERS_MAX}"
    );
    let mut sim = Sim::new(cfg.clone());
    let n = cfg.members;
    // Member 0 starts the group; the others join through it, 1 ms apart.
    sim.after_input(0);
    for i in 1..n {
        sim.run_until(Instant::from_micros(i as u64 * 1_000));
        let seed = sim.addrs[0];
        sim.members[i].join(sim.now, &[seed]);
        sim.after_input(i);
    }
    let start = Instant::ZERO;
    while !sim.converged() {
        assert!(
            periods_since(sim.now, start) < CONVERGE_PERIODS_MAX as f64,
            "seed {}: {n} members did not converge within {CONVERGE_PERIODS_MAX} periods",
            cfg.seed
        );
        let t = sim.now + Duration::from_millis(100);
        sim.run_until(t);
    }
    let converge_periods = periods_since(sim.now, start);
    // Let the news of the joins run out before measuring.
    let t = sim.now + Duration::from_micros(PERIOD.as_micros() * 10);
    sim.run_until(t);
    let (_, join_pp) = sim.probe_messages();

    // The steady phase: messages and false positives.
    sim.suspected.clear();
    sim.declared_dead.clear();
    let (m0, p0) = sim.probe_messages();
    let b0 = sim.probe_bytes();
    let steady_start = sim.now;
    let mut pauses = 0;
    for _ in 0..cfg.periods {
        if cfg.pause_every > 0 && sim.rng.gen_range(0..cfg.pause_every) == 0 {
            let i = sim.rng.gen_range(0..n);
            if sim.paused[i].is_none() {
                sim.pause(i, cfg.pause_periods);
                pauses += 1;
            }
        }
        let t = sim.now + PERIOD;
        sim.run_until(t);
    }
    let (m1, p1) = sim.probe_messages();
    let b1 = sim.probe_bytes();
    let member_periods = n as f64 * periods_since(sim.now, steady_start).max(1e-9);
    let mut report = SwimReport {
        members: n,
        converge_periods,
        messages_per_member_period: (m1 - m0) as f64 / member_periods,
        probe_bytes_per_member_period: (b1 - b0) as f64 / member_periods,
        push_pulls_per_member_period: (p1 - p0) as f64 / member_periods,
        join_push_pulls_per_member: join_pp as f64 / n as f64,
        pauses,
        ..SwimReport::default()
    };
    // Wait for every pause to end before crashing anyone.
    let t = sim.now + Duration::from_micros(PERIOD.as_micros() * (cfg.pause_periods + 1));
    sim.run_until(t);

    // The crashes, one after another.
    for _ in 0..cfg.crashes {
        let live: Vec<usize> = sim.live().collect();
        if live.len() <= 2 {
            break;
        }
        let victim = live[sim.rng.gen_range(0..live.len())];
        sim.crashed[victim] = true;
        sim.watch = Some(Watch {
            victim,
            at: sim.now,
            periods_at_crash: sim.members.iter().map(|m| m.periods()).collect(),
            first: None,
        });
        let at = sim.now;
        let id = id_of(victim);
        let (mut all_suspect, mut all_dead) = (None, None);
        while periods_since(sim.now, at) < DETECT_PERIODS_MAX as f64 {
            let t = sim.now + Duration::from_millis(10);
            sim.run_until(t);
            let views: Vec<Option<State>> = sim
                .live()
                .map(|i| sim.members[i].member(id).map(|(s, _)| s))
                .collect();
            if all_suspect.is_none()
                && views
                    .iter()
                    .all(|s| matches!(s, Some(State::Suspect | State::Dead)))
            {
                all_suspect = Some(periods_since(sim.now, at));
            }
            if views.iter().all(|s| *s == Some(State::Dead)) {
                all_dead = Some(periods_since(sim.now, at));
                break;
            }
        }
        let w = sim.watch.take().expect("watching");
        match (w.first, all_suspect, all_dead) {
            (Some((first_periods, first_time_periods)), Some(s), Some(d)) => {
                report.detections.push(Detection {
                    first_periods,
                    first_time_periods,
                    all_suspect_periods: s,
                    all_dead_periods: d,
                })
            }
            _ => report.undetected += 1,
        }
        // A few quiet periods between crashes.
        let t = sim.now + Duration::from_micros(PERIOD.as_micros() * 3);
        sim.run_until(t);
    }
    // From the steady phase on, the crashes' phase included.
    report.suspicions_of_live = sim.suspected.len() as u64;
    report.live_declared_dead = sim.declared_dead.len() as u64;
    report.health_max_seen = sim.health_max_seen;
    report.digest = sim.digest;
    report.messages_delivered = sim.delivered;
    report
}

/// The mean of `f` over `ds` (0 if empty).
pub fn mean(ds: &[Detection], f: impl Fn(&Detection) -> f64) -> f64 {
    if ds.is_empty() {
        return 0.0;
    }
    ds.iter().map(f).sum::<f64>() / ds.len() as f64
}
