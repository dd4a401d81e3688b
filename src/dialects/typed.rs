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

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request as HttpRequest;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Ctx;
use crate::core::hub::{Event, EventKind};
use crate::core::messages::{PostAs, Window};
use crate::core::rooms::RoomInfo;
use crate::core::{blocking, Caller, Core};
use crate::error::{Error, Kind, Result};
use crate::model::time::{parse_day, rfc3339, DAY_MS};
use crate::model::{Message, MsgId, Participant, RoomId, UserId};
use crate::net::http::{self, Resp};
use crate::net::ws::{self, Dialect, Out};

/// `GET /ws` — WebSocket; authenticated on upgrade by `Authorization:
/// Bearer <token>` or `?token=<token>`, else `401 UNAUTHENTICATED` and no
/// upgrade. (The token and the query string are never logged.)
pub fn connect(ctx: Ctx, req: HttpRequest<Incoming>) -> Result<Resp> {
    let token = match http::bearer(&req) {
        Some(t) => t.to_owned(),
        None => query_token(req.uri().query()).ok_or_else(Error::unauthenticated)?,
    };
    let (caller, sub) = ctx.core.open_session(&token)?;
    Ok(crate::net::upgrade::upgrade(
        ctx.conn.guard.clone(),
        req,
        move |socket| {
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
        },
    ))
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
// Requests: parsing, no I/O
// ---------------------------------------------------------------------------

/// One parsed request frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    GetChats,
    CreateEmptyChat,
    JoinChat {
        chat: RoomId,
        last_read: Option<MsgId>,
    },
    GetChatDetails {
        chat: RoomId,
    },
    NewMessage {
        chat: RoomId,
        text: String,
        is_read: bool,
    },
    GetChatMessages {
        chat: RoomId,
        from: Option<DayFrom>,
        to: Option<i64>,
        last: Option<usize>,
    },
}

/// `date_from`: a day (days since 1970-01-01, UTC) or a named range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum DayFrom {
    Day(i64),
    /// Yesterday only.
    Yesterday,
    /// The day before yesterday only.
    DayBeforeYesterday,
    /// Today and the six days before.
    Last7Days,
}

/// A frame that could not be parsed: the `type` it asked for, if any.
pub(crate) struct Refused {
    pub(crate) request_type: Option<String>,
    pub(crate) error: Error,
}

pub(crate) fn parse(text: &str) -> std::result::Result<Request, Refused> {
    let refuse = |request_type: Option<String>, error: Error| Refused {
        request_type,
        error,
    };
    let frame: Value = serde_json::from_str(text)
        .map_err(|_| refuse(None, Error::bad_request("the frame is not JSON")))?;
    let Some(frame) = frame.as_object() else {
        return Err(refuse(None, Error::bad_request("expected a JSON object")));
    };
    let Some(kind) = frame.get("type").and_then(Value::as_str) else {
        return Err(refuse(
            None,
            Error::bad_request("`type` is required and must be a string"),
        ));
    };
    let empty = Map::new();
    let data = match frame.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(refuse(
                Some(kind.into()),
                Error::bad_request("`data` must be an object"),
            ))
        }
    };
    parse_data(kind, data).map_err(|e| refuse(Some(kind.into()), e))
}

fn parse_data(kind: &str, d: &Map<String, Value>) -> Result<Request> {
    Ok(match kind {
        "getChats" => Request::GetChats,
        "createEmptyChat" => Request::CreateEmptyChat,
        "joinChat" => Request::JoinChat {
            chat: RoomId(required(d, "chat", "chatId", id)?),
            last_read: optional(d, "last_read_message", id)?.map(MsgId),
        },
        "getChatDetails" => Request::GetChatDetails {
            chat: RoomId(required(d, "chatId", "chat", id)?),
        },
        "newMessage" => Request::NewMessage {
            chat: RoomId(required(d, "chat", "chatId", id)?),
            text: required(d, "text", "text", |v| {
                v.as_str().map(str::to_owned).ok_or("a string")
            })?,
            is_read: optional(d, "is_read", |v| v.as_bool().ok_or("true or false"))?
                .unwrap_or(false),
        },
        "getChatMessages" => Request::GetChatMessages {
            chat: RoomId(required(d, "chatId", "chat", id)?),
            from: optional(d, "date_from", |v| {
                v.as_str().and_then(parse_date_from).ok_or(
                    "a date YYYY-MM-DD, \"yesterday\", \"day_before_yesterday\" or \"last_7_days\"",
                )
            })?,
            to: optional(d, "date_to", |v| {
                v.as_str().and_then(parse_day).ok_or("a date YYYY-MM-DD")
            })?,
            last: optional(d, "last", |v| {
                v.as_u64()
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                    .ok_or("a non-negative integer")
            })?,
        },
        other => {
            return Err(Error::bad_request(format!(
                "unknown request type {other:?}; expected getChats, createEmptyChat, \
                 joinChat, getChatDetails, newMessage or getChatMessages"
            )))
        }
    })
}

