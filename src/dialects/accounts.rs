//! API.md §1 over HTTP: accounts, tokens and the admin API, shared by
//! every dialect.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{caller, Ctx};
use crate::core::accounts::NewUser;
use crate::core::error::{Error, Result};
use crate::core::model::{Role, UserId, Workspace};
use crate::net::http::{self, Resp};

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// `POST /auth/login` `{"username","password"}` → `{"token","user_id"}`.
pub async fn login(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let body: Login = http::read_json(req).await?;
    let (token, user) = ctx
        .core
        .login(&body.username, body.password, ctx.peer.ip())
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

#[derive(Deserialize)]
struct AddUser {
    username: String,
    password: String,
    role: String,
    tenant: Option<String>,
    instance: Option<String>,
    display_name: Option<String>,
}

/// Builds a `NewUser` from wire strings (HTTP and the control socket).
pub fn new_user(
    username: String,
    password: String,
    role: &str,
    tenant: Option<&str>,
    instance: Option<&str>,
    display_name: Option<String>,
) -> Result<NewUser> {
    let role = Role::parse(role)
        .ok_or_else(|| Error::bad_request("role must be one of patient, staff, admin"))?;
    let workspace = Workspace::new(tenant.unwrap_or("default"), instance.unwrap_or("default"))?;
    Ok(NewUser {
        username,
        password,
        role,
        workspace,
        display_name,
    })
}

/// `POST /admin/users` `{"username","password","role","tenant"?,"instance"?,
/// "display_name"?}` → `201 {"id"}`.
pub async fn add_user(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let admin = caller(&ctx.core, &req)?;
    if admin.user.role != Role::Admin {
        return Err(Error::forbidden("only an admin may create users"));
    }
    let b: AddUser = http::read_json(req).await?;
    let new = new_user(
        b.username,
        b.password,
        &b.role,
        b.tenant.as_deref(),
        b.instance.as_deref(),
        b.display_name,
    )?;
    let id = ctx.core.create_user(new).await?;
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

/// A user id as a JSON string (API.md) or, leniently, a number.
pub fn user_id(v: &serde_json::Value) -> Result<UserId> {
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
    let admin = caller(&ctx.core, &req)?;
    if admin.user.role != Role::Admin {
        return Err(Error::forbidden("only an admin may create group rooms"));
    }
    let b: AddRoom = http::read_json(req).await?;
    let members = b.members.iter().map(user_id).collect::<Result<Vec<_>>>()?;
    let room = ctx
        .core
        .create_group_room(&admin.user, b.name, members)
        .await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "room_id": room.to_string() }),
    ))
}
