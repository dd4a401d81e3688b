//! The network front: accept loop, HTTP/1.1 server (hyper 1), the router,
//! the WebSocket upgrade and session loop. Knows dialects only through the
//! router table.

pub mod http;
pub mod ops;
pub mod proxy;
pub mod router;
pub mod tls;
pub mod upgrade;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::core::Core;
use crate::dialects::Ctx;

/// How the front door is set up (from `serve`'s flags).
pub struct Front {
    /// Serve TLS with this (`--tls-cert/--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whose `X-Forwarded-For` to believe (`--trusted-proxies`).
    pub proxies: proxy::TrustedProxies,
    /// Serve the conformance echo at `/conformance/echo`
    /// (`--conformance-echo`, for protocol test suites; off in production).
    pub conformance_echo: bool,
    /// Request headers must be complete within this (API.md §1: 30 s).
    pub header_timeout: Duration,
}

/// Serves until `shutdown` turns true, then stops accepting and returns
/// once every connection has ended (WebSockets close with 1001) or
/// `grace` has passed. With TLS, each connection first completes a TLS
/// handshake (in its own task, within [`tls::HANDSHAKE_TIMEOUT`]).
pub async fn serve(
    core: Arc<Core>,
    webhooks: Arc<crate::webhooks::Monitor>,
    listener: TcpListener,
    front: Front,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let front = Arc::new(front);
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
            front: front.clone(),
            shutdown: shutdown.clone(),
            guard: Arc::new((permit, alive.clone())),
        };
        let mut conn_shutdown = shutdown.clone();
        let tls = front.tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, ctx, conn_shutdown).await;
            };
            let handshake = tokio::select! {
                r = tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls::accept(&tls, stream)) => r,
                _ = conn_shutdown.changed() => return,
            };
            match handshake {
                Ok(Ok(Some(stream))) => serve_connection(stream, ctx, conn_shutdown).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    drop(alive);
    let _ = tokio::time::timeout(grace, all_done.recv()).await;
}

/// Serves HTTP/1.1 (and upgrades) on one accepted connection, plain TCP or
/// TLS, until it ends or `shutdown` asks for a graceful end.
async fn serve_connection<I>(io: I, ctx: Ctx, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = ctx.front.header_timeout;
    let svc = service_fn(move |req| router::route(ctx.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
