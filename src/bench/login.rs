//! `login`: a fanout run at `--rate` with, halfway, `--login-bursts`
//! bursts of `--logins` concurrent logins (argon2 on the server), one after
//! another; the fanout p99 before and during the bursts, and with
//! `--server-pid` the server's RSS before, at its peak during and after
//! them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::client::{self, Http};
use super::engine::{measured_step_parts, Engine, Fleet, StepResult};
use super::report::{self, ms, opt, Table};
use super::setup::Env;
use super::stats::{Hist, ProcSample};
use super::BenchArgs;

const MIB: f64 = (1 << 20) as f64;

pub async fn main(args: &BenchArgs) -> Result<()> {
    let env = Env::open(args, args.baseline_server).await?;
    let rate = args.rate[0];
    if rate / args.clients as f64 > args.user_rate {
        bail!(
            "--rate {rate} is above --user-rate {} per user",
            args.user_rate
        );
    }
    let fleet = Fleet::new(&env).await?;
    let mut eng = Engine::start(&env, &fleet).await?;
    let (warmup, half, drain) = measured_step_parts(args);
    let half = half / 2;
    if !warmup.is_zero() {
        eng.phase("warm-up", rate, warmup).await;
    }
    let steady = eng.phase("steady", rate, half).await;
    let times = Mutex::new(Hist::default());
    let failures = Mutex::new(Vec::<String>::new());
    let rss = || env.server_pid.and_then(|p| ProcSample::read(Some(p)));
    let rss_before = rss().map(|s| s.rss_bytes);
    let rss_peak = AtomicU64::new(rss_before.unwrap_or(0));
    let burst_started = Instant::now();
    let logins = async {
        for b in 0..args.login_bursts {
            let all = (0..args.logins).map(|k| {
                let u = &fleet.users[(b * args.logins + k) % fleet.users.len()];
                let (times, failures, env) = (&times, &failures, &env);
                async move {
                    let mut http = Http::new(&env.target);
                    let t0 = Instant::now();
                    match client::login(&mut http, &u.name, &u.password).await {
                        Ok(_) => times
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record_us(t0.elapsed().as_micros() as u64),
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{e:#}")),
                    }
                }
            });
            futures_util::future::join_all(all).await;
        }
    };
    // The server's RSS, sampled while the logins run.
    let watch = async {
        loop {
            if let Some(s) = rss() {
                rss_peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let logins = async {
        tokio::select! {
            _ = logins => {}
            _ = watch => {}
        }
    };
    // The burst phase lasts until every login has answered (and at least
    // a second), bounded by the network timeout per burst.
    let burst = eng
        .phase_until(
            "login burst",
            rate,
            args.net_timeout() * args.login_bursts as u32,
            logins,
        )
        .await;
    let burst_secs = burst_started.elapsed().as_secs_f64();
    eng.pause();
    eng.drain(drain).await;
    // What the server keeps once the logins are over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss().map(|s| s.rss_bytes);
    let rss_peak = rss_before.map(|_| rss_peak.load(Ordering::Relaxed));
    let a: StepResult = eng.result(&steady);
    let b: StepResult = eng.result(&burst);
    let (lost, dups, dropped) = eng.totals();
    let lost = lost.max(eng.stop().await);
    let times = times.into_inner().unwrap_or_else(|p| p.into_inner());
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let lt = times.summary();
    let delta = b.latency.p99_ms - a.latency.p99_ms;
    let mut t = Table::new(&[
        "phase", "secs", "deliv/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lost", "dup",
    ]);
    for s in [&a, &b] {
        t.row(vec![
            s.label.clone(),
            format!("{:.1}", s.duration_s),
            format!("{:.0}", s.delivery_rate),
            ms(s.latency.p50_ms),
            ms(s.latency.p99_ms),
            ms(s.latency.p999_ms),
            ms(s.latency.max_ms),
            s.lost.to_string(),
            s.duplicates.to_string(),
        ]);
    }
    let text = format!(
        "\n{} — {} users, rooms of {}, {rate:.0} msg/s, {}\n{}\
         logins: {} ok, {} failed in {burst_secs:.1} s; login p50 {} ms, p99 {} ms, max {} ms\n\
         fanout p99 during the burst − before: {:+.1} ms\nserver RSS MiB: before the burst {}, peak {}, after {}\n\
         lost {lost}, duplicated {dups}, sockets dropped {dropped}\n",
        env.server,
        args.clients,
        args.room_size,
        logins_label(args),
        t.render(),
        lt.count,
        failures.len(),
        ms(lt.p50_ms),
        ms(lt.p99_ms),
        ms(lt.max_ms),
        delta,
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
    );
    let value = json!({
        "mode": "login",
        "server": env.server,
        "rate": rate,
        "logins": args.logins,
        "login_bursts": args.login_bursts,
        "logins_ok": lt.count,
        "login_failures": failures,
        "login_latency": lt,
        "burst_s": burst_secs,
        "steady": a,
        "burst": b,
        "p99_increase_ms": delta,
        "server_rss_before_bytes": rss_before,
        "server_rss_peak_bytes": rss_peak,
        "server_rss_after_bytes": rss_after,
        "lost": lost,
        "duplicates": dups,
        "dropped_connections": dropped,
    });
    report::emit(args, &text, &value)
}

fn logins_label(args: &BenchArgs) -> String {
    if args.login_bursts == 1 {
        format!("{} concurrent logins", args.logins)
    } else {
        format!(
            "{} bursts of {} concurrent logins",
            args.login_bursts, args.logins
        )
    }
}

fn mib(bytes: Option<u64>) -> String {
    opt(bytes.map(|b| b as f64 / MIB), 1)
}
