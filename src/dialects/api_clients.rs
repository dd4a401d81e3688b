//! API.md §6 over HTTP: API clients — the admin's `POST /admin/api_clients`
//! and Welkin's token exchange `POST /{tenant}/admin/api_clients/{name}`
//! (what Welkin's SDK calls, with no Authorization header). Translation
//! only: the rules live in `core::api_clients`. Secrets are never logged.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{caller, Ctx};
use crate::core::api_clients::NewApiClient;
use crate::error::Result;
use crate::model::Workspace;
use crate::net::http::{self, percent_decode, Resp};

#[derive(Deserialize)]
struct AddClient {
    tenant: String,
    instance: String,
    name: String,
    display_name: Option<String>,
    rotate: Option<bool>,
}

/// Builds a `NewApiClient` from wire strings (HTTP and the control socket).
pub fn new_api_client(
    tenant: &str,
    instance: &str,
    name: String,
    display_name: Option<String>,
    rotate: bool,
) -> Result<NewApiClient> {
    Ok(NewApiClient {
        workspace: Workspace::new(tenant, instance)?,
        name,
        display_name,
        rotate,
    })
}

/// `POST /admin/api_clients` `{"tenant","instance","name","display_name"?,
/// "rotate"?}` → `201 {"name","secret"}`; the secret is shown only here.
pub async fn add(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let admin = caller.actor().admin("manage API clients")?;
    let b: AddClient = http::read_json(req).await?;
    let new = new_api_client(
        &b.tenant,
        &b.instance,
        b.name,
        b.display_name,
        b.rotate.unwrap_or(false),
    )?;
    let name = new.name.clone();
    let secret = ctx.core.add_api_client(&admin, new).await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "name": name, "secret": secret }),
    ))
}

/// The tenant and client name of `/{tenant}/admin/api_clients/{name}`,
/// percent-decoded.
pub fn exchange_target(method: &Method, path: &str) -> Option<(String, String)> {
    if method != Method::POST {
        return None;
    }
    match path
        .strip_prefix('/')?
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        [tenant, "admin", "api_clients", name] => {
            Some((percent_decode(tenant, false)?, percent_decode(name, false)?))
        }
        _ => None,
    }
}

#[derive(Deserialize)]
struct Exchange {
    secret: String,
}

/// `POST /{tenant}/admin/api_clients/{name}` `{"secret"}` → `200
/// {"token"}`; a wrong name or secret → `401 INVALID_CREDENTIALS`
/// (throttled like logins: `429 RATE_LIMITED` with `Retry-After`).
pub async fn exchange(ctx: Ctx, req: Request<Incoming>, tenant: &str, name: &str) -> Result<Resp> {
    let client = ctx.client_ip(&req);
    let b: Exchange = http::read_json(req).await?;
    let token = ctx
        .core
        .exchange_api_client(tenant, name, &b.secret, client)
        .await?;
    Ok(http::json(StatusCode::OK, &json!({ "token": token })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_path_names_a_tenant_and_a_client() {
        assert_eq!(
            exchange_target(&Method::POST, "/gh/admin/api_clients/ehr.1"),
            Some(("gh".into(), "ehr.1".into()))
        );
        assert_eq!(
            exchange_target(&Method::POST, "/g%20h/admin/api_clients/a%2Db"),
            Some(("g h".into(), "a-b".into()))
        );
        for (m, p) in [
            (Method::GET, "/gh/admin/api_clients/ehr"),
            (Method::POST, "/admin/api_clients"),
            (Method::POST, "/gh/admin/api_clients"),
            (Method::POST, "/gh/admin/api_clients/ehr/x"),
            (Method::POST, "/gh/sb/api_clients/ehr"),
            (Method::POST, "/gh/admin/api_clients/%zz"),
        ] {
            assert_eq!(exchange_target(&m, p), None, "{m} {p}");
        }
    }
}
