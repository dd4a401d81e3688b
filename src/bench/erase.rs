//! `--erase-during N`: what erasing a patient with N messages does to the
//! fleet's latency (the clinic's "a 20k-message purge does not raise W1
//! p99 by more than 20 ms"). Every measured step runs twice on the same
//! fleet: plainly, then with `POST /admin/users/{patient}/erase` sent as
//! its measured phase starts (after the warm-up) — that phase lasting until
//! the erase has answered, should it take longer than `--duration`.
//!
//! Before the second run, outside any measurement, a patient is prepared in
//! a workspace of its own with one staff member, who fills the patient's
//! chat with N messages over concurrent `POST …/chat/outbound`s (the
//! daemon's `--msg-rate`/`--msg-burst` must allow that). The fleet is in
//! other workspaces, so it hears none of them. The erase must answer
//! `messages_deleted` = N, or the run fails: a figure for an erase that
//! deleted something else would be no answer to the question.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::client::Http;
use super::engine::{measured_step, measured_step_with, Engine, StepResult};
use super::patients::{self, INSTANCE};
use super::report::{ms, Table};
use super::setup::{Account, Env, User};
use super::stats::{median, Summary};

/// HTTP connections filling a chat, each with one post in flight.
const FILL_CONNECTIONS: u64 = 32;

/// One step run twice: plainly, and during an erase.
#[derive(Clone, Debug, Serialize)]
pub struct ErasePair {
    pub label: String,
    pub target_rate: f64,
    /// Messages in the erased patient's chat.
    pub messages: u64,
    /// What the erase answered (equal to `messages`, else the run failed).
    pub messages_deleted: u64,
    /// From sending the erase to its whole answer.
    pub erase_ms: f64,
    /// The plain run's latency (the whole run is among the steps).
    pub plain: Summary,
    /// The run during the erase.
    pub during: StepResult,
    /// `during`'s p99 less `plain`'s.
    pub p99_delta_ms: f64,
}

/// Runs the step at `rate` plainly, prepares the `k`-th patient with `n`
/// messages, and runs the step again with that patient erased as its
/// measured phase starts. The plain run is what the step is judged by.
pub async fn paired_step(
    eng: &mut Engine<'_>,
    env: &Env,
    label: &str,
    rate: f64,
    k: usize,
    n: u64,
) -> Result<(StepResult, ErasePair)> {
    let plain = measured_step(eng, label, rate).await;
    let patient = prepare(env, k, n).await?;
    let (during, erased) =
        measured_step_with(eng, &format!("{label} erase"), rate, erase(env, &patient)).await;
    let (took, deleted) = erased?;
    if deleted != n {
        bail!(
            "erasing patient {} deleted {deleted} messages, not the {n} its chat was filled \
             with: the figures would not be those of a {n}-message erase",
            patient.name
        );
    }
    env.progress(&format!(
        "erased a patient with {n} messages in {:.1} ms",
        took.as_secs_f64() * 1000.0
    ));
    let pair = ErasePair {
        label: label.to_string(),
        target_rate: rate,
        messages: n,
        messages_deleted: deleted,
        erase_ms: took.as_secs_f64() * 1000.0,
        plain: plain.latency,
        p99_delta_ms: during.latency.p99_ms - plain.latency.p99_ms,
        during,
    };
    Ok((plain, pair))
}

