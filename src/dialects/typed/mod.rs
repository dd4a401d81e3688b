//! The "typed" dialect (seed 002, API.md §4): one WebSocket at `/ws`,
//! authenticated on upgrade, speaking `{"type","data"}` frames —
//! `getChats`, `createEmptyChat`, `joinChat`, `getChatDetails`,
//! `newMessage`, `getChatMessages` — with numeric ids and RFC 3339 UTC
//! times.
//!
//! Translation only: a frame is parsed into a [`Request`], run as one core
//! operation, and its result (or a hub event) rendered back. Every rule —
//! who may see, join or post, open versus closed chats, read markers,
//! time-bounded history — lives in the core. Never touches the store or
//! another dialect.
//!
//! Here: the upgrade, the session (one request at a time, one core
//! operation each) and this dialect's wire error; `parse` reads frames,
//! `render` writes them.

mod parse;
mod render;

pub(crate) use parse::{parse, Refused, Request};

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request as HttpRequest;
use serde::Serialize;

use super::wire_error::{Rest, WireError};
use super::Ctx;
use crate::core::hub::{Event, EventKind};
use crate::core::messages::PostAs;
use crate::core::{blocking, Caller, Core};
use crate::error::{Error, Kind, Result};
use crate::model::RoomId;
use crate::net::http::{self, Resp};
use crate::net::ws::{self, Dialect, Out};
use parse::{request_name, today_utc, window};
use render::{frame, Joined, Msg, Names, Person};

/// `GET /ws` — WebSocket; authenticated on upgrade by `Authorization:
/// Bearer <token>` or `?token=<token>`, else `401 UNAUTHENTICATED` and no
/// upgrade. (The token and the query string are never logged.)
pub fn connect(ctx: Ctx, req: HttpRequest<Incoming>) -> Result<Resp> {
    let token = match http::bearer(&req) {
        Some(t) => t.to_owned(),
        None => query_token(req.uri().query()).ok_or_else(Error::unauthenticated)?,
    };
    let (caller, sub) = ctx.core.open_session(&token)?;
    Ok(super::upgrade(ctx.conn.guard.clone(), req, move |socket| {
        let session = Session {
            core: ctx.core.clone(),
            caller,
            own_joins: HashMap::new(),
            span_has_user: false,
        };
        ws::run(
            "typed",
            ctx.core,
            socket,
            session,
            Some(sub),
            ctx.conn.shutdown,
        )
    }))
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let decoded = http::percent_decode(value, false)?;
    (!decoded.is_empty()).then_some(decoded)
}

// ---------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------

struct Session {
    core: Arc<Core>,
    caller: Caller,
    /// Joins this connection made whose hub event has not come back yet:
    /// the joiner already got `chatJoined` as the reply, so the echo of its
    /// own join is skipped here (its other connections still show it).
    own_joins: HashMap<RoomId, u32>,
    span_has_user: bool,
}

impl Session {
    fn note_user(&mut self) {
        if !self.span_has_user {
            tracing::Span::current().record("user", self.caller.user.id.0);
            self.span_has_user = true;
        }
    }

    /// Runs one request; `None` when the answer comes as a hub event
    /// (`newMessage`: every participant's connections, this one included,
    /// get `messageCreated`).
    async fn handle(&mut self, req: Request) -> Result<Option<String>> {
        let user = &self.caller.user;
        match req {
            Request::GetChats => {
                let (core, user) = (self.core.clone(), user.clone());
                let chats = blocking(move || {
                    let mut names = Names::new(&core);
                    let mut chats = Vec::new();
                    for room in core.rooms_of(&user)? {
                        chats.push(names.chat(&core.room_info(&user, room)?));
                    }
                    Ok::<_, Error>(chats)
                })
                .await?;
                Ok(Some(frame("chatsList", &chats)))
            }
            Request::CreateEmptyChat => {
                let info = self.core.create_open_room(user).await?;
                let chat = Names::new(&self.core).chat(&info);
                Ok(Some(frame("emptyChatCreated", &chat)))
            }
            Request::JoinChat { chat, last_read } => {
                self.core.join(user, chat, last_read).await?;
                *self.own_joins.entry(chat).or_default() += 1;
                let joined = Joined {
                    chat: chat.0,
                    user: Names::new(&self.core).person(user.id),
                    last_read_message: last_read.map(|m| m.0),
                };
                Ok(Some(frame("chatJoined", &joined)))
            }
            Request::GetChatDetails { chat } => {
                let info = self.core.visible_room_info(user, chat)?;
                let chat = Names::new(&self.core).chat(&info);
                Ok(Some(frame("chatDetails", &chat)))
            }
            Request::NewMessage {
                chat,
                text,
                is_read,
            } => {
                let how = PostAs {
                    is_read,
                    on_behalf_of: None,
                };
                self.core.post(user, chat, text, how).await?;
                Ok(None)
            }
            Request::GetChatMessages {
                chat,
                from,
                to,
                last,
            } => {
                let w = window(from, to, last, today_utc());
                let (core, user) = (self.core.clone(), user.clone());
                let read = blocking(move || {
                    let history = core.room_history(&user, chat, w)?;
                    let participants = core.room_info(&user, chat)?.participants;
                    let mut names = Names::new(&core);
                    Ok::<_, Error>(history.map(|history| {
                        let list: Vec<Msg> = history
                            .iter()
                            .map(|m| names.message(m, &participants))
                            .collect();
                        Some(frame("chatMessages", &list))
                    }))
                })
                .await?;
                self.core.show(read).await
            }
        }
    }
}

