//! API.md §1 over HTTP: accounts, tokens and the admin API (users, rooms,
//! webhooks), shared by every dialect.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{caller, Ctx};
use crate::core::accounts::NewUser;
use crate::error::{Error, Result};
use crate::model::{parse_external_id, Role, UserId, Webhook, Workspace};
use crate::net::http::{self, Resp};
use crate::webhooks;

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// `POST /auth/login` `{"username","password"}` → `{"token","user_id"}`.
pub async fn login(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let client = ctx.client_ip(&req);
    let body: Login = http::read_json(req).await?;
    let (token, user) = ctx
        .core
        .login(&body.username, body.password, client)
        .await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "token": token, "user_id": user.to_string() }),
    ))
}

/// `POST /auth/logout` → 204; the token and its sockets stop at once.
pub async fn logout(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    ctx.core.logout(&caller).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// A new user as the wire gives it: `POST /admin/users`'s body, and the
/// control socket's `user_add`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddUser {
    pub username: String,
    pub password: String,
    pub role: String,
    pub tenant: Option<String>,
    pub instance: Option<String>,
    pub display_name: Option<String>,
}

/// Builds a `NewUser` from wire strings (HTTP and the control socket).
pub fn new_user(add: AddUser) -> Result<NewUser> {
    let role = Role::parse(&add.role)
        .ok_or_else(|| Error::bad_request("role must be one of patient, staff, admin"))?;
    let tenant = add.tenant.as_deref().unwrap_or("default");
    let workspace = Workspace::new(tenant, add.instance.as_deref().unwrap_or("default"))?;
    Ok(NewUser {
        username: add.username,
        password: add.password,
        role,
        workspace,
        display_name: add.display_name,
    })
}

/// `POST /admin/users` `{"username","password","role","tenant"?,"instance"?,
/// "display_name"?}` → `201 {"id"}`.
pub async fn add_user(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("create users")?;
    let new = new_user(http::read_json(req).await?)?;
    let id = ctx.core.create_user(&admin, new).await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "id": id.to_string() }),
    ))
}

#[derive(Deserialize)]
struct AddRoom {
    name: Option<String>,
    members: Vec<serde_json::Value>,
}

/// A user id field of a request body: a JSON string (API.md) or,
/// leniently, a number; anything else is `400` (a well-formed id of no
/// user is the core's `404`, `core::accounts::parse_user_id`).
pub fn user_id_field(v: &serde_json::Value) -> Result<UserId> {
    match v {
        serde_json::Value::String(s) => UserId::parse(s),
        serde_json::Value::Number(n) => n.as_u64().map(UserId),
        _ => None,
    }
    .ok_or_else(|| Error::bad_request(format!("{v} is not a user id")))
}

/// `POST /admin/rooms` `{"name"?, "members": ["<user id>", …]}` →
/// `201 {"room_id"}`.
pub async fn add_room(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("create group rooms")?;
    let b: AddRoom = http::read_json(req).await?;
    let members = b
        .members
        .iter()
        .map(user_id_field)
        .collect::<Result<Vec<_>>>()?;
    let room = ctx.core.create_group_room(&admin, b.name, members).await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "room_id": room.to_string() }),
    ))
}

#[derive(Deserialize)]
struct SetWebhook {
    tenant: String,
    instance: String,
    url: String,
    api_key: String,
    api_secret: String,
}

/// Builds a workspace's webhook from wire strings (HTTP and the control
/// socket); the core checks it (`Core::set_webhook`).
pub fn new_webhook(
    tenant: &str,
    instance: &str,
    url: String,
    api_key: String,
    api_secret: String,
) -> Result<(Workspace, Webhook)> {
    let ws = Workspace::new(tenant, instance)?;
    Ok((
        ws,
        Webhook {
            url,
            api_key,
            api_secret,
        },
    ))
}

/// `POST /admin/webhooks` `{"tenant","instance","url","api_key",
/// "api_secret"}` → `204`; replaces the workspace's webhook.
pub async fn set_webhook(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("set webhooks")?;
    let b: SetWebhook = http::read_json(req).await?;
    let (ws, hook) = new_webhook(&b.tenant, &b.instance, b.url, b.api_key, b.api_secret)?;
    ctx.core.set_webhook(&admin, ws, hook).await?;
    ctx.webhooks.retry_now();
    Ok(http::empty(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
struct DeleteWebhook {
    tenant: String,
    instance: String,
}

/// `DELETE /admin/webhooks` `{"tenant","instance"}` → `204`; removes the
/// workspace's webhook (`404` if it has none) and drops its pending and
/// dead deliveries.
pub async fn delete_webhook(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("delete webhooks")?;
    let b: DeleteWebhook = http::read_json(req).await?;
    let ws = Workspace::new(&b.tenant, &b.instance)?;
    ctx.core.delete_webhook(&admin, ws).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `GET /admin/webhooks/pending?limit=&after=&dead=` → `200 {"pending":[…],
/// "more"}`: deliveries not yet accepted, oldest first, with the worker's
/// attempts and last error; with `dead=true`, `{"dead":[…],"more"}`: those
/// set aside as dead.
pub async fn pending_webhooks(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("list webhook deliveries")?;
    let (mut limit, mut after, mut dead) = (100, None, false);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("limit", v)) => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=webhooks::MAX_LIST).contains(n))
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "limit must be a number from 1 to {}",
                            webhooks::MAX_LIST
                        ))
                    })?;
            }
            Some(("dead", v)) => {
                dead = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(Error::bad_request("dead must be true or false")),
                };
            }
            Some(("after", v)) => {
                after = Some(parse_external_id(v).ok_or_else(|| {
                    Error::bad_request("after must be an externalId (IM + 32 hex digits)")
                })?);
            }
            _ => {}
        }
    }
    if dead {
        let list = webhooks::dead(&ctx.core, &admin, after, limit)?;
        return Ok(http::json(StatusCode::OK, &list));
    }
    let list = webhooks::pending(&ctx.core, &admin, Some(&ctx.webhooks), after, limit)?;
    Ok(http::json(StatusCode::OK, &list))
}