fn id(v: &Value) -> std::result::Result<u64, &'static str> {
    v.as_u64().ok_or("a non-negative integer id")
}

/// A field that may be absent (or null); when present it must convert.
fn optional<T>(
    d: &Map<String, Value>,
    name: &str,
    convert: impl Fn(&Value) -> std::result::Result<T, &'static str>,
) -> Result<Option<T>> {
    match d.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => convert(v)
            .map(Some)
            .map_err(|want| Error::bad_request(format!("data.{name} must be {want}"))),
    }
}

/// A required field, named as the seed names it; `alias` is the other
/// spelling the seed uses for a chat id (`chat` / `chatId`), also taken.
fn required<T>(
    d: &Map<String, Value>,
    name: &str,
    alias: &str,
    convert: impl Fn(&Value) -> std::result::Result<T, &'static str>,
) -> Result<T> {
    let field = if matches!(d.get(name), None | Some(Value::Null)) {
        alias
    } else {
        name
    };
    optional(d, field, &convert)?
        .ok_or_else(|| Error::bad_request(format!("data.{name} is required")))
}

fn parse_date_from(s: &str) -> Option<DayFrom> {
    match s {
        "yesterday" => Some(DayFrom::Yesterday),
        "day_before_yesterday" => Some(DayFrom::DayBeforeYesterday),
        "last_7_days" => Some(DayFrom::Last7Days),
        _ => parse_day(s).map(DayFrom::Day),
    }
}

/// The history window of a `getChatMessages`, `today` being the current
/// UTC day. Days are whole UTC days; `to` is inclusive. A `to` before the
/// start gives an empty window (not an error).
fn window(from: Option<DayFrom>, to: Option<i64>, last: Option<usize>, today: i64) -> Window {
    let (start, end) = match from {
        None => (None, None),
        Some(DayFrom::Day(d)) => (Some(d), None),
        Some(DayFrom::Yesterday) => (Some(today - 1), Some(today)),
        Some(DayFrom::DayBeforeYesterday) => (Some(today - 2), Some(today - 1)),
        Some(DayFrom::Last7Days) => (Some(today - 6), None),
    };
    let end = match (end, to) {
        (Some(e), Some(t)) => Some(e.min(t + 1)),
        (e, t) => e.or(t.map(|t| t + 1)),
    };
    let ms = |day: i64| day.saturating_mul(DAY_MS).max(0) as u64;
    Window {
        from_ms: start.map(ms),
        until_ms: end.map(ms),
        last,
    }
}

// ---------------------------------------------------------------------------
// Times: RFC 3339 out, YYYY-MM-DD in (the calendar is `dialects::time`)
// ---------------------------------------------------------------------------

