//! Entry points for the fuzz targets in `fuzz/` (issue 7, "bad input at
//! scale"): one per parser that meets untrusted input. Each takes raw
//! bytes, turns them into that parser's input, runs the parser, and checks
//! that the answer is a value or a clear error of the kind the dialect
//! answers with. A panic here is a finding — in the parser or in the
//! invariant.
//!
//! Not an API: hidden from the docs, and only here so the `parlor-fuzz`
//! crate (outside the workspace) can reach parsers that are otherwise
//! private to their dialect. The property tests beside each parser check
//! the same contracts, plus round trips, with structured input.

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};

use crate::core::pages::{Border, MAX_PAGE};
use crate::dialects::patient::tokens::{self, Token};
use crate::dialects::patient::{self, Fail, Patient};
use crate::dialects::wire_error::WireError;
use crate::dialects::{actions, rooms, typed};
use crate::error::{Error, Kind};
use crate::model::RoomId;
use crate::model::MAX_WORD;
use crate::net::http::json_object;
use crate::net::upgrade::{self, Refusal};

/// An error a client may be shown: of one of `kinds`, with a message.
fn clear(e: &Error, kinds: &[Kind]) {
    assert!(
        kinds.contains(&e.kind),
        "error of kind {:?} (want one of {kinds:?}): {}",
        e.kind,
        e.message
    );
    assert!(!e.message.trim().is_empty(), "an error without a message");
}

/// WebSocket text frames are UTF-8 by the time a dialect sees them
/// (tungstenite closes with 1007 otherwise).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The actions dialect's frame parser (`dialects::actions::parse`).
pub fn actions_frame(data: &[u8]) {
    match actions::parse(&text(data)) {
        Ok(frame) => {
            if let Err(e) = frame.command {
                clear(&e, &[Kind::BadRequest, Kind::NotFound]);
            }
        }
        Err(e) => clear(&e, &[Kind::BadRequest]),
    }
}

/// The typed dialect's frame parser (`dialects::typed::parse`).
pub fn typed_frame(data: &[u8]) {
    let text = text(data);
    if let Err(r) = typed::parse(&text) {
        clear(&r.error, &[Kind::BadRequest]);
        // The type it names is the frame's own `type`.
        if let Some(t) = &r.request_type {
            let frame: serde_json::Value = serde_json::from_str(&text).expect("it had a type");
            assert_eq!(frame["type"].as_str(), Some(t.as_str()));
        }
    }
}

/// The rooms dialect: its two WebSocket frames (`parse_auth` before
/// authentication, `parse_send` after) and the JSON bodies of its REST
/// endpoints (`create_dm`, `room_info`, `retrieve`), all on one input.
pub fn rooms_frame(data: &[u8]) {
    let text = text(data);
    if let Err(e) = rooms::parse_auth(&text) {
        clear(&e, &[Kind::Unauthenticated]);
    }
    if let Err(e) = rooms::parse_send(&text) {
        clear(&e, &[Kind::BadRequest, Kind::NotFound]);
    }
    body::<rooms::CreateDm>(data);
    body::<rooms::RoomInfo>(data);
    body::<rooms::Retrieve>(data);
}

/// A JSON request body (`net::http::json_object`, what `read_json` runs on
/// the bytes it read): a value or `400`.
fn body<T: serde::de::DeserializeOwned>(data: &[u8]) {
    if let Err(e) = json_object::<T>(data) {
        clear(&e, &[Kind::BadRequest]);
    }
}

