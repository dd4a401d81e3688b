//! The network front: accept loop, HTTP/1.1 server (hyper 1), the router,
//! the WebSocket upgrade and session loop. Knows dialects only through the
//! router table.

pub mod http;
pub mod ops;
pub mod router;
pub mod upgrade;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::core::Core;
use crate::dialects::Ctx;

/// Request headers must be complete within this (API.md §1).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` turns true, then stops accepting and returns
/// once every connection has ended (WebSockets close with 1001) or
/// `grace` has passed.
pub async fn serve(
    core: Arc<Core>,
    webhooks: Arc<crate::webhooks::Monitor>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(core.limits.max_connections));
    // Every connection task holds a clone; when all are gone, all ended.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The permit and `alive` live as long as any request of this
        // connection, including an upgraded WebSocket session (it holds
        // a clone of the context).
        let ctx = Ctx {
            core: core.clone(),
            webhooks: webhooks.clone(),
            peer,
            shutdown: shutdown.clone(),
            guard: Arc::new((permit, alive.clone())),
        };
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| router::route(ctx.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(alive);
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
}
