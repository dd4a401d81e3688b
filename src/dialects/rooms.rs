//! The "rooms" dialect (seed 001, API.md §2): `/chat/connect` with an auth
//! frame, and REST `create_dm`, `room_info`, `retrieve`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{caller, Ctx};
use crate::core::error::{Error, Result};
use crate::core::hub::{Event, EventKind};
use crate::core::messages::PostAs;
use crate::core::model::{Message, MsgId, RoomId, UserId};
use crate::core::{Caller, Core};
use crate::net::http::{self, Resp};
use crate::net::ws::{self, Dialect, Out};

/// A message as this dialect shows it, pushed and in `retrieve`.
#[derive(Serialize)]
struct Wire<'a> {
    id: u64,
    message: &'a str,
    poster: String,
    room: String,
    timestamp: u64,
}

fn wire(m: &Message) -> Wire<'_> {
    Wire {
        id: m.id.0,
        message: &m.text,
        poster: m.sender.to_string(),
        room: m.room.to_string(),
        timestamp: m.at_ms / 1000,
    }
}

fn error_frame(e: &Error) -> String {
    json!({ "error": e.message, "error_code": e.kind.code() }).to_string()
}

fn room_id(s: &str) -> Result<RoomId> {
    RoomId::parse(s).ok_or_else(|| Error::not_found("no such room"))
}

/// `GET /chat/connect` — WebSocket; first frame `{"auth_token"}`.
pub fn connect(ctx: Ctx, req: Request<Incoming>) -> Resp {
    crate::net::upgrade::upgrade(ctx.guard.clone(), req, move |socket| {
        let session = Session {
            core: ctx.core.clone(),
            caller: None,
        };
        ws::run("rooms", ctx.core, socket, session, None, ctx.shutdown)
    })
}

struct Session {
    core: Arc<Core>,
    caller: Option<Caller>,
}

#[derive(Deserialize)]
struct Auth {
    auth_token: String,
}

#[derive(Deserialize)]
struct Send {
    room: String,
    #[serde(alias = "message")]
    messages: String,
}

impl Dialect for Session {
    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        let Some(caller) = &self.caller else {
            let opened = http::json_object::<Auth>(text.as_bytes())
                .map_err(|_| Error::unauthenticated())
                .and_then(|a| self.core.open_session(&a.auth_token));
            return match opened {
                Ok((caller, sub)) => {
                    tracing::Span::current().record("user", caller.user.id.0);
                    self.caller = Some(caller);
                    vec![
                        Out::Subscribe(sub),
                        Out::Text(json!({ "status": "CONNECTED" }).to_string()),
                    ]
                }
                Err(e) => vec![
                    Out::Text(error_frame(&e)),
                    Out::Close(CloseCode::Policy, e.kind.code().into()),
                ],
            };
        };
        // Sends get no reply, whatever happens (the seed's "small security
        // feature"); failures are logged.
        let send = match http::json_object::<Send>(text.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "ignored a frame that is not a send");
                return Vec::new();
            }
        };
        let queued = match room_id(&send.room) {
            Ok(room) => {
                self.core
                    .post_queued(&caller.user, room, send.messages, PostAs::default())
                    .await
            }
            Err(e) => Err(e),
        };
        match queued {
            // Queued in order; the push to this socket is the acknowledgement.
            Ok(done) => {
                tokio::spawn(async move {
                    if let Ok(Err(e)) = done.await {
                        tracing::info!(error = %e, "send refused");
                    }
                });
            }
            Err(e) => tracing::info!(error = %e, "send refused"),
        }
        Vec::new()
    }

    fn render(&mut self, ev: &Event) -> Option<String> {
        match &ev.kind {
            EventKind::Message { msg, .. } => Some(json!({ "message": wire(msg) }).to_string()),
            EventKind::Read { .. } | EventKind::Joined { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct CreateDm {
    other: String,
}

/// `POST /chat/create_dm` `{"other"}` → `{"room_id"}`, the same room for
/// the same pair.
pub async fn create_dm(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let b: CreateDm = http::read_json(req).await?;
    let other = UserId::parse(&b.other).ok_or_else(|| Error::not_found("no such user"))?;
    let room = ctx.core.create_dm(&caller.user, other).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "room_id": room.to_string() }),
    ))
}

#[derive(Deserialize)]
struct RoomInfo {
    room_id: String,
}

/// `POST /chat/room_info` `{"room_id"}` → `{"room_name","occupants"}`.
pub async fn room_info(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let b: RoomInfo = http::read_json(req).await?;
    let info = ctx.core.room_info(&caller.user, room_id(&b.room_id)?)?;
    let occupants: Vec<String> = info
        .participants
        .iter()
        .map(|(u, _)| u.to_string())
        .collect();
    Ok(http::json(
        StatusCode::OK,
        &json!({ "room_name": info.room.name, "occupants": occupants }),
    ))
}

#[derive(Deserialize)]
struct Retrieve {
    after: u64,
    limit: Option<u64>,
}

/// `POST /chat/retrieve` `{"after", "limit"?}` → `{"messages":[…]}`: every
/// message after the cursor in the caller's rooms, ascending, streamed.
pub async fn retrieve(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let b: Retrieve = http::read_json(req).await?;
    let limit = b
        .limit
        .map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize);
    let core = ctx.core.clone();
    Ok(http::stream_json(move |out| {
        let messages = core.messages_after(&caller.user, MsgId(b.after))?;
        if !out.write(b"{\"messages\":[") {
            return Ok(());
        }
        for (i, m) in messages.take(limit).enumerate() {
            let m = m?;
            let mut item = if i == 0 { Vec::new() } else { vec![b','] };
            serde_json::to_writer(&mut item, &wire(&m)).map_err(Error::internal)?;
            if !out.write(&item) {
                return Ok(());
            }
        }
        out.write(b"]}");
        Ok(())
    }))
}
