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

/// What a frame asks for, its fields checked; no I/O.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    Ready,
    CreateChat {
        recipients: Vec<UserId>,
        text: String,
    },
    GetMessages,
    SendMessage {
        chat: RoomId,
        text: String,
    },
    ReadMessage {
        chat: RoomId,
    },
}

impl Command {
    /// The `action` that asked for it.
    fn action(&self) -> &'static str {
        match self {
            Command::Ready => "ready",
            Command::CreateChat { .. } => "create_chat",
            Command::GetMessages => "get_messages",
            Command::SendMessage { .. } => "send_message",
            Command::ReadMessage { .. } => "read_message",
        }
    }
}

/// One frame, parsed: its `authToken`, if any, and its command. The
/// command's own fields are only looked at once the caller is `ready` (an
/// unready caller is told to send `ready`, whatever else is wrong), so a
/// frame whose `action` is a string parses, keeping its command's error.
#[derive(Debug)]
pub(crate) struct Frame {
    pub token: Option<String>,
    pub command: Result<Command>,
}

/// The whole frame: a JSON object with a string `action`, else the error
/// the dialect answers with.
pub(crate) fn parse(text: &str) -> Result<Frame> {
    let frame: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(Error::bad_request("frames are JSON objects")),
    };
    let Some(action) = frame.get("action").and_then(Value::as_str) else {
        return Err(Error::bad_request("`action` must be a string"));
    };
    Ok(Frame {
        token: frame
            .get("authToken")
            .and_then(Value::as_str)
            .map(str::to_owned),
        command: command(action, &frame),
    })
}

/// One action's fields, in the order the dialect checks them.
fn command(action: &str, frame: &Value) -> Result<Command> {
    Ok(match action {
        "ready" => Command::Ready,
        "create_chat" => Command::CreateChat {
            text: field(frame, "message")?.to_owned(),
            recipients: recipients(frame)?,
        },
        "get_messages" => Command::GetMessages,
        "send_message" => Command::SendMessage {
            chat: chat_id(frame)?,
            text: field(frame, "message")?.to_owned(),
        },
        "read_message" => Command::ReadMessage {
            chat: chat_id(frame)?,
        },
        other => return Err(Error::bad_request(format!("unknown action {other:?}"))),
    })
}

