//! The "actions" dialect (seed 000, API.md §3): an API-Gateway-style
//! WebSocket at `/actions` (and `/dev`, `/demo`, `/prod`) whose frames are
//! `{"action", "authToken", …}`: ready, create_chat, get_messages,
//! send_message, read_message. Timestamps are Unix milliseconds; ids are
//! strings.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};

use super::Ctx;
use crate::core::error::{Error, Kind, Result};
use crate::core::hub::{Event, EventKind};
use crate::core::messages::{PostAs, Window};
use crate::core::model::{Message, RoomId, User, UserId};
use crate::core::{Caller, Core};
use crate::net::http::Resp;
use crate::net::ws::{self, Dialect, Out};

/// `GET /actions` (or `/dev`, `/demo`, `/prod`) — WebSocket; `ready` first.
pub fn connect(ctx: Ctx, req: Request<Incoming>) -> Resp {
    crate::net::upgrade::upgrade(ctx.guard.clone(), req, move |socket| {
        let session = Session {
            core: ctx.core.clone(),
            ready: None,
        };
        ws::run("actions", ctx.core, socket, session, None, ctx.shutdown)
    })
}

struct Session {
    core: Arc<Core>,
    /// The caller and the token given to `ready`.
    ready: Option<(Caller, String)>,
}

/// The error frame: `{"action":"error","error_code","message"}`.
fn error_frame(e: &Error) -> String {
    json!({ "action": "error", "error_code": e.kind.code(), "message": e.message }).to_string()
}

fn field<'a>(frame: &'a Value, name: &str) -> Result<&'a str> {
    frame
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_request(format!("`{name}` must be a string")))
}

fn chat_id(frame: &Value) -> Result<RoomId> {
    RoomId::parse(field(frame, "chat_id")?).ok_or_else(|| Error::not_found("no such chat"))
}

fn recipients(frame: &Value) -> Result<Vec<UserId>> {
    let bad =
        || Error::bad_request("`recipient_ids` must be a non-empty list of user ids (strings)");
    let list = frame
        .get("recipient_ids")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    if list.is_empty() {
        return Err(bad());
    }
    list.iter()
        .map(|v| {
            let s = v.as_str().ok_or_else(bad)?;
            UserId::parse(s).ok_or_else(|| Error::not_found(format!("no user with id {s}")))
        })
        .collect()
}

/// A chat as this dialect shows it: participants with `last_seen`, and the
/// newest `chat_history` messages, oldest first.
fn chat(core: &Core, user: &User, room: RoomId) -> Result<Value> {
    let info = core.room_info(user, room)?;
    let window = Window {
        last: Some(core.limits.chat_history),
        ..Window::default()
    };
    let messages: Vec<Value> = core
        .room_history(user, room, window)?
        .iter()
        .map(message)
        .collect();
    let participants: Vec<Value> = info
        .participants
        .iter()
        .map(|(u, p)| json!({ "participant_id": u.to_string(), "last_seen": p.last_seen_ms() }))
        .collect();
    Ok(json!({ "id": room.to_string(), "participants": participants, "messages": messages }))
}

fn message(m: &Message) -> Value {
    json!({ "owner_id": m.sender.to_string(), "message": m.text, "sended_time": m.at_ms })
}

impl Session {
    /// One action of a caller who is `ready`: the direct reply, if any.
    async fn act(&self, user: &User, action: &str, frame: &Value) -> Result<Option<String>> {
        match action {
            "ready" => Ok(Some(ready_frame())),
            // The chat reaches every participant, the creator included,
            // through the hub (`render`).
            "create_chat" => {
                let text = field(frame, "message")?.to_owned();
                self.core
                    .create_chat(user, &recipients(frame)?, text)
                    .await?;
                Ok(None)
            }
            "get_messages" => {
                let chats = self
                    .core
                    .rooms_of(user)?
                    .into_iter()
                    .map(|room| chat(&self.core, user, room))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(
                    json!({ "action": "get_message", "chats": chats }).to_string(),
                ))
            }
            "send_message" => {
                let room = chat_id(frame)?;
                let text = field(frame, "message")?.to_owned();
                self.core.post(user, room, text, PostAs::default()).await?;
                Ok(None)
            }
            "read_message" => {
                self.core.mark_read(user, chat_id(frame)?, None).await?;
                Ok(None)
            }
            other => Err(Error::bad_request(format!("unknown action {other:?}"))),
        }
    }
}

fn ready_frame() -> String {
    json!({ "message": "Connection ready" }).to_string()
}

impl Dialect for Session {
    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        let frame: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return vec![Out::Text(error_frame(&Error::bad_request(
                    "frames are JSON objects",
                )))]
            }
        };
        let Some(action) = frame.get("action").and_then(Value::as_str) else {
            return vec![Out::Text(error_frame(&Error::bad_request(
                "`action` must be a string",
            )))];
        };
        let token = frame.get("authToken").and_then(Value::as_str);
        match &self.ready {
            None if action == "ready" => {
                let opened = token
                    .ok_or_else(Error::unauthenticated)
                    .and_then(|t| self.core.open_session(t).map(|s| (s, t.to_owned())));
                match opened {
                    Ok(((caller, sub), token)) => {
                        tracing::Span::current().record("user", caller.user.id.0);
                        self.ready = Some((caller, token));
                        vec![Out::Subscribe(sub), Out::Text(ready_frame())]
                    }
                    Err(e) => vec![Out::Text(error_frame(&e))],
                }
            }
            None => vec![Out::Text(error_frame(
                &Error::unauthenticated().with_message("send `ready` with your token first"),
            ))],
            Some((_, given)) if token != Some(given.as_str()) => vec![Out::Text(error_frame(
                &Error::unauthenticated()
                    .with_message("`authToken` is not the one given to `ready`"),
            ))],
            Some((caller, _)) => match self.act(&caller.user, action, &frame).await {
                Ok(reply) => reply.map(Out::Text).into_iter().collect(),
                Err(e) => {
                    if e.kind == Kind::Internal {
                        tracing::warn!(action, "action failed");
                    }
                    vec![Out::Text(error_frame(&e))]
                }
            },
        }
    }

    fn on_binary(&mut self) -> Vec<Out> {
        vec![Out::Text(error_frame(&Error::bad_request(
            "binary frames are not understood: send JSON text frames",
        )))]
    }

    fn render(&mut self, ev: &Event) -> Option<String> {
        let (caller, _) = self.ready.as_ref()?;
        let shown = match &ev.kind {
            EventKind::Message {
                msg,
                new_chat: true,
            } => {
                json!({ "action": "create_chat", "chat": chat(&self.core, &caller.user, msg.room).ok()? })
            }
            EventKind::Message {
                msg,
                new_chat: false,
            } => json!({
                "action": "receive_message",
                "chat_id": msg.room.to_string(),
                "message": msg.text,
                "owner_id": msg.sender.to_string(),
                "timestamp": msg.at_ms,
            }),
            EventKind::Read { .. } => {
                json!({ "action": "read_message", "chat": chat(&self.core, &caller.user, ev.room).ok()? })
            }
            EventKind::Joined { .. } => return None,
        };
        Some(shown.to_string())
    }
}