/// The patient dialect's request decoding: the first byte picks the
/// method, then `path \n query \n body`. Runs every pure step its
/// handlers run — endpoint and path, query parameters, page size, flags,
/// search words, the `date` of `find`, a page token, the JSON bodies of
/// `inbound`/`outbound` and `archive` — and checks each refusal is a 400.
pub fn patient_request(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = match m % 4 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        _ => Method::DELETE,
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let path = text(parts.next().unwrap_or_default());
    let query = text(parts.next().unwrap_or_default());
    let body_bytes = parts.next().unwrap_or_default();

    let _ = patient::owns(&path);
    let _ = patient::target(&method, &path);
    let refused = |f: Fail| match f {
        Fail::Core(e) => {
            clear(&e, &[Kind::BadRequest]);
            assert_eq!(
                Patient::wire(&Fail::Core(e)).status(),
                StatusCode::BAD_REQUEST
            );
        }
        Fail::BadToken => panic!("a query alone gave INVALID_PAGE_TOKEN"),
    };
    match patient::Query::parse(Some(&query)) {
        Err(f) => refused(f),
        Ok(q) => {
            for step in [
                q.page_size().map(drop),
                q.content_page_size().map(drop),
                q.flag("includeArchived").map(drop),
                q.flag("before").map(drop),
                q.include_archived(None).map(drop),
            ] {
                if let Err(f) = step {
                    refused(f);
                }
            }
            if let Some(Err(f)) = q.get("query").map(patient::query_words) {
                refused(f);
            }
            if let Some(date) = q.get("date") {
                let _ = crate::model::time::parse_rfc3339(date);
            }
            if let Some(t) = q.token() {
                let decoded = tokens::decode(&FUZZ_KEY, t, RoomId(1), tokens::Kind::History);
                assert!(decoded.is_err(), "a forged page token verified: {t:?}");
            }
        }
    }
    body::<patient::Text>(body_bytes);
    body::<patient::ArchiveBody>(body_bytes);
}

/// The page-token key the targets use (any fixed key will do).
const FUZZ_KEY: [u8; 32] = [0x5a; 32];

/// Reads fuzz bytes as structured values; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8()))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// The patient dialect's page tokens (`dialects::patient::tokens`). The
/// first byte's low bit picks the mode: decode the rest as a token string
/// (nothing forged may verify), or build a token from the rest, check it
/// round-trips, and check that a one-character change is refused.
pub fn page_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let s = text(rest);
        for kind in [
            tokens::Kind::History,
            tokens::Kind::Search,
            tokens::Kind::Find,
        ] {
            let decoded = tokens::decode(&FUZZ_KEY, &s, RoomId(7), kind);
            assert!(decoded.is_err(), "a forged page token verified: {s:?}");
        }
        return;
    }
    let mut b = Bytes(rest);
    let token = token_from(&mut b);
    let s = tokens::encode(&FUZZ_KEY, &token);
    assert_eq!(
        tokens::decode(&FUZZ_KEY, &s, token.room, token.kind),
        Ok(token.clone()),
        "round trip of {s}"
    );
    // One character replaced by another of the alphabet (or by `=`).
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=";
    let at = usize::from(b.u8()) * 256 + usize::from(b.u8());
    let at = at % s.len();
    let mut altered = s.clone().into_bytes();
    let old = altered[at];
    let new = ALPHABET[usize::from(b.u8()) % ALPHABET.len()];
    if new != old {
        altered[at] = new;
        let altered = String::from_utf8(altered).expect("ASCII");
        assert!(
            tokens::decode(&FUZZ_KEY, &altered, token.room, token.kind).is_err(),
            "{s} altered at {at} to {altered} still verified"
        );
    }
}

/// A token as a handler might build one, from fuzz bytes.
fn token_from(b: &mut Bytes) -> Token {
    let kind = match b.u8() % 3 {
        0 => tokens::Kind::History,
        1 => tokens::Kind::Search,
        _ => tokens::Kind::Find,
    };
    let room = RoomId(b.u64());
    let id = crate::model::MsgId(b.u64());
    let border = match b.u8() % 5 {
        0 => Border::Newest,
        1 => Border::Below(id),
        2 => Border::AtOrBelow(id),
        3 => Border::Above(id),
        _ => Border::AtOrAbove(id),
    };
    let size = 1 + usize::from(b.u8()) % MAX_PAGE;
    let content_size = if kind == tokens::Kind::Search {
        1 + usize::from(b.u8()) % MAX_PAGE
    } else {
        size
    };
    let include_archived = b.u8() & 1 == 1;
    let mut query = Vec::new();
    if kind == tokens::Kind::Search {
        // What `search` can put in a token: at most `MAX_QUERY_WORDS`
        // words, none over `MAX_WORD` bytes (a longer one matches nothing).
        let n = 1 + usize::from(b.u8()) % patient::MAX_QUERY_WORDS;
        for _ in 0..n {
            let len = usize::from(b.u8()) % (MAX_WORD + 1);
            let mut w = text(b.take(len)).into_owned();
            while w.len() > MAX_WORD {
                w.pop();
            }
            if w.is_empty() {
                w.push('w');
            }
            query.push(w);
        }
    }
    Token {
        kind,
        room,
        border,
        size,
        content_size,
        include_archived,
        query,
    }
}