impl Dialect for Session {
    const SLOT: usize = super::slot::TYPED;

    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        self.note_user();
        let (request_type, req) = match parse(text) {
            Ok(req) => (request_name(&req), req),
            Err(r) => {
                tracing::debug!(error = %r.error, "refused a frame");
                return Self::wire(&r);
            }
        };
        match self.handle(req).await {
            Ok(Some(reply)) => vec![Out::Text(reply)],
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!(error = %e, request_type, "request refused");
                Self::wire(&Refused {
                    request_type: Some(request_type.into()),
                    error: e,
                })
            }
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Vec<Out> {
        Self::wire(&Refused {
            request_type: None,
            error: Error::bad_request("binary frames are not understood; send JSON text"),
        })
    }

    /// The echo of a join this connection made is skipped: it got
    /// `chatJoined` as the reply (its other connections still show it).
    fn shows(&mut self, ev: &Event) -> bool {
        self.note_user();
        let EventKind::Joined { user, .. } = &ev.kind else {
            return true;
        };
        if *user != self.caller.user.id {
            return true;
        }
        let Some(n) = self.own_joins.get_mut(&ev.room) else {
            return true;
        };
        *n -= 1;
        if *n == 0 {
            self.own_joins.remove(&ev.room);
        }
        false
    }

    fn render(ev: &Event) -> Option<String> {
        match &ev.kind {
            // A new message has no reader past it yet: its flag is as sent.
            EventKind::Message {
                msg, sender_name, ..
            } => {
                let sender = Person {
                    id: msg.sender.0,
                    username: sender_name.clone(),
                };
                Some(frame("messageCreated", &Msg::new(msg, sender, &[])))
            }
            EventKind::Joined {
                user,
                username,
                last_read,
            } => {
                let joined = Joined {
                    chat: ev.room.0,
                    user: Person {
                        id: user.0,
                        username: username.clone(),
                    },
                    last_read_message: last_read.map(|m| m.0),
                };
                Some(frame("chatJoined", &joined))
            }
            // The seed has no read notification.
            EventKind::Read { .. } => None,
        }
    }
}

/// This dialect's wire error: `{"type":"error","data":{"code","message",
/// "request_type"}}`, `request_type` null when the frame named no type;
/// the socket stays open. The codes are API.md §1's, but a wrong password
/// or token is `UNAUTHENTICATED` either way.
impl WireError for Session {
    type Fail = Refused;
    type Wire = Vec<Out>;

    fn code(kind: Kind) -> &'static str {
        match kind {
            Kind::InvalidCredentials => Rest::code(Kind::Unauthenticated),
            kind => Rest::code(kind),
        }
    }

    fn wire(r: &Refused) -> Vec<Out> {
        #[derive(Serialize)]
        struct ErrorData<'a> {
            code: &'static str,
            message: &'a str,
            request_type: Option<&'a str>,
        }
        let data = ErrorData {
            code: Self::code(r.error.kind),
            message: &r.error.message,
            request_type: r.request_type.as_deref(),
        };
        vec![Out::Text(frame("error", &data))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialects::wire_error::check::{every_kind_is_shown, frames};

    #[test]
    fn query_token_is_found_and_percent_decoded() {
        assert_eq!(query_token(Some("token=abc")), Some("abc".into()));
        assert_eq!(query_token(Some("x=1&token=a%2Db")), Some("a-b".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(Some("tokens=abc")), None);
        assert_eq!(query_token(Some("token=%zz")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn every_kind_is_an_error_frame_naming_the_request() {
        let refused = |error| Refused {
            request_type: Some("getChats".into()),
            error,
        };
        let shown = |out| {
            let text = frames(out);
            let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON frame");
            assert_eq!(v["type"], "error", "{text}");
            assert_eq!(v["data"]["request_type"], "getChats", "{text}");
            text
        };
        every_kind_is_shown::<Session>(refused, shown);
        assert_eq!(Session::code(Kind::InvalidCredentials), "UNAUTHENTICATED");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn query_tokens_percent_decode_what_was_encoded(token in "\\PC{1,40}") {
            let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(query_token(Some(&format!("a=1&token={encoded}"))), Some(token));
        }

        #[test]
        fn a_percent_without_two_hex_digits_is_refused(
            bad in "%([^0-9A-Fa-f].|.[^0-9A-Fa-f]|.?)",
            tail in "[g-z]{0,3}",
        ) {
            prop_assert_eq!(http::percent_decode(&format!("{bad}{tail}"), false), None);
        }
    }

    /// Found by `a_percent_without_two_hex_digits_is_refused`:
    /// `u8::from_str_radix` takes a leading `+`, so `?token=%+a` was read
    /// as a newline instead of being refused.
    #[test]
    fn percent_sign_escape_bug_plus_is_not_a_hex_digit() {
        assert_eq!(query_token(Some("token=%+a")), None);
        assert_eq!(query_token(Some("token=a%0a")), Some("a\n".into()));
    }
}
