//! The load engine behind `fanout` and `login`: every user of a [`Fleet`]
//! connected, one task each, driven through numbered phases by a watched
//! [`Plan`] — sending stamped messages at a fixed total rate (open loop:
//! each client follows its own timer, staggered, and never waits for an
//! answer) or closed loop. Every delivery is timed against the stamp's
//! send time, checked for loss and duplicates per (receiving connection,
//! sender), and accounted to the phase its message was sent in.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::setup::{Env, Room, User};
use super::stats::{Clock, PhaseStats, ProcSample, Recorder, Summary};
use super::BenchArgs;
use conn::ClientTask;

mod conn;

/// What the fleet's rooms are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Closed group rooms (`POST /admin/rooms`): posts write no audit
    /// record.
    Group,
    /// Patients' care-team chats (`--patient-chats`): every post writes a
    /// `chat.post` audit record.
    PatientChat,
}

/// The users and rooms of a run.
pub struct Fleet {
    pub users: Vec<User>,
    pub rooms: Vec<Room>,
    pub kind: RoomKind,
}

impl Fleet {
    /// `--clients` users in rooms of `--room-size`: patient chats with
    /// `--patient-chats` on parlor, else group rooms (the baseline server
    /// has only those).
    pub async fn new(env: &Env) -> Result<Fleet> {
        let (n, size) = (env.args.clients, env.args.room_size);
        if env.args.patient_chats && env.server == "parlor" {
            let (users, rooms) = super::patients::fleet(env, n, size).await?;
            return Ok(Fleet {
                users,
                rooms,
                kind: RoomKind::PatientChat,
            });
        }
        let users = env.users("u", n).await?;
        let rooms = env.rooms(&users, size).await?;
        Ok(Fleet {
            users,
            rooms,
            kind: RoomKind::Group,
        })
    }
}

/// What the clients do now.
#[derive(Clone, Debug)]
struct Plan {
    /// Raised on every change; clients report the one they act on.
    gen: u64,
    phase: u32,
    /// Total messages per second; 0: not sending (still receiving).
    rate: f64,
    closed: bool,
    window: usize,
    start: Instant,
    stop: bool,
}

struct Shared {
    clock: Clock,
    rec: Mutex<Recorder>,
    dropped: AtomicU64,
    why: Mutex<Option<String>>,
    net_timeout: Duration,
    /// Messages each sender has written, by sender index.
    sent: Vec<AtomicU64>,
    /// Deliveries never seen, counted per (receiving connection, sender)
    /// from the trackers when the run stops.
    missing: AtomicU64,
    /// The plan generation each client acts on (`u64::MAX` once ended).
    acted: Vec<AtomicU64>,
}

impl Shared {
    fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self, why: String) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
    }
}

/// One measured (or warm-up) phase, before its deliveries have drained.
pub struct Step {
    phase: u32,
    pub label: String,
    target_rate: f64,
    started: Instant,
    ended: Instant,
    dropped_before: u64,
    dropped_after: u64,
    server: (Option<ProcSample>, Option<ProcSample>),
    bench: (Option<ProcSample>, Option<ProcSample>),
}

/// A phase's figures, once drained.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub label: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub send_rate: f64,
    pub deliveries: u64,
    pub delivery_rate: f64,
    /// Send → every delivery.
    pub latency: Summary,
    /// Send → the delivery back to the sender (the acknowledgement).
    pub ack: Summary,
    /// How late the generator wrote messages against its timers.
    pub send_lag: Summary,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub dropped_connections: u64,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
}