fn today_utc() -> i64 {
    (crate::core::commit::unix_ms() / DAY_MS as u64) as i64
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Person {
    id: u64,
    username: String,
}

#[derive(Serialize)]
struct Chat {
    id: u64,
    participants: Vec<Person>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct Msg<'a> {
    id: u64,
    chat: u64,
    sender: Person,
    text: &'a str,
    timestamp: String,
    is_read: bool,
}

impl<'m> Msg<'m> {
    fn new(m: &'m Message, sender: Person, participants: &[(UserId, Participant)]) -> Msg<'m> {
        Msg {
            id: m.id.0,
            chat: m.room.0,
            sender,
            text: &m.text,
            timestamp: rfc3339(m.at_ms),
            is_read: m.read_by_other(participants),
        }
    }
}

#[derive(Serialize)]
struct Joined {
    chat: u64,
    user: Person,
    /// Present only when the join gave one (the seed: "if specified").
    #[serde(skip_serializing_if = "Option::is_none")]
    last_read_message: Option<u64>,
}

/// `{"type","data"}`, in the seed's key order.
fn frame<T: Serialize + ?Sized>(kind: &str, data: &T) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T: ?Sized> {
        r#type: &'a str,
        data: &'a T,
    }
    serde_json::to_string(&Frame { r#type: kind, data }).expect("serializing a reply")
}

/// This dialect's error codes: API.md §1's, chosen here so that the wire
/// contract does not move if the core's kinds do.
fn code(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest => "BAD_REQUEST",
        Kind::InvalidCredentials | Kind::Unauthenticated => "UNAUTHENTICATED",
        Kind::Forbidden => "FORBIDDEN",
        Kind::NotFound => "NOT_FOUND",
        Kind::Conflict => "CONFLICT",
        Kind::TooLarge => "TOO_LARGE",
        Kind::RateLimited => "RATE_LIMITED",
        Kind::Unavailable => "UNAVAILABLE",
        Kind::Internal => "INTERNAL",
    }
}

/// `{"type":"error","data":{"code","message","request_type"}}`;
/// `request_type` is null when the frame named no type.
fn error_frame(request_type: Option<&str>, e: &Error) -> String {
    #[derive(Serialize)]
    struct ErrorData<'a> {
        code: &'static str,
        message: &'a str,
        request_type: Option<&'a str>,
    }
    let data = ErrorData {
        code: code(e.kind),
        message: &e.message,
        request_type,
    };
    frame("error", &data)
}

/// Usernames by id, looked up once per request.
struct Names<'a> {
    core: &'a Core,
    known: HashMap<UserId, String>,
}

impl<'a> Names<'a> {
    fn new(core: &'a Core) -> Self {
        Names {
            core,
            known: HashMap::new(),
        }
    }

    fn person(&mut self, id: UserId) -> Person {
        let core = self.core;
        let username = self
            .known
            .entry(id)
            .or_insert_with(|| match core.user(id) {
                Ok(Some(u)) => u.username,
                Ok(None) => String::new(),
                Err(e) => {
                    tracing::warn!(error = %e, user = id.0, "username lookup failed");
                    String::new()
                }
            })
            .clone();
        Person { id: id.0, username }
    }

    fn chat(&mut self, info: &RoomInfo) -> Chat {
        Chat {
            id: info.room.id.0,
            participants: info
                .participants
                .iter()
                .map(|(u, _)| self.person(*u))
                .collect(),
            created_at: rfc3339(info.room.created_ms),
            updated_at: rfc3339(info.updated_ms),
        }
    }

