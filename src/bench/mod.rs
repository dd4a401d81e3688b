//! `parlor bench`: the bundled load generator (like `redis-benchmark` for
//! Redis). It creates its own users and rooms through the admin API, drives
//! `/chat/connect` sockets, and measures what an operator sizing a machine
//! needs: deliveries per second, send → delivery latency percentiles (from
//! a histogram), messages lost or duplicated (must be 0), and with
//! `--server-pid` the server's RSS and CPU.
//!
//! - `fanout` (default): N users in rooms of R, open loop at a fixed total
//!   rate (from timers) or closed loop; `--find-max` ramps the rate up to
//!   the highest one held with p99 under `--max-p99-ms`;
//!   `--compare-baseline` runs the same against the no-storage baseline;
//!   `--patient-chats` makes the rooms patient chats (an audit record per
//!   message); `--erase-during N` runs each step again while a patient
//!   with N messages is erased.
//! - `idle`: N authenticated sockets held open; server RSS per socket.
//! - `history`: fills one room to each of `--messages`, timing `retrieve`
//!   near the end and a 20-message page at each size.
//! - `login`: bursts of concurrent logins during a fanout run; p99 with
//!   and without them, and the server's RSS before, at its peak and after.
//! - `baseline-server`: the minimal in-memory fan-out server, same
//!   protocol, no storage: the ceiling parlor is compared with.
//!
//! Every mode stops by itself (`--duration`, counts), every network wait
//! has a timeout, and targets other than loopback need `--allow-remote`.

