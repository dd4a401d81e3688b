//! The application: what parlor answers, on top of the transport (`net`)
//! and the dialects. It owns the route table (`routes`: every endpoint of
//! every dialect, in one place), builds each request's [`Ctx`], and serves
//! the operator's endpoints (`ops`: health, readiness, metrics).

mod ops;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::Core;
use crate::dialects::Ctx;
use crate::net::{self, Front};
use crate::webhooks::Monitor;

/// What the application serves with.
pub struct App {
    pub core: Arc<Core>,
    /// The webhook worker's view of its deliveries, and its doorbell.
    pub webhooks: Arc<Monitor>,
    /// Serve the conformance echo at `/conformance/echo`
    /// (`--conformance-echo`, for protocol test suites; off in production).
    pub conformance_echo: bool,
}

/// Serves `app` on `listener` until `shutdown` (see [`net::serve`]).
pub async fn serve(
    app: App,
    listener: TcpListener,
    front: Front,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let app = Arc::new(app);
    net::serve(listener, front, shutdown, grace, move |conn, req| {
        let app = app.clone();
        async move {
            let ctx = Ctx {
                core: app.core.clone(),
                webhooks: app.webhooks.clone(),
                conn,
            };
            routes::route(&app, ctx, req).await
        }
    })
    .await
}
