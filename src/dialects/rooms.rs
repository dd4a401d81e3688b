//! The "rooms" dialect (seed 001, API.md §2): `/chat/connect` with an auth
//! frame, and REST `create_dm`, `room_info`, `retrieve`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::wire_error::{Rest, WireError};
use super::{caller, Ctx};
use crate::core::hub::{Event, EventKind};
use crate::core::messages::PostAs;
use crate::core::{accounts, blocking, Caller, Core};
use crate::error::{Error, Result};
use crate::model::{Message, MsgId, RoomId};
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

/// This dialect's wire error (only a refused first frame has one: sends
/// get no reply): API.md §1's body and code as a frame, then close 1008
/// with the code as the reason.
impl WireError for Session {
    type Fail = Error;
    type Wire = Vec<Out>;

    fn wire(e: &Error) -> Vec<Out> {
        let code = Self::code(e.kind);
        vec![
            Out::Text(Rest::body(code, &e.message).to_string()),
            Out::Close(CloseCode::Policy, code.into()),
        ]
    }
}

fn room_id(s: &str) -> Result<RoomId> {
    RoomId::parse(s).ok_or_else(|| Error::not_found("no such room"))
}

/// `GET /chat/connect` — WebSocket; first frame `{"auth_token"}`.
pub fn connect(ctx: Ctx, req: Request<Incoming>) -> Resp {
    super::upgrade(ctx.conn.guard.clone(), req, move |socket| {
        let session = Session {
            core: ctx.core.clone(),
            caller: None,
        };
        ws::run("rooms", ctx.core, socket, session, None, ctx.conn.shutdown)
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

/// The first frame: `{"auth_token"}`, its token; anything else is
/// refused as UNAUTHENTICATED. Pure: no I/O.
pub(crate) fn parse_auth(text: &str) -> Result<String> {
    http::json_object::<Auth>(text.as_bytes())
        .map(|a| a.auth_token)
        .map_err(|_| Error::unauthenticated())
}

/// A later frame: a send, `{"room","messages"}` (or `"message"`), as the
/// room and the text. Pure: no I/O.
pub(crate) fn parse_send(text: &str) -> Result<(RoomId, String)> {
    let send = http::json_object::<Send>(text.as_bytes())?;
    Ok((room_id(&send.room)?, send.messages))
}

impl Dialect for Session {
    const SLOT: usize = super::slot::ROOMS;

    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        let Some(caller) = &self.caller else {
            let opened = parse_auth(text).and_then(|token| self.core.open_session(&token));
            return match opened {
                Ok((caller, sub)) => {
                    tracing::Span::current().record("user", caller.user.id.0);
                    self.caller = Some(caller);
                    vec![
                        Out::Subscribe(sub),
                        Out::Text(json!({ "status": "CONNECTED" }).to_string()),
                    ]
                }
                Err(e) => Self::wire(&e),
            };
        };
        // Sends get no reply, whatever happens (the seed's "small security
        // feature"); failures are logged.
        let (room, text) = match parse_send(text) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "ignored a frame that is not a send to a room");
                return Vec::new();
            }
        };
        match self
            .core
            .post_queued(&caller.user, room, text, PostAs::default())
            .await
        {
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

    fn render(ev: &Event) -> Option<String> {
        match &ev.kind {
            EventKind::Message { msg, .. } => Some(json!({ "message": wire(msg) }).to_string()),
            EventKind::Read { .. } | EventKind::Joined { .. } => None,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CreateDm {
    other: String,
}

/// `POST /chat/create_dm` `{"other"}` → `{"room_id"}`, the same room for
/// the same pair.
pub async fn create_dm(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let b: CreateDm = http::read_json(req).await?;
    let other = accounts::parse_user_id(&b.other)?;
    let room = ctx.core.create_dm(&caller.user, other).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "room_id": room.to_string() }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct RoomInfo {
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
pub(crate) struct Retrieve {
    after: u64,
    limit: Option<u64>,
}

/// `POST /chat/retrieve` `{"after", "limit"?}` → `{"messages":[…]}`: every
/// message after the cursor in the caller's rooms, ascending, streamed
/// once the read of any patient chat among them is recorded.
pub async fn retrieve(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let b: Retrieve = http::read_json(req).await?;
    let limit = b
        .limit
        .map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize);
    let core = ctx.core.clone();
    let read = blocking(move || core.cursor_read(&caller.user, MsgId(b.after), limit)).await?;
    let cursor = ctx.core.show(read).await?;
    let core = ctx.core.clone();
    Ok(http::stream_json(move |out| {
        if !out.write(b"{\"messages\":[") {
            return Ok(());
        }
        for (i, m) in core.messages_after(&cursor).enumerate() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialects::wire_error::check::{every_kind_is_shown, frames};
    use crate::error::Kind;
    use crate::fuzzing::strategies::{almost_valid, json_value, object_with, odd_string};
    use proptest::prelude::*;
    use serde_json::Value;

    const FIELDS: &[&str] = &[
        "auth_token",
        "room",
        "messages",
        "message",
        "other",
        "room_id",
        "after",
        "limit",
    ];

    fn check(text: &str) {
        crate::fuzzing::rooms_frame(text.as_bytes());
    }

    fn object() -> impl Strategy<Value = Value> {
        prop_oneof![4 => object_with(FIELDS), 1 => json_value()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_text_is_a_frame_or_a_clear_refusal(s in any::<String>()) {
            check(&s);
        }

        #[test]
        fn frame_and_body_shaped_json_never_panics(v in object()) {
            check(&v.to_string());
        }

        #[test]
        fn almost_valid_frames_never_panic(text in almost_valid(object())) {
            check(&text);
        }

        #[test]
        fn well_typed_frames_give_their_values(
            token in odd_string(),
            room in any::<u64>(),
            text in odd_string(),
            alias in any::<bool>(),
        ) {
            let auth = json!({ "auth_token": token });
            prop_assert_eq!(parse_auth(&auth.to_string()), Ok(token));
            let key = if alias { "message" } else { "messages" };
            let send = json!({ "room": room.to_string(), key: text });
            prop_assert_eq!(parse_send(&send.to_string()), Ok((RoomId(room), text)));
            let retrieve = json!({ "after": room, "limit": room });
            let r = http::json_object::<Retrieve>(retrieve.to_string().as_bytes()).unwrap();
            prop_assert_eq!((r.after, r.limit), (room, Some(room)));
        }
    }

    #[test]
    fn refusals_have_the_dialects_kinds() {
        assert_eq!(
            parse_auth(r#"{"auth_token":1}"#).unwrap_err().kind,
            Kind::Unauthenticated
        );
        assert_eq!(parse_auth("[]").unwrap_err().kind, Kind::Unauthenticated);
        let e = parse_send(r#"{"room":"x","messages":"hi"}"#).unwrap_err();
        assert_eq!(e.kind, Kind::NotFound);
        let e = parse_send(r#"{"room":"1"}"#).unwrap_err();
        assert_eq!(e.kind, Kind::BadRequest);
        assert!(e.message.contains("messages"), "{}", e.message);
        for deep in ["[".repeat(100_000), "{\"room\":".repeat(100_000)] {
            check(&deep);
        }
        for bad in [
            &br#"{"after":-1}"#[..],
            br#"{"after":1e400}"#,
            br#"{"after":1.5}"#,
        ] {
            let e = http::json_object::<Retrieve>(bad).err().expect("refused");
            assert_eq!(e.kind, Kind::BadRequest);
        }
    }

    #[test]
    fn every_kind_is_an_error_frame_then_a_close() {
        let shown = |out: Vec<Out>| {
            assert!(
                matches!(&out[..], [Out::Text(_), Out::Close(CloseCode::Policy, _)]),
                "a frame, then close 1008"
            );
            frames(out)
        };
        every_kind_is_shown::<Session>(|e| e, shown);
    }
}