impl StepResult {
    /// Why this step does not count as "held" (None: it does).
    pub fn failure(&self, max_p99_ms: f64) -> Option<String> {
        if self.lost > 0 || self.duplicates > 0 {
            Some(format!(
                "{} lost, {} duplicated",
                self.lost, self.duplicates
            ))
        } else if self.dropped_connections > 0 {
            Some(format!("{} connections dropped", self.dropped_connections))
        } else if self.latency.p99_ms > max_p99_ms {
            Some(format!(
                "p99 {:.1} ms > {max_p99_ms} ms",
                self.latency.p99_ms
            ))
        } else if self.send_rate < 0.95 * self.target_rate {
            Some(format!(
                "the generator sent only {:.0} of {:.0} msg/s",
                self.send_rate, self.target_rate
            ))
        } else {
            None
        }
    }
}

/// Connected clients, one task each, driven through phases.
pub struct Engine<'e> {
    env: &'e Env,
    shared: Arc<Shared>,
    plan: watch::Sender<Plan>,
    tasks: Vec<JoinHandle<()>>,
    senders: usize,
    next_phase: u32,
    pub closed_loop: bool,
}

impl<'e> Engine<'e> {
    /// Connects every user of the fleet and starts its task (not sending).
    pub async fn start(env: &'e Env, fleet: &Fleet) -> Result<Engine<'e>> {
        let tokens: Vec<&str> = fleet.users.iter().map(|u| u.token.as_str()).collect();
        let sockets = env.sockets(&tokens).await?;
        let shared = Arc::new(Shared {
            clock: env.clock,
            rec: Mutex::new(Recorder::default()),
            dropped: AtomicU64::new(0),
            why: Mutex::new(None),
            net_timeout: env.args.net_timeout(),
            sent: (0..fleet.users.len()).map(|_| AtomicU64::new(0)).collect(),
            missing: AtomicU64::new(0),
            acted: (0..fleet.users.len()).map(|_| AtomicU64::new(0)).collect(),
        });
        let plan0 = Plan {
            gen: 0,
            phase: 0,
            rate: 0.0,
            closed: env.args.closed_loop,
            window: env.args.window,
            start: Instant::now(),
            stop: false,
        };
        let (plan, _) = watch::channel(plan0);
        let senders = fleet.users.len();
        let gap = Duration::from_secs_f64(1.0 / env.args.user_rate.max(0.001));
        let mut sockets = sockets.into_iter();
        let mut tasks = Vec::with_capacity(senders);
        let mut me = 0usize;
        for room in &fleet.rooms {
            let id: Arc<str> = room.id.as_str().into();
            let mates: Arc<[u32]> = room.members.iter().map(|&m| m as u32).collect();
            for _ in &room.members {
                let ws = sockets.next().expect("one socket per user");
                let c = ClientTask {
                    me: me as u32,
                    index: me,
                    room: id.clone(),
                    mates: mates.clone(),
                    fanout: room.members.len() as u64,
                    payload: env.args.payload,
                    senders,
                    user_gap: gap,
                    shared: shared.clone(),
                };
                tasks.push(tokio::spawn(c.run(ws, plan.subscribe())));
                me += 1;
            }
        }
        Ok(Engine {
            env,
            shared,
            plan,
            tasks,
            senders,
            next_phase: 0,
            closed_loop: env.args.closed_loop,
        })
    }

    /// The open-loop per-user rate a total rate means.
    pub fn per_user(&self, rate: f64) -> f64 {
        rate / self.senders as f64
    }

    /// Sends at `rate` for `dur` as a new phase, with a progress line a
    /// second; keeps sending afterwards until `pause` or the next phase.
    pub async fn phase(&mut self, label: &str, rate: f64, dur: Duration) -> Step {
        self.phase_until(label, rate, dur, std::future::pending::<()>())
            .await
    }

    /// Like `phase`, but ends at `dur` or once `until` is done and at
    /// least one second has passed, whichever comes first.
    pub async fn phase_until<F: Future<Output = ()>>(
        &mut self,
        label: &str,
        rate: f64,
        dur: Duration,
        until: F,
    ) -> Step {
        let step = self.begin(label, rate);
        let started = step.started;
        let end = started + dur;
        let mut tick = progress_ticks(started);
        tokio::pin!(until);
        let mut until_done = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end.into()) => break,
                _ = &mut until, if !until_done => {
                    until_done = true;
                }
                _ = tick.tick() => {
                    self.progress(label, started);
                    if until_done && started.elapsed() >= Duration::from_secs(1) {
                        break;
                    }
                }
            }
        }
        self.end(step)
    }

    /// Like `phase`, with `work` started as the phase starts; the phase
    /// lasts `dur`, or until `work` is done if that takes longer.
    pub async fn phase_with<T, F: Future<Output = T>>(
        &mut self,
        label: &str,
        rate: f64,
        dur: Duration,
        work: F,
    ) -> (Step, T) {
        let step = self.begin(label, rate);
        let started = step.started;
        let end = started + dur;
        let mut tick = progress_ticks(started);
        tokio::pin!(work);
        let (mut out, mut time_up) = (None, false);
        while !(time_up && out.is_some()) {
            tokio::select! {
                _ = tokio::time::sleep_until(end.into()), if !time_up => time_up = true,
                v = &mut work, if out.is_none() => out = Some(v),
                _ = tick.tick() => self.progress(label, started),
            }
        }
        (
            self.end(step),
            out.expect("the loop ends once work is done"),
        )
    }

    /// Starts a new phase at `rate` (its end is `end`'s).
    fn begin(&mut self, label: &str, rate: f64) -> Step {
        let phase = self.next_phase;
        self.next_phase += 1;
        let started = Instant::now();
        let dropped_before = self.shared.dropped.load(Ordering::Relaxed);
        let server0 = self.env.server_pid.and_then(|p| ProcSample::read(Some(p)));
        let bench0 = ProcSample::read(None);
        let gen = self.plan.borrow().gen + 1;
        self.plan.send_replace(Plan {
            gen,
            phase,
            rate,
            closed: self.closed_loop,
            window: self.env.args.window,
            start: started,
            stop: false,
        });
        self.shared.rec().take_tick();
        Step {
            phase,
            label: label.to_string(),
            target_rate: rate,
            started,
            ended: started,
            dropped_before,
            dropped_after: dropped_before,
            server: (server0, None),
            bench: (bench0, None),
        }
    }

    /// The phase's end (the clients go on at its rate until told else).
    fn end(&self, mut step: Step) -> Step {
        step.ended = Instant::now();
        step.dropped_after = self.shared.dropped.load(Ordering::Relaxed);
        step.server.1 = self.env.server_pid.and_then(|p| ProcSample::read(Some(p)));
        step.bench.1 = ProcSample::read(None);
        step
    }

    fn progress(&self, label: &str, started: Instant) {
        let (t, outstanding) = {
            let mut r = self.shared.rec();
            (r.take_tick(), r.outstanding())
        };
        let s = t.latency.summary();
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        self.env.progress(&format!(
            "[{}] {label} {:>5.1}s  sent {:>7}/s  delivered {:>8}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  in flight {outstanding}  dup {}{}",
            self.env.server,
            started.elapsed().as_secs_f64(),
            t.sent,
            t.delivered,
            s.p50_ms,
            s.p99_ms,
            t.duplicates,
            if dropped > 0 { format!("  dropped sockets {dropped}") } else { String::new() },
        ));
    }

    /// Stops sending (sockets keep receiving).
    pub fn pause(&self) {
        self.plan.send_modify(|p| {
            p.gen += 1;
            p.rate = 0.0;
        });
    }

    /// Waits until every client has acted on the last plan (so no send
    /// is still under way) and every owed delivery has arrived, at most
    /// `limit`; false if some never did.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let gen = self.plan.borrow().gen;
        loop {
            let acted = self
                .shared
                .acted
                .iter()
                .all(|a| a.load(Ordering::Acquire) >= gen);
            if acted && self.shared.rec().outstanding() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A phase's figures (call after `drain`).
    pub fn result(&self, step: &Step) -> StepResult {
        let ph = self
            .shared
            .rec()
            .phases
            .get(step.phase as usize)
            .cloned()
            .unwrap_or_default();
        step_result(step, &ph)
    }

    /// Owed deliveries never made, duplicates, over every phase so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let r = self.shared.rec();
        let lost = r.outstanding();
        let dups = r.phases.iter().map(|p| p.duplicates).sum();
        (lost, dups, self.shared.dropped.load(Ordering::Relaxed))
    }

    pub fn drop_reason(&self) -> Option<String> {
        self.shared
            .why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends every client task (each closes its socket), bounded; returns
    /// the deliveries the connections' trackers never saw, counted per
    /// (receiving connection, sender, seq) — the exact loss.
    pub async fn stop(self) -> u64 {
        self.plan.send_modify(|p| p.stop = true);
        let all = futures_util::future::join_all(self.tasks);
        let _ = timeout(Duration::from_secs(10), all).await;
        self.shared.missing.load(Ordering::Relaxed)
    }
}

