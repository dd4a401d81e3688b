//! `fanout`: N users in group rooms of R (or with `--patient-chats`
//! patients' care-team chats), every one connected, sending stamped
//! messages at a fixed total rate or closed loop (the phases and their
//! accounting are the [`Engine`]'s, shared with `login`); one measured
//! step per rate, or `--find-max` ramping up to the highest rate held, on
//! parlor and, with `--compare-baseline`, on the baseline server. With
//! `--erase-during N` each step on parlor is run a second time during the
//! erasure of a patient with N messages (`erase`).

use anyhow::{bail, Result};
use serde::Serialize;

use super::engine::{measured_step, Engine, Fleet, RoomKind, StepResult};
use super::erase::{self, ErasePair};
use super::report;
use super::setup::Env;
use super::BenchArgs;

/// Why a baseline run does without a flag.
const BASELINE_HAS_NO_ERASE: &str = "the baseline server has no admin erase API";

/// What one server gave in a fanout run.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub server: &'static str,
    /// What the rooms were (the baseline's are always group rooms).
    pub room_kind: RoomKind,
    pub steps: Vec<StepResult>,
    /// `--erase-during`: each step again, during an erase.
    pub erase_during: Vec<ErasePair>,
    /// `--erase-during` given but not done here, and why.
    pub erase_skipped: Option<String>,
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
    let mut pairs = Vec::new();
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
            let r = step(&mut eng, &env, &format!("{rate:.0}/s"), rate, &mut pairs).await?;
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
                steps.push(step(&mut eng, &env, &label, rate, &mut pairs).await?);
            }
        }
    }
    let (lost, duplicates_total, dropped_connections) = eng.totals();
    let drop_reason = eng.drop_reason();
    let missing = eng.stop().await;
    // Both counts must agree; report the larger if they do not.
    let lost_total = lost.max(missing);
    let erase_skipped = match args.erase_during {
        Some(_) if env.server != "parlor" => Some(BASELINE_HAS_NO_ERASE.to_string()),
        _ => None,
    };
    Ok(TargetReport {
        server: env.server,
        room_kind: fleet.kind,
        steps,
        erase_during: pairs,
        erase_skipped,
        max_rate,
        max_delivery_rate,
        stopped_because,
        lost_total,
        duplicates_total,
        dropped_connections,
        drop_reason,
    })
}

/// One measured step at `rate`; with `--erase-during` on parlor, run a
/// second time during an erase (that pair added to `pairs`). The plain run
/// is the one answered, and what `--find-max` judges.
async fn step(
    eng: &mut Engine<'_>,
    env: &Env,
    label: &str,
    rate: f64,
    pairs: &mut Vec<ErasePair>,
) -> Result<StepResult> {
    match env.args.erase_during {
        Some(n) if env.server == "parlor" => {
            let (plain, pair) = erase::paired_step(eng, env, label, rate, pairs.len(), n).await?;
            pairs.push(pair);
            Ok(plain)
        }
        _ => Ok(measured_step(eng, label, rate).await),
    }
}

/// `parlor bench fanout`.
pub async fn main(args: &BenchArgs) -> Result<()> {
    let mut reports = vec![run_target(args, args.baseline_server).await?];
    if args.compare_baseline && !args.baseline_server {
        reports.push(run_target(args, true).await?);
    }
    report::fanout(args, &reports)
}
