//! The "actions" dialect (seed 000, API.md §3): an API-Gateway-style
//! WebSocket at `/actions` (and `/dev`, `/demo`, `/prod`) whose frames are
//! `{"action", "authToken", …}`: ready, create_chat, get_messages,
//! send_message, read_message. Timestamps are Unix milliseconds; ids are
//! strings.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};

use super::wire_error::WireError;
use super::Ctx;
use crate::core::audit::ToShow;
use crate::core::hub::{ChatView, Event, EventKind};
use crate::core::messages::{PostAs, Window};
use crate::core::{Caller, Core};
use crate::error::{Error, Kind, Result};
use crate::model::{Message, RoomId, User, UserId};
use crate::net::http::Resp;
use crate::net::ws::{self, Dialect, Out};

/// `GET /actions` (or `/dev`, `/demo`, `/prod`) — WebSocket; `ready` first.
pub fn connect(ctx: Ctx, req: Request<Incoming>) -> Resp {
    super::upgrade(ctx.conn.guard.clone(), req, move |socket| {
        let session = Session {
            core: ctx.core.clone(),
            ready: None,
        };
        ws::run(
            "actions",
            ctx.core,
            socket,
            session,
            None,
            ctx.conn.shutdown,
        )
    })
}

struct Session {
    core: Arc<Core>,
    /// The caller and the token given to `ready`.
    ready: Option<(Caller, String)>,
}

/// This dialect's wire error: the frame `{"action":"error","error_code",
/// "message"}`, with API.md §1's codes; the socket stays open.
impl WireError for Session {
    type Fail = Error;
    type Wire = Vec<Out>;

    fn wire(e: &Error) -> Vec<Out> {
        let frame =
            json!({ "action": "error", "error_code": Self::code(e.kind), "message": e.message });
        vec![Out::Text(frame.to_string())]
    }
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

/// A chat as this dialect shows it, read for `user` and held until shown:
/// participants with `last_seen`, and the newest `chat_history` messages,
/// oldest first.
fn chat(core: &Core, user: &User, room: RoomId) -> Result<ToShow<Value>> {
    let participants = core.room_info(user, room)?.participants;
    let window = Window {
        last: Some(core.limits.chat_history),
        ..Window::default()
    };
    Ok(core.room_history(user, room, window)?.map(|recent| {
        chat_json(
            room,
            &ChatView {
                participants,
                recent,
            },
        )
    }))
}

/// A chat, from what was read for it or what an event carries.
fn chat_json(room: RoomId, chat: &ChatView) -> Value {
    let messages: Vec<Value> = chat.recent.iter().map(message).collect();
    let participants: Vec<Value> = chat
        .participants
        .iter()
        .map(|(u, p)| json!({ "participant_id": u.to_string(), "last_seen": p.last_seen_ms() }))
        .collect();
    json!({ "id": room.to_string(), "participants": participants, "messages": messages })
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
                let chats = self.core.show(ToShow::join(chats)).await?;
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
    const SLOT: usize = super::slot::ACTIONS;

    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        let Frame { token, command } = match parse(text) {
            Ok(f) => f,
            Err(e) => return Self::wire(&e),
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
                    Err(e) => Self::wire(&e),
                }
            }
            None => Self::wire(
                &Error::unauthenticated().with_message("send `ready` with your token first"),
            ),
            Some((_, given)) if token != Some(given.as_str()) => Self::wire(
                &Error::unauthenticated()
                    .with_message("`authToken` is not the one given to `ready`"),
            ),
            Some((caller, _)) => match command {
                Ok(command) => {
                    let action = command.action();
                    match self.act(&caller.user, command).await {
                        Ok(reply) => reply.map(Out::Text).into_iter().collect(),
                        Err(e) => {
                            if e.kind == Kind::Internal {
                                tracing::warn!(action, "action failed");
                            }
                            Self::wire(&e)
                        }
                    }
                }
                Err(e) => Self::wire(&e),
            },
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Vec<Out> {
        Self::wire(&Error::bad_request(
            "binary frames are not understood: send JSON text frames",
        ))
    }

