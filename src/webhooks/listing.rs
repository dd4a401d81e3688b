//! The operator's listings of deliveries (`parlor webhook pending
//! [--dead]`, `GET /admin/webhooks/pending[?dead=true]`): read from the
//! store, with what the running worker knows of their attempts. The
//! message text is left out: operating the server does not open patients'
//! conversations.

use serde::Serialize;
use tokio::time::Instant;

use super::Monitor;
use crate::core::{Admin, Core};
use crate::error::Result;
use crate::model::{external_id, MsgId};

/// Longest listing in one answer.
pub const MAX_LIST: usize = 1000;

/// One pending delivery as the operator sees it.
#[derive(Debug, Serialize)]
pub struct PendingView {
    /// The message's `externalId`, also the delivery's `X-Webhook-Id`.
    pub external_id: String,
    pub patient_id: String,
    pub tenant: String,
    pub instance: String,
    /// The message's commit time, Unix ms.
    pub created_ms: u64,
    /// `queued` (not tried yet: new, or behind an earlier delivery of the
    /// same patient), `sending`, or `retrying` (failed, waiting out its
    /// backoff). `None` when no daemon runs.
    pub state: Option<&'static str>,
    /// Failed attempts so far (`None` when no daemon runs).
    pub failed_attempts: Option<u32>,
    pub last_error: Option<String>,
    pub next_attempt_in_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PendingList {
    pub pending: Vec<PendingView>,
    /// More pending deliveries follow the last one listed (page on with
    /// `after` = its `external_id`).
    pub more: bool,
}

/// Pending deliveries in message order, after `after` (exclusive), at most
/// `limit` (1..=`MAX_LIST`), with what the daemon knows of their attempts
/// when `monitor` is the running daemon's.
pub fn pending(
    core: &Core,
    _admin: &Admin<'_>,
    monitor: Option<&Monitor>,
    after: Option<MsgId>,
    limit: usize,
) -> Result<PendingList> {
    let limit = limit.clamp(1, MAX_LIST);
    let mut found = core.pending_deliveries(from(after), limit + 1)?;
    let more = found.len() > limit;
    found.truncate(limit);
    let now = Instant::now();
    let pending = found
        .into_iter()
        .map(|d| {
            let known = monitor.map(|m| m.attempts(d.message).unwrap_or_default());
            let state = known.as_ref().map(|a| match a {
                a if a.sending => "sending",
                a if a.failed > 0 => "retrying",
                _ => "queued",
            });
            PendingView {
                external_id: external_id(d.message),
                patient_id: d.patient.to_string(),
                tenant: d.workspace.tenant,
                instance: d.workspace.instance,
                created_ms: d.at_ms,
                state,
                failed_attempts: known.as_ref().map(|a| a.failed),
                last_error: known.as_ref().and_then(|a| a.last_error.clone()),
                next_attempt_in_ms: known
                    .and_then(|a| a.next_at)
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            }
        })
        .collect();
    Ok(PendingList { pending, more })
}

/// One dead delivery as the operator sees it: set aside after failing for
/// `--webhook-give-up-hours`, no longer tried until `parlor webhook retry`.
#[derive(Debug, Serialize)]
pub struct DeadView {
    /// The message's `externalId`, also the delivery's `X-Webhook-Id`.
    pub external_id: String,
    pub patient_id: String,
    pub tenant: String,
    pub instance: String,
    /// The message's commit time, Unix ms.
    pub created_ms: u64,
    /// When it was set aside, Unix ms.
    pub dead_ms: u64,
    pub failed_attempts: u32,
    pub last_error: String,
}

#[derive(Debug, Serialize)]
pub struct DeadList {
    pub dead: Vec<DeadView>,
    /// More follow the last one listed (page on with `after`).
    pub more: bool,
}

/// Dead deliveries in message order, after `after` (exclusive), at most
/// `limit` (1..=`MAX_LIST`).
pub fn dead(
    core: &Core,
    _admin: &Admin<'_>,
    after: Option<MsgId>,
    limit: usize,
) -> Result<DeadList> {
    let limit = limit.clamp(1, MAX_LIST);
    let mut found = core.dead_deliveries(from(after), limit + 1)?;
    let more = found.len() > limit;
    found.truncate(limit);
    let dead = found
        .into_iter()
        .map(|d| DeadView {
            external_id: external_id(d.delivery.message),
            patient_id: d.delivery.patient.to_string(),
            tenant: d.delivery.workspace.tenant,
            instance: d.delivery.workspace.instance,
            created_ms: d.delivery.at_ms,
            dead_ms: d.dead_ms,
            failed_attempts: d.failed_attempts,
            last_error: d.last_error,
        })
        .collect();
    Ok(DeadList { dead, more })
}

/// Where a listing after `after` starts.
fn from(after: Option<MsgId>) -> MsgId {
    MsgId(after.map_or(0, |a| a.0.saturating_add(1)))
}
