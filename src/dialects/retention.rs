//! API.md §8 over HTTP: retention, legal holds and erasure. The rules
//! (who may, what a hold refuses, what goes) are the core's (`core::
//! retention`, `core::erasure`); the command line's are in `control`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::accounts::user_id_field;
use super::{caller, Ctx};
use crate::core::accounts::parse_user_id;
use crate::error::{Error, Result};
use crate::model::{UserId, Workspace};
use crate::net::http::{self, Resp};

/// `PUT /admin/retention`'s body, and the control socket's
/// `retention_set`: `days` is required, `null` meaning forever.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetRetention {
    pub tenant: String,
    pub instance: String,
    pub days: Value,
}

impl SetRetention {
    pub fn parse(&self) -> Result<(Workspace, Option<u64>)> {
        let ws = Workspace::new(&self.tenant, &self.instance)?;
        let days = match &self.days {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                Error::bad_request("days must be a whole number of days, or null for forever")
            })?),
        };
        Ok((ws, days))
    }
}

/// `PUT /admin/retention` `{"tenant","instance","days": N|null}` → `204`.
pub async fn set_retention(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("set retention")?;
    let b: SetRetention = http::read_json(req).await?;
    let (ws, days) = b.parse()?;
    ctx.core.set_retention(&admin, ws, days).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `PUT /admin/holds`'s body, and the control socket's `hold_set`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetHold {
    pub tenant: String,
    pub instance: String,
    #[serde(default)]
    pub patient: Option<Value>,
    pub hold: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

impl SetHold {
    pub fn parse(self) -> Result<(Workspace, Option<UserId>, bool, String)> {
        let ws = Workspace::new(&self.tenant, &self.instance)?;
        let patient = self.patient.as_ref().map(user_id_field).transpose()?;
        Ok((ws, patient, self.hold, self.reason.unwrap_or_default()))
    }
}

/// `PUT /admin/holds` `{"tenant","instance","patient"?,"hold","reason"}`
/// → `204`.
pub async fn set_hold(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("set legal holds")?;
    let b: SetHold = http::read_json(req).await?;
    let (ws, patient, hold, reason) = b.parse()?;
    ctx.core.set_hold(&admin, ws, patient, hold, reason).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// The user an erase path names: `/admin/users/{id}/erase`.
pub fn erase_target(path: &str) -> Option<&str> {
    path.strip_prefix("/admin/users/")?.strip_suffix("/erase")
}

/// `POST /admin/users/{id}/erase` → `200 {"messages_deleted": N}`.
pub async fn erase(ctx: Ctx, req: Request<Incoming>, id: &str) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("erase users")?;
    let id = parse_user_id(id)?;
    let deleted = ctx.core.erase_user(&admin, id).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "messages_deleted": deleted }),
    ))
}