    fn render(ev: &Event) -> Option<String> {
        let shown = match &ev.kind {
            EventKind::Message {
                new_chat: Some(chat),
                ..
            } => json!({ "action": "create_chat", "chat": chat_json(ev.room, chat) }),
            EventKind::Message {
                msg,
                new_chat: None,
                ..
            } => json!({
                "action": "receive_message",
                "chat_id": msg.room.to_string(),
                "message": msg.text,
                "owner_id": msg.sender.to_string(),
                "timestamp": msg.at_ms,
            }),
            EventKind::Read { chat, .. } => {
                json!({ "action": "read_message", "chat": chat_json(ev.room, chat) })
            }
            EventKind::Joined { .. } => return None,
        };
        Some(shown.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Admin;
    use crate::dialects::wire_error::check::{every_kind_is_shown, frames};
    use crate::fuzzing::strategies::{almost_valid, json_value, object_with, odd_string};
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
        fn almost_valid_frames_never_panic(text in almost_valid(frame_like())) {
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
    fn every_kind_is_an_error_frame() {
        let shown = |out| {
            let text = frames(out);
            let v: Value = serde_json::from_str(&text).expect("one JSON frame");
            assert_eq!(v["action"], "error", "{text}");
            text
        };
        every_kind_is_shown::<Session>(|e| e, shown);
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

    /// A `read_message` push shows the chat as of its own commit: a later
    /// marker (committed, or still unsynced) never leaks into it, because
    /// rendering reads nothing but the event — it renders the same after
    /// the core is gone.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_push_shows_its_own_commits_markers_with_no_core_at_all() {
        use crate::core::accounts::NewUser;
        use crate::model::{Role, Workspace};
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), crate::core::limits::Limits::default()).unwrap();
        let mut users = Vec::new();
        for name in ["ann", "bob"] {
            let new = NewUser {
                username: name.into(),
                password: "pw".into(),
                role: Role::Staff,
                workspace: Workspace::default(),
                display_name: None,
            };
            let id = core.create_user(&Admin::operator(), new).await.unwrap();
            users.push(core.user(id).unwrap().unwrap());
        }
        let (ann, bob) = (&users[0], &users[1]);
        let dm = core.create_dm(ann, bob.id).await.unwrap();
        let mut sub = core.hub.subscribe(bob.id, [0; 32]).unwrap();
        let first = core
            .post(ann, dm, "m1".into(), PostAs::default())
            .await
            .unwrap();
        core.post(ann, dm, "m2".into(), PostAs::default())
            .await
            .unwrap();
        let early = core.mark_read(bob, dm, Some(first.id)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let late = core.mark_read(bob, dm, None).await.unwrap();
        assert!(late.last_seen_ms() > early.last_seen_ms());
        let mut reads = Vec::new();
        while reads.len() < 2 {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), sub.recv())
                .await
                .expect("an event within 10 s")
                .unwrap();
            if matches!(ev.kind, EventKind::Read { .. }) {
                reads.push(ev);
            }
        }
        drop(sub);
        core.shutdown();
        drop(core);
        drop(dir);

        let seen = |ev: &Event| -> (u64, Vec<String>) {
            let v: Value = serde_json::from_str(&Session::render(ev).unwrap()).unwrap();
            assert_eq!(v["action"], "read_message");
            let chat = &v["chat"];
            let bobs = chat["participants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["participant_id"] == bob.id.to_string())
                .unwrap()["last_seen"]
                .as_u64()
                .unwrap();
            let texts = chat["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["message"].as_str().unwrap().to_owned())
                .collect();
            (bobs, texts)
        };
        assert_eq!(
            seen(&reads[0]),
            (early.last_seen_ms(), vec!["m1".into(), "m2".into()])
        );
        assert_eq!(
            seen(&reads[1]),
            (late.last_seen_ms(), vec!["m1".into(), "m2".into()])
        );
    }
}
