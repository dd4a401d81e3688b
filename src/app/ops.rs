//! Operator endpoints: `/healthz` (alive), `/readyz` (the store answers and
//! takes writes; on a full disk `503 UNAVAILABLE` saying so), `/metrics`
//! (Prometheus text; from loopback, or with an admin token).

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde_json::json;

use super::Ctx;
use crate::dialects::wire_error::{Rest, WireError};
use crate::error::Result;
use crate::net::http::{self, Resp};

/// `GET /healthz` → `200 {"status":"ok"}` while serving.
pub fn healthz() -> Resp {
    http::json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz` → `200 {"status":"ready"}` once the store answers and the
/// writer commits; `503` otherwise: `UNAVAILABLE` with the reason (a full
/// disk) and `Retry-After`, or `INTERNAL`.
pub async fn readyz(ctx: Ctx) -> Resp {
    match ctx.core.ready().await {
        Ok(()) => http::json(StatusCode::OK, &json!({ "status": "ready" })),
        Err(e) => {
            let mut r = Rest::wire(&e);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

/// `GET /metrics` — Prometheus text format.
pub fn metrics(ctx: Ctx, req: Request<Incoming>, extra: &str) -> Result<Resp> {
    if !ctx.conn.is_local(req.headers()) {
        let caller = crate::dialects::caller(&ctx.core, &req)?;
        caller.actor().admin("read metrics from another machine")?;
    }
    let mut r = http::empty(StatusCode::OK);
    *r.body_mut() = http::full(ctx.core.render_metrics(extra));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