fn step_result(step: &Step, ph: &PhaseStats) -> StepResult {
    let secs = step
        .ended
        .duration_since(step.started)
        .as_secs_f64()
        .max(1e-9);
    let cpu = |s: &(Option<ProcSample>, Option<ProcSample>)| match s {
        (Some(a), Some(b)) => Some(a.cpu_percent(b)),
        _ => None,
    };
    StepResult {
        label: step.label.clone(),
        target_rate: step.target_rate,
        duration_s: secs,
        sent: ph.sent,
        send_rate: ph.sent as f64 / secs,
        deliveries: ph.delivered,
        delivery_rate: ph.delivered as f64 / secs,
        latency: ph.latency.summary(),
        ack: ph.ack.summary(),
        send_lag: ph.send_lag.summary(),
        lost: ph.lost(),
        duplicates: ph.duplicates,
        reordered: ph.reordered,
        dropped_connections: step.dropped_after - step.dropped_before,
        server_cpu_percent: cpu(&step.server),
        server_rss_mib: step.server.1.map(|s| s.rss_bytes as f64 / (1 << 20) as f64),
        bench_cpu_percent: cpu(&step.bench),
    }
}

/// A progress line a second from `started` on.
fn progress_ticks(started: Instant) -> tokio::time::Interval {
    tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    )
}

