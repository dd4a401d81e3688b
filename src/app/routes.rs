//! The route table: every endpoint of every dialect, in one place.

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::{ops, App, Ctx};
use crate::dialects::wire_error::{Rest, WireError};
use crate::dialects::{
    accounts, actions, api_clients, audit, echo, patient, retention, rooms, typed, web_api,
};
use crate::error::Error;
use crate::net::http::Resp;

/// Answers a request: the endpoint its method and path name, or `404`.
pub async fn route(app: &App, ctx: Ctx, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // `/{tenant}/admin/api_clients/{name}`: Welkin's token exchange.
    if let Some((tenant, name)) = api_clients::exchange_target(&method, &path) {
        let reply = api_clients::exchange(ctx, req, &tenant, &name).await;
        return reply.unwrap_or_else(|e| Rest::wire(&e));
    }
    let reply = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => Ok(ops::healthz()),
        (&Method::GET, "/readyz") => Ok(ops::readyz(ctx).await),
        (&Method::GET, "/metrics") => {
            let extra = ctx.webhooks.prometheus();
            ops::metrics(ctx, req, &extra)
        }
        (&Method::POST, "/auth/login") => accounts::login(ctx, req).await,
        (&Method::POST, "/auth/logout") => accounts::logout(ctx, req).await,
        (&Method::POST, "/admin/users") => accounts::add_user(ctx, req).await,
        (&Method::POST, "/admin/rooms") => accounts::add_room(ctx, req).await,
        (&Method::POST, "/admin/api_clients") => api_clients::add(ctx, req).await,
        (&Method::POST, "/admin/webhooks") => accounts::set_webhook(ctx, req).await,
        (&Method::DELETE, "/admin/webhooks") => accounts::delete_webhook(ctx, req).await,
        (&Method::GET, "/admin/webhooks/pending") => accounts::pending_webhooks(ctx, req).await,
        (&Method::GET, "/admin/audit") => audit::list(ctx, req).await,
        (&Method::PUT, "/admin/retention") => retention::set_retention(ctx, req).await,
        (&Method::PUT, "/admin/holds") => retention::set_hold(ctx, req).await,
        (&Method::POST, p) if retention::erase_target(p).is_some() => {
            let id = retention::erase_target(p).unwrap_or_default().to_owned();
            retention::erase(ctx, req, &id).await
        }
        (&Method::GET, "/chat/connect") => Ok(rooms::connect(ctx, req)),
        (&Method::POST, "/chat/create_dm") => rooms::create_dm(ctx, req).await,
        (&Method::POST, "/chat/room_info") => rooms::room_info(ctx, req).await,
        (&Method::POST, "/chat/retrieve") => rooms::retrieve(ctx, req).await,
        (&Method::GET, "/actions" | "/dev" | "/demo" | "/prod") => Ok(actions::connect(ctx, req)),
        (&Method::GET, "/ws") => typed::connect(ctx, req),
        (&Method::GET, "/chat/rooms") => web_api::rooms(ctx, req).await,
        // Off by default: then an unknown path like any other.
        (&Method::GET, echo::PATH) if app.conformance_echo => Ok(echo::connect(ctx, req)),
        // Before the web client's `/app/…`: a tenant may be called `app`.
        (_, p) if patient::owns(p) => Ok(patient::route(ctx, req).await),
        (&Method::GET, p) if crate::web::owns(p) => crate::web::serve(&req),
        _ => Err(Error::not_found(format!("no endpoint {method} {path}"))),
    };
    reply.unwrap_or_else(|e| Rest::wire(&e))
}
