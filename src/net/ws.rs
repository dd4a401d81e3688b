//! The WebSocket session loop shared by every WebSocket dialect: reads
//! frames, hands text to the dialect, writes what it answers, forwards hub
//! events the dialect renders, pings idle peers, enforces the per-connection
//! rate and the authentication deadline, and always ends with a close frame
//! that says why.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tracing::Instrument;

use crate::core::hub::{Event, Kick, Subscription};
use crate::core::limits::Bucket;
use crate::core::Core;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

/// What a dialect asks the loop to do after a frame.
pub enum Out {
    Text(String),
    Binary(Vec<u8>),
    /// Start receiving hub events (after authentication).
    Subscribe(Subscription),
    Close(CloseCode, String),
}

/// A wire protocol spoken over WebSocket: translation only.
pub trait Dialect: Send + 'static {
    /// Whether the socket must authenticate (subscribe) within
    /// `Limits::auth_deadline`. Only a dialect without users says no: the
    /// conformance echo (`dialects::echo`).
    const NEEDS_AUTH: bool = true;
    fn on_text(&mut self, text: &str) -> impl Future<Output = Vec<Out>> + Send;
    /// This dialect's slot among an event's shared renderings
    /// ([`Event::frame`]): one per dialect, below `hub::FRAME_SLOTS`.
    const SLOT: usize;
    /// Handles one text frame.
    /// Handles one binary frame (its whole payload); by default ignored.
    fn on_binary(&mut self, _data: &[u8]) -> Vec<Out> {
        Vec::new()
    }
    /// Whether this connection shows `ev` at all: a per-connection filter
    /// before the shared rendering (by default, every event).
    fn shows(&mut self, _ev: &Event) -> bool {
        true
    }
    /// Renders a hub event as every connection of this dialect shows it
    /// (`None`: it does not). It sees the event only — no session, no
    /// core, no store — so an event is rendered once per dialect and its
    /// bytes shared by all the dialect's recipients, and a push shows
    /// exactly what was committed.
    fn render(ev: &Event) -> Option<String>;
}

/// What a session runs over: the upgraded connection (`upgrade::Socket`),
/// or an in-memory pipe in tests.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for S {}

/// Peers that send nothing for this long get a ping…
const PING_EVERY: Duration = Duration::from_secs(30);
/// …and are closed if still silent after this long.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// A write that cannot complete in this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events written to a socket per wake-up at most before one flush (a
/// bound so one busy connection cannot hold a worker for long).
const DRAIN: usize = 64;
/// How long a socket closed for a bad frame goes on discarding what the peer
/// still sends (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);

