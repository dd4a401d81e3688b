//! The network front, transport only: the accept loop (plain TCP or TLS,
//! a bounded number of connections), HTTP/1.1 (hyper 1), the hand-rolled
//! WebSocket upgrade and the WebSocket session loop with its `Dialect`
//! trait, and the HTTP helpers every dialect shares. It knows no dialect
//! and no route: `serve` takes the service that answers a request
//! (`app::serve` gives it the route table).

pub mod http;
pub mod proxy;
pub mod tls;
pub mod upgrade;
pub mod ws;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use http::Resp;

/// How the front door is set up (from `serve`'s flags).
pub struct Front {
    /// Serve TLS with this (`--tls-cert/--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whose `X-Forwarded-For` to believe (`--trusted-proxies`).
    pub proxies: proxy::TrustedProxies,
    /// Connections served at once (`--max-connections`); more wait.
    pub max_connections: usize,
    /// Request headers must be complete within this (API.md §1: 30 s).
    pub header_timeout: Duration,
}

/// One accepted connection, as each request on it sees it.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    front: Arc<Front>,
    /// Turns true when the daemon stops (WebSocket sessions close, 1001).
    pub shutdown: watch::Receiver<bool>,
    /// Held while anything of the connection runs, an upgraded WebSocket
    /// session included: its connection permit, and what `serve` waits
    /// for when it stops.
    pub guard: Arc<dyn std::any::Any + Send + Sync>,
}

impl Conn {
    /// The client's address: the peer's, or what trusted proxies say.
    pub fn client_ip(&self, headers: &HeaderMap) -> IpAddr {
        self.front.proxies.client(self.peer.ip(), headers)
    }

    /// Whether the client is on this machine (loopback, directly or
    /// through a trusted proxy).
    pub fn is_local(&self, headers: &HeaderMap) -> bool {
        self.front.proxies.is_local(self.peer.ip(), headers)
    }
}

/// Serves until `shutdown` turns true, then stops accepting and returns
/// once every connection has ended (WebSockets close with 1001) or
/// `grace` has passed. Each request is answered by `service`. With TLS,
/// each connection first completes a TLS handshake (in its own task,
/// within [`tls::HANDSHAKE_TIMEOUT`]).
pub async fn serve<S, F>(
    listener: TcpListener,
    front: Front,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    service: S,
) where
    S: Fn(Conn, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let front = Arc::new(front);
    let permits = Arc::new(Semaphore::new(front.max_connections));
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
        let conn = Conn {
            peer,
            front: front.clone(),
            shutdown: shutdown.clone(),
            guard: Arc::new((permit, alive.clone())),
        };
        let service = service.clone();
        let mut conn_shutdown = shutdown.clone();
        let tls = front.tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, conn, service, conn_shutdown).await;
            };
            let handshake = tokio::select! {
                r = tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls::accept(&tls, stream)) => r,
                _ = conn_shutdown.changed() => return,
            };
            match handshake {
                Ok(Ok(Some(stream))) => {
                    serve_connection(stream, conn, service, conn_shutdown).await
                }
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
async fn serve_connection<I, S, F>(
    io: I,
    conn: Conn,
    service: S,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Conn, Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let header_timeout = conn.front.header_timeout;
    let svc = service_fn(move |req| {
        let answer = service(conn.clone(), req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
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