/// The WebSocket opening handshake (`net::upgrade::check_headers`). The
/// first byte picks the method and which of the three required headers
/// are given right (so the fuzzer gets past them); the rest is header
/// lines, `name: value`, as bytes — those hyper would refuse are dropped.
pub fn upgrade(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let method = if flags & 0x80 == 0 {
        Method::GET
    } else {
        Method::POST
    };
    let mut h = HeaderMap::new();
    for (bit, name, value) in [
        (1, "connection", "Upgrade"),
        (2, "upgrade", "websocket"),
        (4, "sec-websocket-version", "13"),
    ] {
        if flags & bit != 0 {
            h.append(name, HeaderValue::from_static(value));
        }
    }
    for line in rest.split(|&b| b == b'\n') {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    match upgrade::check_headers(&method, &h) {
        Ok(accept) => {
            assert_eq!(method, Method::GET);
            let key = h
                .get("sec-websocket-key")
                .expect("accepted without a key")
                .as_bytes()
                .trim_ascii();
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD.decode(key);
            assert_eq!(raw.map(|r| r.len()).ok(), Some(16), "accepted a bad key");
            assert_eq!(accept, upgrade::accept_key(key));
            assert_eq!(accept.len(), 28, "{accept}");
            assert!(HeaderValue::from_str(&accept).is_ok());
        }
        Err(Refusal::Bad(why)) => assert!(!why.is_empty()),
        Err(Refusal::Version) => assert_ne!(
            h.get("sec-websocket-version").map(HeaderValue::as_bytes),
            Some(&b"13"[..])
        ),
    }
}

/// Generators shared by the property tests beside each parser.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    /// Text that often looks like something: digits (some too big for any
    /// integer), signs, exponents, escapes, odd unicode (combining marks,
    /// right-to-left, zero-width, astral, the replacement character), and
    /// arbitrary strings.
    pub fn odd_string() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<String>(),
            2 => "[0-9]{0,30}",
            1 => "-?[0-9]{1,25}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?",
            1 => "[\\u{0300}\\u{202e}\\u{200b}\\u{feff}\\u{fffd}\\u{1f600}a-z%+ \\\\\"]{0,12}",
            1 => Just(String::new()),
            1 => "\\PC{0,8}",
            1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..1000).prop_map(Value::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(Value::from(u64::MAX)),
            Just(Value::from(i64::MIN)),
        ]
    }

    /// Any JSON value, nested up to 6 deep.
    pub fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            odd_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((odd_string(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// A JSON object whose keys are mostly `names` (the fields a parser
    /// looks for), with values of any type.
    pub fn object_with(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            4 => proptest::sample::select(names).prop_map(str::to_owned),
            1 => odd_string(),
        ];
        proptest::collection::vec((key, json_value()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
    }

    /// Frames of `frames`, each with one edit (`mutated`).
    pub fn almost_valid(frames: impl Strategy<Value = Value>) -> impl Strategy<Value = String> {
        frames.prop_flat_map(|v| mutated(v.to_string()))
    }

    /// `text` with one edit: a character deleted, inserted or replaced, or
    /// the text cut short — a frame that is almost valid.
    pub fn mutated(text: String) -> impl Strategy<Value = String> {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        (0..=n, 0u8..4, any::<char>()).prop_map(move |(at, op, c)| {
            let mut v = chars.clone();
            match op {
                0 if at < n => {
                    v.remove(at);
                }
                1 => v.insert(at, c),
                2 if at < n => v[at] = c,
                _ => v.truncate(at),
            }
            v.into_iter().collect()
        })
    }
}