impl Session {
    /// One command of a caller who is `ready`: the direct reply, if any.
    async fn act(&self, user: &User, command: Command) -> Result<Option<String>> {
        match command {
            Command::Ready => Ok(Some(ready_frame())),
            // The chat reaches every participant, the creator included,
            // through the hub (`render`).
            Command::CreateChat { recipients, text } => {
                self.core.create_chat(user, &recipients, text).await?;
                Ok(None)
            }
            Command::GetMessages => {
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
            Command::SendMessage { chat, text } => {
                self.core.post(user, chat, text, PostAs::default()).await?;
                Ok(None)
            }
            Command::ReadMessage { chat } => {
                self.core.mark_read(user, chat, None).await?;
                Ok(None)
            }
        }
    }
}

fn ready_frame() -> String {
    json!({ "message": "Connection ready" }).to_string()
}

impl Dialect for Session {
    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        let Frame { token, command } = match parse(text) {
            Ok(f) => f,
            Err(e) => return vec![Out::Text(error_frame(&e))],
        };
        let token = token.as_deref();
        match &self.ready {
            None if matches!(command, Ok(Command::Ready)) => {
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
            Some((caller, _)) => match command {
                Ok(command) => {
                    let action = command.action();
                    match self.act(&caller.user, command).await {
                        Ok(reply) => reply.map(Out::Text).into_iter().collect(),
                        Err(e) => {
                            if e.kind == Kind::Internal {
                                tracing::warn!(action, "action failed");
                            }
                            vec![Out::Text(error_frame(&e))]
                        }
                    }
                }
                Err(e) => vec![Out::Text(error_frame(&e))],
            },
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Vec<Out> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::strategies::{json_value, mutated, object_with, odd_string};
    use proptest::prelude::*;

    const FIELDS: &[&str] = &["action", "authToken", "chat_id", "message", "recipient_ids"];
    const ACTIONS: &[&str] = &[
        "ready",
        "create_chat",
        "get_messages",
        "send_message",
        "read_message",
    ];

    /// A frame that names a known action (usually) and has its fields, of
    /// any types.
    fn frame_like() -> impl Strategy<Value = Value> {
        (
            object_with(FIELDS),
            prop_oneof![
                4 => proptest::sample::select(ACTIONS).prop_map(Value::from),
                1 => json_value(),
            ],
        )
            .prop_map(|(mut v, action)| {
                v["action"] = action;
                v
            })
    }

    fn check(text: &str) {
        crate::fuzzing::actions_frame(text.as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_text_parses_or_is_a_bad_request(s in any::<String>()) {
            check(&s);
            let object = s.trim_start().starts_with('{');
            prop_assert!(parse(&s).is_err() || object, "parsed: {:?}", s);
        }

        #[test]
        fn frame_shaped_json_parses_or_is_a_clear_error(v in frame_like()) {
            let text = v.to_string();
            check(&text);
            let Some(_) = v["action"].as_str() else {
                let e = parse(&text).unwrap_err();
                prop_assert_eq!(e.message, "`action` must be a string");
                return Ok(());
            };
            let f = parse(&text).expect("an object with a string action parses");
            prop_assert_eq!(f.token.as_deref(), v["authToken"].as_str());
            if let Err(e) = f.command {
                prop_assert!(matches!(e.kind, Kind::BadRequest | Kind::NotFound), "{:?}", e);
                prop_assert!(!e.message.is_empty());
            }
        }

        #[test]
        fn almost_valid_frames_never_panic(
            text in frame_like().prop_flat_map(|v| mutated(v.to_string()))
        ) {
            check(&text);
        }

        #[test]
        fn well_typed_frames_give_their_values(
            chat in any::<u64>(),
            users in proptest::collection::vec(any::<u64>(), 1..5),
            text in odd_string(),
            token in odd_string(),
        ) {
            let send = json!({"action": "send_message", "authToken": token,
                              "chat_id": chat.to_string(), "message": text});
            let f = parse(&send.to_string()).unwrap();
            prop_assert_eq!(f.token, Some(token.clone()));
            prop_assert_eq!(f.command, Ok(Command::SendMessage { chat: RoomId(chat), text: text.clone() }));
            let read = json!({"action": "read_message", "chat_id": chat.to_string()});
            prop_assert_eq!(parse(&read.to_string()).unwrap().command, Ok(Command::ReadMessage { chat: RoomId(chat) }));
            let ids: Vec<String> = users.iter().map(u64::to_string).collect();
            let create = json!({"action": "create_chat", "recipient_ids": ids, "message": text});
            prop_assert_eq!(
                parse(&create.to_string()).unwrap().command,
                Ok(Command::CreateChat { recipients: users.into_iter().map(UserId).collect(), text })
            );
        }
    }

    #[test]
    fn deep_nesting_and_huge_numbers_are_bad_requests_not_crashes() {
        for n in [1, 127, 128, 129, 10_000, 200_000] {
            check(&"[".repeat(n));
            check(&format!("{}{}", "{\"a\":".repeat(n), "}".repeat(n)));
            check(&format!(
                "{{\"action\":\"create_chat\",\"recipient_ids\":{}\"1\"{}}}",
                "[".repeat(n),
                "]".repeat(n)
            ));
        }
        let huge = json!({"action": "send_message", "chat_id": "1".repeat(400), "message": "x"});
        let f = parse(&huge.to_string()).unwrap();
        assert_eq!(f.command.unwrap_err().kind, Kind::NotFound);
        let e = parse(r#"{"action":"read_message","chat_id":1e999}"#).unwrap_err();
        assert_eq!(e.message, "frames are JSON objects");
    }

    #[test]
    fn errors_keep_the_dialects_order_and_words() {
        let err = |t: &str| parse(t).unwrap().command.unwrap_err().message;
        assert_eq!(parse("[]").unwrap_err().message, "frames are JSON objects");
        assert_eq!(
            parse(r#"{"action":1}"#).unwrap_err().message,
            "`action` must be a string"
        );
        // `message` is checked before the recipients, `chat_id` before
        // `message`, as before the parser was pulled out of the session.
        assert_eq!(
            err(r#"{"action":"create_chat","recipient_ids":[]}"#),
            "`message` must be a string"
        );
        assert_eq!(
            err(r#"{"action":"create_chat","message":"m","recipient_ids":[]}"#),
            "`recipient_ids` must be a non-empty list of user ids (strings)"
        );
        assert_eq!(
            err(r#"{"action":"send_message"}"#),
            "`chat_id` must be a string"
        );
        assert_eq!(err(r#"{"action":"fly"}"#), "unknown action \"fly\"");
        assert_eq!(
            parse(r#"{"action":"ready","authToken":"t"}"#)
                .unwrap()
                .command,
            Ok(Command::Ready)
        );
    }
}
