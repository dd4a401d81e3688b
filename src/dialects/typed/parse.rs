//! The typed dialect's request frames, parsed: `{"type","data"}` into a
//! [`Request`], or the error and the `type` it named. Pure: no I/O. Also
//! the history window a `getChatMessages` asks for (whole UTC days).

use serde_json::{Map, Value};

use crate::core::messages::Window;
use crate::error::{Error, Result};
use crate::model::time::{parse_day, DAY_MS};
use crate::model::{MsgId, RoomId};

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
pub(super) fn window(
    from: Option<DayFrom>,
    to: Option<i64>,
    last: Option<usize>,
    today: i64,
) -> Window {
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

/// The current UTC day (days since 1970-01-01): `window`'s `today`.
pub(super) fn today_utc() -> i64 {
    (crate::core::commit::unix_ms() / DAY_MS as u64) as i64
}

/// The `type` that asked for `req`.
pub(super) fn request_name(req: &Request) -> &'static str {
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
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::fuzzing::strategies::{almost_valid, json_value, object_with, odd_string};
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
        fn almost_valid_frames_never_panic(text in almost_valid(frame_like())) {
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
