//! `fanout`: N users in group rooms of R, every one connected, sending
//! stamped messages at a fixed total rate or closed loop (the phases and
//! their accounting are the [`Engine`]'s, shared with `login`); one
//! measured step per rate, or `--find-max` ramping up to the highest rate
//! held, on parlor and, with `--compare-baseline`, on the baseline server.

use anyhow::{bail, Result};
use serde::Serialize;

use super::engine::{measured_step, Engine, Fleet, StepResult};
use super::report;
use super::setup::Env;
use super::BenchArgs;

/// What one server gave in a fanout run.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub server: &'static str,
    pub steps: Vec<StepResult>,
    /// `--find-max`: the highest rate held, and why the next step failed.
    pub max_rate: Option<f64>,
    pub max_delivery_rate: Option<f64>,
    pub stopped_because: Option<String>,
    pub lost_total: u64,
    pub duplicates_total: u64,
    pub dropped_connections: u64,
    pub drop_reason: Option<String>,
}

/// Sets up the fleet on one server and runs the steps.
pub async fn run_target(args: &BenchArgs, baseline: bool) -> Result<TargetReport> {
    let env = Env::open(args, baseline).await?;
    if !args.closed_loop && !args.find_max {
        let top = args.rate.iter().cloned().fold(0.0, f64::max);
        let per_user = top / args.clients as f64;
        if per_user > args.user_rate {
            bail!(
                "{top} msg/s over {} users is {per_user:.1} msg/s per user, above --user-rate {}: \
                 start parlor with a higher --msg-rate/--msg-burst and raise --user-rate, or add --clients",
                args.clients,
                args.user_rate
            );
        }
    }
    let fleet = Fleet::new(&env).await?;
    let mut eng = Engine::start(&env, &fleet).await?;
    let mut steps = Vec::new();
    let (mut max_rate, mut max_delivery_rate, mut stopped_because) = (None, None, None);
    if args.find_max {
        let mut rate = args.rate[0];
        for _ in 0..64 {
            if rate > args.max_rate {
                stopped_because = Some(format!("reached --max-rate {}", args.max_rate));
                break;
            }
            if eng.per_user(rate) > args.user_rate {
                stopped_because = Some(format!(
                    "{rate:.0} msg/s is above --user-rate {} per user",
                    args.user_rate
                ));
                break;
            }
            let r = measured_step(&mut eng, &format!("{rate:.0}/s"), rate).await;
            let failed = r.failure(args.max_p99_ms);
            steps.push(r.clone());
            match failed {
                None => {
                    max_rate = Some(r.target_rate);
                    max_delivery_rate = Some(r.delivery_rate);
                    rate *= args.step_factor;
                }
                Some(why) => {
                    stopped_because = Some(format!("{:.0} msg/s: {why}", r.target_rate));
                    break;
                }
            }
        }
    } else {
        for &rate in &args.rate {
            for k in 0..args.repeat {
                let label = if args.repeat > 1 {
                    format!("{rate:.0}/s #{}", k + 1)
                } else {
                    format!("{rate:.0}/s")
                };
                steps.push(measured_step(&mut eng, &label, rate).await);
            }
        }
    }
    let (lost, duplicates_total, dropped_connections) = eng.totals();
    let drop_reason = eng.drop_reason();
    let missing = eng.stop().await;
    // Both counts must agree; report the larger if they do not.
    let lost_total = lost.max(missing);
    Ok(TargetReport {
        server: env.server,
        steps,
        max_rate,
        max_delivery_rate,
        stopped_because,
        lost_total,
        duplicates_total,
        dropped_connections,
        drop_reason,
    })
}

/// `parlor bench fanout`.
pub async fn main(args: &BenchArgs) -> Result<()> {
    let mut reports = vec![run_target(args, args.baseline_server).await?];
    if args.compare_baseline && !args.baseline_server {
        reports.push(run_target(args, true).await?);
    }
    report::fanout(args, &reports)
}