/// A patient and a staff member in workspace `bench-RUN-erase-K`, and `n`
/// messages from the staff member in the patient's chat; answers the
/// patient.
async fn prepare(env: &Env, k: usize, n: u64) -> Result<User> {
    let started = Instant::now();
    let tenant = format!("bench-{}-erase-{k}", env.run_id);
    let users = env
        .users_as(&format!("e{k}"), 2, |i| Account {
            role: if i == 0 { "patient" } else { "staff" },
            workspace: Some((tenant.clone(), INSTANCE.to_string())),
        })
        .await?;
    let (patient, staff) = (&users[0], &users[1]);
    // Made, and its members checked, before it is filled.
    patients::chat_of(env, &tenant, &[patient, staff]).await?;
    let path = patients::chat_path(&tenant, patient, "/outbound");
    let next = AtomicU64::new(0);
    let (path, next) = (&path, &next);
    let fill = (0..FILL_CONNECTIONS.min(n)).map(|_| async move {
        let mut http = Http::new(&env.target);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok(());
            }
            let body = json!({"message": fixture_text(i, env.args.payload)});
            let r = http.post(path, Some(&staff.token), &body).await?;
            if r.status == 429 {
                bail!(
                    "the daemon refused a send (429) while filling a patient's chat with {n} \
                     messages for --erase-during: start parlor with a --msg-burst of at least \
                     {n} and a high --msg-rate (e.g. parlor serve --msg-rate 1000000 \
                     --msg-burst 1000000)"
                );
            }
            r.expect(
                200,
                &format!("posting message {i} of {n} for --erase-during"),
            )?;
        }
    });
    futures_util::future::try_join_all(fill).await?;
    env.progress(&format!(
        "a patient with {n} messages ready in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(patient.clone())
}

/// A fixture message: plain words padded with `x` to `payload` bytes (no
/// stamp: nothing of the fleet's).
fn fixture_text(i: u64, payload: usize) -> String {
    let mut s = format!("erase fixture message {i} ");
    if s.len() < payload {
        s.push_str(&"x".repeat(payload - s.len()));
    }
    s
}

/// Erases `patient` with the admin token: how long the answer took, and
/// its `messages_deleted`.
async fn erase(env: &Env, patient: &User) -> Result<(Duration, u64)> {
    let mut http = Http::new(&env.target);
    let path = format!("/admin/users/{}/erase", patient.id);
    let t0 = Instant::now();
    let r = http.post(&path, Some(&env.admin), &json!({})).await?;
    let took = t0.elapsed();
    let what = format!("erasing patient {}", patient.name);
    let v = r.expect(200, &what)?;
    let n = v["messages_deleted"]
        .as_u64()
        .with_context(|| format!("{what}: no messages_deleted in {v}"))?;
    Ok((took, n))
}

/// The pairs side by side.
pub fn table(pairs: &[ErasePair]) -> Table {
    let mut t = Table::new(&[
        "step",
        "p50 ms",
        "p99 ms",
        "max ms",
        "erase: p50",
        "p99",
        "max",
        "Δp99 ms",
        "erase ms",
        "deleted",
        "lost",
        "dup",
    ]);
    for p in pairs {
        let d = &p.during.latency;
        t.row(vec![
            p.label.clone(),
            ms(p.plain.p50_ms),
            ms(p.plain.p99_ms),
            ms(p.plain.max_ms),
            ms(d.p50_ms),
            ms(d.p99_ms),
            ms(d.max_ms),
            format!("{:+.2}", p.p99_delta_ms),
            ms(p.erase_ms),
            p.messages_deleted.to_string(),
            p.during.lost.to_string(),
            p.during.duplicates.to_string(),
        ]);
    }
    t
}

/// Medians of the pairs of each target rate (for `--repeat`).
pub fn medians(pairs: &[ErasePair]) -> Vec<Value> {
    let mut rates: Vec<f64> = pairs.iter().map(|p| p.target_rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    rates
        .into_iter()
        .map(|rate| {
            let v: Vec<&ErasePair> = pairs.iter().filter(|p| p.target_rate == rate).collect();
            let m =
                |f: &dyn Fn(&ErasePair) -> f64| median(&v.iter().map(|p| f(p)).collect::<Vec<_>>());
            json!({
                "target_rate": rate,
                "runs": v.len(),
                "plain_p99_ms": m(&|p| p.plain.p99_ms),
                "during_p99_ms": m(&|p| p.during.latency.p99_ms),
                "p99_delta_ms": m(&|p| p.p99_delta_ms),
                "erase_ms": m(&|p| p.erase_ms),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_texts_are_padded_and_carry_no_stamp() {
        let t = fixture_text(7, 100);
        assert_eq!(t.len(), 100);
        assert!(t.starts_with("erase fixture message 7 x"));
        assert_eq!(fixture_text(12345, 5), "erase fixture message 12345 ");
        assert!(super::super::stats::Stamp::find(t.as_bytes()).is_none());
    }
}