/// Runs a session until either side closes. `sub` is given when the socket
/// was authenticated during the upgrade; otherwise the dialect subscribes
/// after its own authentication frame, within `Limits::auth_deadline`.
pub async fn run<D: Dialect, S: Io>(
    name: &'static str,
    core: Arc<Core>,
    mut ws: WebSocketStream<S>,
    mut dialect: D,
    mut sub: Option<Subscription>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("conn", dialect = name, user = tracing::field::Empty);
    async move {
        let _gauge = core.metrics.connection(name);
        let mut bucket = Bucket::new(core.limits.msg_burst, core.limits.msg_rate);
        let auth_deadline = tokio::time::sleep(core.limits.auth_deadline);
        tokio::pin!(auth_deadline);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut last_heard = Instant::now();
        // tungstenite reads nothing more after a bad frame.
        let mut read_failed = false;
        let close = loop {
            tokio::select! {
                _ = shutdown.changed() => break (CloseCode::Away, "server shutting down".into()),
                _ = &mut auth_deadline, if D::NEEDS_AUTH && sub.is_none() => {
                    break (CloseCode::Policy, "not authenticated in time".into());
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_LIMIT {
                        break (CloseCode::Away, "no answer to pings".into());
                    }
                    if send(&mut ws, WsMessage::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                ev = recv(&mut sub) => match ev {
                    Ok(ev) => {
                        // This event and every one queued behind it (up
                        // to DRAIN), written with one flush.
                        let mut next = Some(ev);
                        let mut taken = 0;
                        while let Some(ev) = next.take() {
                            if let Some(frame) = frame_of(&core, &mut dialect, &ev) {
                                if feed(&mut ws, frame).await.is_err() {
                                    return;
                                }
                            }
                            taken += 1;
                            if taken < DRAIN {
                                next = sub.as_mut().and_then(Subscription::try_recv);
                            }
                        }
                        if flush(&mut ws).await.is_err() {
                            return;
                        }
                    }
                    Err(Kick::TooSlow) => {
                        core.metrics.conns_too_slow.fetch_add(1, Relaxed);
                        break (CloseCode::Again, "too slow: reconnect and catch up from history".into());
                    }
                    Err(Kick::LoggedOut) => break (CloseCode::Policy, "logged out".into()),
                },
                frame = ws.next() => {
                    last_heard = Instant::now();
                    let outs = match frame {
                        None => return,
                        Some(Err(e)) => match close_for(&e) {
                            Some(close) => {
                                read_failed = true;
                                break close;
                            }
                            None => return,
                        },
                        Some(Ok(WsMessage::Close(_))) => {
                            // tungstenite has queued the reply (the peer's
                            // code, or 1002 for an invalid one); flush it.
                            // Not `ws.close(None)`: that *sends* a close,
                            // which tungstenite refuses after the peer's
                            // (SendAfterClosing), dropping the reply: the
                            // peer saw a TCP drop instead of a handshake.
                            let flush = SinkExt::close(&mut ws);
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, flush).await;
                            return;
                        }
                        Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))) if bucket.take(Instant::now()).is_err() => {
                            core.metrics.conns_rate_limited.fetch_add(1, Relaxed);
                            break (CloseCode::Policy, "rate limit exceeded".into());
                        }
                        // Boxed: an idle connection's task then holds only
                        // what waiting needs, not the largest handler's
                        // state (measured: 3.0 → 2.0 KiB a socket).
                        Some(Ok(WsMessage::Text(t))) => Box::pin(dialect.on_text(t.as_str())).await,
                        Some(Ok(WsMessage::Binary(b))) => dialect.on_binary(&b),
                        Some(Ok(_)) => continue,
                    };
                    let mut closing = None;
                    for out in outs {
                        let msg = match out {
                            Out::Text(t) => WsMessage::text(t),
                            Out::Binary(b) => WsMessage::binary(b),
                            Out::Subscribe(s) => {
                                sub = Some(s);
                                continue;
                            }
                            Out::Close(code, reason) => {
                                closing = Some((code, reason));
                                break;
                            }
                        };
                        if feed(&mut ws, msg).await.is_err() {
                            return;
                        }
                    }
                    if flush(&mut ws).await.is_err() {
                        return;
                    }
                    if let Some(c) = closing {
                        break c;
                    }
                }
            }
        };
        tracing::debug!(code = ?close.0, reason = %close.1, "closing");
        let frame = CloseFrame {
            code: close.0,
            reason: close.1.into(),
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            if ws.send(WsMessage::Close(Some(frame))).await.is_ok() {
                if read_failed {
                    linger(ws.get_mut()).await;
                } else {
                    // Wait briefly for the peer's close so the handshake
                    // completes.
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        })
        .await;
    }
    .instrument(span)
    .await
}

/// A lingering close, after a bad frame: the peer may still be sending (the
/// rest of a message too big, say) and tungstenite reads no more. Closing
/// a TCP socket with unread data resets the connection, and a reset can
/// destroy the close frame just sent before the peer reads it (Autobahn
/// case 9.3.1 saw exactly that). So: half-close (FIN after the close frame),
/// then read and discard until the peer closes too, within [`LINGER`].
async fn linger<S>(io: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut sink = vec![0u8; 16 * 1024];
        while let Ok(1..) = io.read(&mut sink).await {}
    })
    .await;
}