    fn message<'m>(&mut self, m: &'m Message, participants: &[(UserId, Participant)]) -> Msg<'m> {
        Msg::new(m, self.person(m.sender), participants)
    }
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
                return vec![Out::Text(error_frame(r.request_type.as_deref(), &r.error))];
            }
        };
        match self.handle(req).await {
            Ok(Some(reply)) => vec![Out::Text(reply)],
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!(error = %e, request_type, "request refused");
                vec![Out::Text(error_frame(Some(request_type), &e))]
            }
        }
    }

    fn on_binary(&mut self, _data: &[u8]) -> Vec<Out> {
        let e = Error::bad_request("binary frames are not understood; send JSON text");
        vec![Out::Text(error_frame(None, &e))]
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

fn request_name(req: &Request) -> &'static str {
    match req {
        Request::GetChats => "getChats",
        Request::CreateEmptyChat => "createEmptyChat",
        Request::JoinChat { .. } => "joinChat",
        Request::GetChatDetails { .. } => "getChatDetails",
        Request::NewMessage { .. } => "newMessage",
        Request::GetChatMessages { .. } => "getChatMessages",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ranges_are_whole_utc_days() {
        let today = 20_000;
        let at = |d: i64| (d * DAY_MS) as u64;
        let w = window(Some(DayFrom::Yesterday), None, None, today);
        assert_eq!(
            (w.from_ms, w.until_ms),
            (Some(at(today - 1)), Some(at(today)))
        );
        let w = window(Some(DayFrom::DayBeforeYesterday), None, None, today);
        assert_eq!(
            (w.from_ms, w.until_ms),
            (Some(at(today - 2)), Some(at(today - 1)))
        );
        let w = window(Some(DayFrom::Last7Days), None, Some(3), today);
        assert_eq!(
            (w.from_ms, w.until_ms, w.last),
            (Some(at(today - 6)), None, Some(3))
        );
        // date_to is inclusive, and narrows a named range.
        let w = window(Some(DayFrom::Day(10)), Some(12), None, today);
        assert_eq!((w.from_ms, w.until_ms), (Some(at(10)), Some(at(13))));
        let w = window(Some(DayFrom::Last7Days), Some(today - 3), None, today);
        assert_eq!(w.until_ms, Some(at(today - 2)));
        let w = window(None, Some(5), None, today);
        assert_eq!((w.from_ms, w.until_ms), (None, Some(at(6))));
        // Days before 1970 clamp to the epoch rather than wrapping.
        let w = window(Some(DayFrom::Day(-5)), None, None, today);
        assert_eq!(w.from_ms, Some(0));
    }

    fn refused(text: &str) -> (Option<String>, String) {
        match parse(text) {
            Ok(r) => panic!("parsed {text} as {r:?}"),
            Err(r) => (r.request_type, r.error.message),
        }
    }

    #[test]
    fn parse_reads_every_type_and_the_seeds_two_spellings_of_a_chat_id() {
        assert_eq!(
            parse(r#"{"type":"getChats"}"#).ok(),
            Some(Request::GetChats)
        );
        assert_eq!(
            parse(r#"{"type":"createEmptyChat","data":{}}"#).ok(),
            Some(Request::CreateEmptyChat)
        );
        assert_eq!(
            parse(r#"{"type":"joinChat","data":{"chat":3,"last_read_message":9}}"#).ok(),
            Some(Request::JoinChat {
                chat: RoomId(3),
                last_read: Some(MsgId(9))
            })
        );
        assert_eq!(
            parse(r#"{"type":"getChatDetails","data":{"chat":4}}"#).ok(),
            Some(Request::GetChatDetails { chat: RoomId(4) })
        );
        assert_eq!(
            parse(r#"{"type":"newMessage","data":{"chat":1,"text":"hi"}}"#).ok(),
            Some(Request::NewMessage {
                chat: RoomId(1),
                text: "hi".into(),
                is_read: false
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"getChatMessages","data":{"chatId":1,"date_from":"last_7_days","date_to":"1970-01-03","last":2}}"#
            )
            .ok(),
            Some(Request::GetChatMessages {
                chat: RoomId(1),
                from: Some(DayFrom::Last7Days),
                to: Some(2),
                last: Some(2)
            })
        );
    }

    #[test]
    fn parse_errors_name_the_field_and_keep_the_type() {
        let (t, m) =
            refused(r#"{"type":"getChatMessages","data":{"chatId":1,"date_from":"soon"}}"#);
        assert_eq!(t.as_deref(), Some("getChatMessages"));
        assert!(m.contains("date_from"), "{m}");
        let (_, m) =
            refused(r#"{"type":"getChatMessages","data":{"chatId":1,"date_to":"yesterday"}}"#);
        assert!(m.contains("date_to"), "{m}");
        let (_, m) = refused(r#"{"type":"getChatMessages","data":{"chatId":1,"last":-1}}"#);
        assert!(m.contains("last"), "{m}");
        let (_, m) = refused(r#"{"type":"newMessage","data":{"chat":"1","text":"x"}}"#);
        assert!(m.contains("data.chat"), "{m}");
        let (_, m) = refused(r#"{"type":"newMessage","data":{"chat":1}}"#);
        assert!(m.contains("data.text is required"), "{m}");
        let (_, m) = refused(r#"{"type":"newMessage","data":{"chat":1,"text":"x","is_read":1}}"#);
        assert!(m.contains("is_read"), "{m}");
        let (t, _) = refused(r#"{"type":"fly"}"#);
        assert_eq!(t.as_deref(), Some("fly"));
        assert_eq!(refused("not json").0, None);
        assert_eq!(refused(r#"["getChats"]"#).0, None);
        assert_eq!(refused(r#"{"data":{}}"#).0, None);
        assert_eq!(
            refused(r#"{"type":"getChats","data":[]}"#).0.as_deref(),
            Some("getChats")
        );
    }

    #[test]
    fn query_token_is_found_and_percent_decoded() {
        assert_eq!(query_token(Some("token=abc")), Some("abc".into()));
        assert_eq!(query_token(Some("x=1&token=a%2Db")), Some("a-b".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(Some("tokens=abc")), None);
        assert_eq!(query_token(Some("token=%zz")), None);
        assert_eq!(query_token(None), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::fuzzing::strategies::{json_value, mutated, object_with, odd_string};
    use crate::model::time::civil_from_days;
    use proptest::prelude::*;
    use serde_json::json;

    const TYPES: &[&str] = &[
        "getChats",
        "createEmptyChat",
        "joinChat",
        "getChatDetails",
        "newMessage",
        "getChatMessages",
    ];
    const DATA_FIELDS: &[&str] = &[
        "chat",
        "chatId",
        "text",
        "is_read",
        "last_read_message",
        "date_from",
        "date_to",
        "last",
    ];

    /// `{"type","data"}` with a known type (usually) and data fields of
    /// any types — or `data` itself of any type.
    fn frame_like() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                4 => proptest::sample::select(TYPES).prop_map(Value::from),
                1 => json_value(),
            ],
            prop_oneof![4 => object_with(DATA_FIELDS), 1 => json_value()],
        )
            .prop_map(|(t, data)| json!({ "type": t, "data": data }))
    }

    fn check(text: &str) {
        crate::fuzzing::typed_frame(text.as_bytes());
    }

    /// `YYYY-MM-DD` of a day in years 0000..=9999, and the day.
    fn day() -> impl Strategy<Value = (String, i64)> {
        (-719_528i64..2_932_897).prop_map(|d| {
            let (y, m, dd) = civil_from_days(d);
            (format!("{y:04}-{m:02}-{dd:02}"), d)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_text_parses_or_is_a_bad_request(s in any::<String>()) {
            check(&s);
        }

        #[test]
        fn frame_shaped_json_parses_or_names_its_type(v in frame_like()) {
            let text = v.to_string();
            check(&text);
            if let Err(r) = parse(&text) {
                prop_assert_eq!(r.request_type.as_deref(), v["type"].as_str());
                prop_assert!(!r.error.message.is_empty());
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
            text in odd_string(),
            is_read in any::<bool>(),
            last in any::<u64>(),
            (from, from_day) in day(),
            (to, to_day) in day(),
            alias in any::<bool>(),
        ) {
            let key = if alias { "chatId" } else { "chat" };
            let m = json!({"type": "newMessage", "data": {key: chat, "text": text, "is_read": is_read}});
            prop_assert_eq!(
                parse(&m.to_string()).ok(),
                Some(Request::NewMessage { chat: RoomId(chat), text: text.clone(), is_read })
            );
            let h = json!({"type": "getChatMessages",
                           "data": {key: chat, "date_from": from, "date_to": to, "last": last}});
            prop_assert_eq!(
                parse(&h.to_string()).ok(),
                Some(Request::GetChatMessages {
                    chat: RoomId(chat),
                    from: Some(DayFrom::Day(from_day)),
                    to: Some(to_day),
                    last: Some(usize::try_from(last).unwrap_or(usize::MAX)),
                })
            );
            // Any window of them is well formed, whatever the days.
            let w = window(Some(DayFrom::Day(from_day)), Some(to_day), None, to_day);
            prop_assert!(w.from_ms.is_some() && w.until_ms.is_some());
        }

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

    #[test]
    fn deep_nesting_is_a_bad_request_not_a_stack_overflow() {
        for n in [127, 128, 129, 10_000, 200_000] {
            check(&"[".repeat(n));
            let deep = format!(
                "{{\"type\":\"newMessage\",\"data\":{{\"chat\":1,\"text\":{}\"x\"{}}}}}",
                "[".repeat(n),
                "]".repeat(n)
            );
            check(&deep);
        }
    }
}