/// Warm-up, measured and drain durations from the flags.
pub fn measured_step_parts(args: &BenchArgs) -> (Duration, Duration, Duration) {
    (
        Duration::from_secs_f64(args.warmup.max(0.0)),
        args.duration(),
        Duration::from_secs_f64(args.drain_timeout.max(0.0)),
    )
}

/// One warm-up and one measured phase at `rate`, then pause and drain.
pub async fn measured_step(eng: &mut Engine<'_>, label: &str, rate: f64) -> StepResult {
    let (warmup, dur, drain) = measured_step_parts(&eng.env.args);
    if !warmup.is_zero() {
        eng.phase(&format!("{label} warm-up"), rate, warmup).await;
    }
    let step = eng.phase(label, rate, dur).await;
    eng.pause();
    eng.drain(drain).await;
    eng.result(&step)
}

/// Like `measured_step`, with `work` started as the measured phase starts
/// (after the warm-up); that phase lasts until `work` is done if it takes
/// longer than `--duration`.
pub async fn measured_step_with<T, F: Future<Output = T>>(
    eng: &mut Engine<'_>,
    label: &str,
    rate: f64,
    work: F,
) -> (StepResult, T) {
    let (warmup, dur, drain) = measured_step_parts(&eng.env.args);
    if !warmup.is_zero() {
        eng.phase(&format!("{label} warm-up"), rate, warmup).await;
    }
    let (step, out) = eng.phase_with(label, rate, dur, work).await;
    eng.pause();
    eng.drain(drain).await;
    (eng.result(&step), out)
}