mod baseline;
mod client;
mod engine;
mod erase;
mod fanout;
mod history;
mod idle;
mod login;
mod patients;
mod report;
mod setup;
mod stats;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Group rooms, every member connected, messages at a fixed rate.
    Fanout,
    /// Authenticated sockets held open; server memory per socket.
    Idle,
    /// `retrieve` cost at growing history sizes.
    History,
    /// A burst of logins during a fanout run.
    Login,
    /// Run the no-storage baseline server (for another `parlor bench`).
    BaselineServer,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = Mode::Fanout)]
    pub mode: Mode,
    /// The daemon to load (ws://HOST:PORT).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Admin username (logs in through POST /auth/login).
    #[arg(long, env = "PARLOR_BENCH_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// Admin password.
    #[arg(long, env = "PARLOR_BENCH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// An admin bearer token (instead of user and password).
    #[arg(long, env = "PARLOR_BENCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Users (each with `--sockets-per-user` sockets).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Members per group room (fanout, login).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Total messages per second, open loop; a comma list runs one step
    /// per rate (the first also warms up; `--find-max` starts there).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rate: Vec<f64>,
    /// Each client sends its next message when its last one came back
    /// (hides queueing: prefer the default open loop for latency).
    #[arg(long)]
    pub closed_loop: bool,
    /// Messages in flight per client in closed loop.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Seconds per measured step (fanout, login: the whole run; idle: how
    /// long the sockets are held). baseline-server: lifetime (default 1 h).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of unmeasured load before each step.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Message size in bytes (the stamp is padded to this).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Run each rate this many times; the summary gives medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Ramp the rate up by `--step-factor` until p99 exceeds
    /// `--max-p99-ms`, anything is lost, or the generator cannot keep up.
    #[arg(long)]
    pub find_max: bool,
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    #[arg(long, default_value_t = 1.25)]
    pub step_factor: f64,
    /// The highest rate `--find-max` tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// fanout: the rooms are patients' care-team chats instead of group
    /// rooms — each room a workspace of its own (tenant bench-RUN-K,
    /// instance main), member 0 the patient, the others staff — so every
    /// message writes a `chat.post` audit record. With --compare-baseline
    /// the baseline gets group rooms (it has no patient chats).
    #[arg(long)]
    pub patient_chats: bool,
    /// fanout: run each measured step twice, the second time erasing (POST
    /// /admin/users/ID/erase) a patient whose chat holds N messages as its
    /// measured phase starts; reports both runs' latency, the p99
    /// difference and the erase's duration. The patient is prepared before
    /// that run, outside the measurement: start the daemon with a
    /// --msg-burst of at least N and a high --msg-rate. --timeout bounds
    /// the erase too. With --compare-baseline the baseline runs each step
    /// once, without an erase (it has no erase API).
    #[arg(long, value_name = "N")]
    pub erase_during: Option<u64>,
    /// Messages per second one user may send (keep it under the server's
    /// `--msg-rate`; the bench refuses plans above it).
    #[arg(long, default_value_t = 45.0)]
    pub user_rate: f64,
    /// The server's process id: sample its RSS and CPU from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Load a baseline server started for this run instead of `--url`.
    #[arg(long)]
    pub baseline_server: bool,
    /// After the run against `--url`, run the same against a baseline
    /// server started for it, and report the ratio.
    #[arg(long)]
    pub compare_baseline: bool,
    /// CPUs the spawned baseline server is pinned to (taskset -c LIST).
    #[arg(long)]
    pub baseline_cpus: Option<String>,
    /// baseline-server: the address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// baseline-server: exit when stdin closes (set by a bench that
    /// spawned it, so it never outlives that bench).
    #[arg(long, hide = true)]
    pub stdin_lifeline: bool,
    /// Sockets each user opens (idle mode; keep within the server's
    /// `--conns-per-user`).
    #[arg(long, default_value_t = 1)]
    pub sockets_per_user: usize,
    /// history: the history sizes to measure at, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub messages: Vec<u64>,
    /// history: users writing the fill (each with one socket).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// history: timed requests of each kind per size.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// login: concurrent logins in the burst.
    #[arg(long, default_value_t = 50)]
    pub logins: usize,
    /// login: bursts of `--logins`, one after another (each once the last
    /// has been answered).
    #[arg(long, default_value_t = 1)]
    pub login_bursts: usize,
    /// Prefix of the users and rooms created (default: random). Given
    /// explicitly, users left by an earlier run with it are reused.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Concurrent requests while setting up users, rooms and sockets.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// Seconds any single network wait may take.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds to wait for outstanding deliveries after sending stops.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
    /// Print the results as one JSON object on stdout (the table goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Runtime threads of the load generator (1: one core, no locks
    /// contended; pin it with taskset).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl BenchArgs {
    pub fn duration(&self) -> Duration {
        let secs = self.duration.unwrap_or(match self.mode {
            Mode::BaselineServer => 3600.0,
            _ => 10.0,
        });
        Duration::from_secs_f64(secs.max(0.0))
    }

    pub fn net_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }

    fn check(&self) -> Result<()> {
        if self.clients == 0 || self.room_size == 0 || self.sockets_per_user == 0 {
            bail!("--clients, --room-size and --sockets-per-user must be at least 1");
        }
        if self.rate.is_empty() || self.rate.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
            bail!("--rate must be positive numbers");
        }
        if self.find_max && self.step_factor <= 1.0 {
            bail!("--step-factor must be above 1");
        }
        if self.window == 0 || self.repeat == 0 || self.writers == 0 || self.samples == 0 {
            bail!("--window, --repeat, --writers and --samples must be at least 1");
        }
        if self.logins == 0 || self.login_bursts == 0 {
            bail!("--logins and --login-bursts must be at least 1");
        }
        if self.messages.is_empty() || self.messages.windows(2).any(|w| w[0] >= w[1]) {
            bail!("--messages must be ascending sizes");
        }
        let fanout_only = self.patient_chats || self.erase_during.is_some();
        if fanout_only && self.mode != Mode::Fanout {
            bail!("--patient-chats and --erase-during are fanout options");
        }
        if fanout_only && self.baseline_server {
            bail!(
                "--patient-chats and --erase-during need parlor: the baseline server has no \
                 patient chats and no erase API (--compare-baseline runs the baseline without them)"
            );
        }
        if self.erase_during == Some(0) {
            bail!("--erase-during needs at least 1 message");
        }
        if self.payload > 16 * 1024 {
            bail!("--payload above 16,384 bytes is refused by the server");
        }
        Ok(())
    }
}

/// `parlor bench`: builds the runtime and runs the mode.
pub fn run(args: BenchArgs) -> Result<()> {
    args.check()?;
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let result = rt.block_on(async move {
        match args.mode {
            Mode::BaselineServer => baseline::serve(&args).await,
            Mode::Fanout => fanout::main(&args).await,
            Mode::Idle => idle::main(&args).await,
            Mode::History => history::main(&args).await,
            Mode::Login => login::main(&args).await,
        }
    });
    // Sockets still open are dropped; nothing to wait for.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}