async fn recv(sub: &mut Option<Subscription>) -> Result<Arc<Event>, Kick> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The frame this connection shows for `ev`, if any: the dialect's
/// shared rendering, made here if this is its first recipient.
fn frame_of<D: Dialect>(core: &Core, dialect: &mut D, ev: &Event) -> Option<WsMessage> {
    if !dialect.shows(ev) {
        return None;
    }
    let text = ev.frame(D::SLOT, |ev| {
        core.metrics.frames_rendered.fetch_add(1, Relaxed);
        D::render(ev).map(Utf8Bytes::from)
    })?;
    core.metrics.frames_pushed.fetch_add(1, Relaxed);
    Some(WsMessage::Text(text))
}

async fn send<S: Io>(ws: &mut WebSocketStream<S>, msg: WsMessage) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Queues a frame in the socket's write buffer (written out once it holds
/// `upgrade::WRITE_BUFFER`, or at the next [`flush`]).
async fn feed<S: Io>(ws: &mut WebSocketStream<S>, msg: impl Into<WsMessage>) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.feed(msg.into())).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn flush<S: Io>(ws: &mut WebSocketStream<S>) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The close to send for a read error, or `None` when the peer is gone.
fn close_for(e: &WsError) -> Option<(CloseCode, String)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::Size, "message too big".into()))
        }
        WsError::Capacity(_) => Some((CloseCode::Size, "frame too big".into())),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8".into())),
        WsError::Protocol(p) => Some((CloseCode::Protocol, p.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hub::EventKind;
    use crate::model::{Message, MsgId, RoomId, UserId};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::{Context, Poll};
    use tokio::io::{DuplexStream, ReadBuf};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// The server's end of an in-memory pipe, counting the writes that
    /// reach it (each would be one `send` on a real socket).
    struct Counting {
        io: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.io).poll_write(cx, buf);
            if let Poll::Ready(Ok(_)) = r {
                self.writes.fetch_add(1, SeqCst);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// Shows a message event as its text.
    struct Texts;

    impl Dialect for Texts {
        const NEEDS_AUTH: bool = false;
        const SLOT: usize = 3;
        async fn on_text(&mut self, _text: &str) -> Vec<Out> {
            Vec::new()
        }
        fn render(ev: &Event) -> Option<String> {
            match &ev.kind {
                EventKind::Message { msg, .. } => Some(msg.text.clone()),
                _ => None,
            }
        }
    }

    fn message(id: u64) -> Arc<Event> {
        let msg = Message {
            id: MsgId(id),
            room: RoomId(1),
            sender: UserId(2),
            text: format!("m{id}"),
            at_ms: 0,
            author: None,
            is_read: false,
            archived: false,
        };
        let kind = EventKind::Message {
            msg,
            sender_name: "ann".into(),
            new_chat: None,
        };
        Arc::new(Event::new(RoomId(1), [UserId(1)].into(), kind))
    }

    /// Events already queued when the session wakes go out together: one
    /// write for twenty frames, not twenty.
    #[tokio::test]
    async fn queued_events_are_written_with_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), crate::core::limits::Limits::default()).unwrap();
        let sub = core.hub.subscribe(UserId(1), [0; 32]).unwrap();
        for id in 1..=20 {
            core.hub.publish(message(id));
        }
        let (server, client) = tokio::io::duplex(64 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let server = Counting {
            io: server,
            writes: writes.clone(),
        };
        let config = Some(super::super::upgrade::config());
        let server = WebSocketStream::from_raw_socket(server, Role::Server, config).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let (_stop, shutdown) = watch::channel(false);
        let session = tokio::spawn(run(
            "test",
            core.clone(),
            server,
            Texts,
            Some(sub),
            shutdown,
        ));
        for id in 1..=20 {
            let frame = tokio::time::timeout(Duration::from_secs(10), client.next())
                .await
                .expect("a frame within 10 s")
                .expect("the session is open")
                .unwrap();
            assert_eq!(frame.into_text().unwrap().as_str(), format!("m{id}"));
        }
        assert_eq!(writes.load(SeqCst), 1, "twenty queued frames, one write");
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session ends with its peer")
            .unwrap();
        core.shutdown();
    }
}
