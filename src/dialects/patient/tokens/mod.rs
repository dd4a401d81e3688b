//! Page tokens of the patient dialect: a small binary record, authenticated
//! with HMAC-SHA256 under the server's page-token key, in URL-safe base64
//! (no padding; padding is accepted on the way back in).
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! version 1 | kind 1 | room 8 | border tag 1 | border id 8 | page size 1
//! | content size 1 | flags 1 | word count 1 | (word length 1, word bytes)*
//! | HMAC 32
//! ```
//!
//! `content size` (version 2) is a search token's `contentPageSize`: the
//! page size its hits' own tokens carry. Version 1 tokens, written before
//! it existed, have no such byte and are still read: their content size
//! is their page size, as their hits' tokens had then.
//!
//! The HMAC covers a domain label and every byte before it. A token names
//! the chat (room) it was issued for and the endpoint kind that reads it;
//! `decode` refuses one of another chat or kind exactly as it refuses a
//! forged or damaged one — the caller cannot tell which, and gets no data.
//! Tokens do not expire: they hold an id border, which stays meaningful.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::core::pages::{Border, MAX_PAGE};
use crate::model::{MsgId, RoomId};

/// Which endpoint reads the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET …/chat`
    History = 1,
    /// `GET …/chat/search`
    Search = 2,
    /// `GET …/chat/find`
    Find = 3,
}

/// What a token carries: where the next page starts and how it is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub room: RoomId,
    pub border: Border,
    /// 1..=`MAX_PAGE`.
    pub size: usize,
    /// 1..=`MAX_PAGE`: for a search token, the page size of its hits'
    /// tokens (`contentPageSize`); the same as `size` for the other kinds.
    pub content_size: usize,
    pub include_archived: bool,
    /// The search words (`model::words` of the query); empty for
    /// the other kinds.
    pub query: Vec<String>,
}

/// Why a token was refused; never more specific than this on the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

const VERSION: u8 = 2;
/// Tokens without the content size byte, still accepted.
const VERSION_1: u8 = 1;
const MAC_LEN: usize = 32;
/// Bytes before the words: version, kind, room, border, size, content
/// size, flags, count.
const FIXED: usize = 1 + 1 + 8 + 1 + 8 + 1 + 1 + 1 + 1;
/// The same for a version 1 token (no content size): the shortest payload.
const FIXED_V1: usize = FIXED - 1;
/// Longer strings are refused before any decoding work.
const MAX_ENCODED: usize = 4096;
/// Keeps tokens of different purposes (or versions) from ever verifying
/// as each other under the same key.
const DOMAIN: &[u8] = b"parlor patient page token v1\0";

const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn mac(key: &[u8; 32], payload: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(DOMAIN);
    m.update(payload);
    m
}

fn border_parts(b: Border) -> (u8, u64) {
    match b {
        Border::Newest => (0, 0),
        Border::Below(x) => (1, x.0),
        Border::AtOrBelow(x) => (2, x.0),
        Border::Above(x) => (3, x.0),
        Border::AtOrAbove(x) => (4, x.0),
    }
}

fn border_from(tag: u8, id: u64) -> Option<Border> {
    Some(match (tag, id) {
        (0, 0) => Border::Newest,
        (1, x) => Border::Below(MsgId(x)),
        (2, x) => Border::AtOrBelow(MsgId(x)),
        (3, x) => Border::Above(MsgId(x)),
        (4, x) => Border::AtOrAbove(MsgId(x)),
        _ => return None,
    })
}

/// The opaque string for `t`. Panics only on a token no handler builds
/// (size out of range, over 255 words or a word over 255 bytes).
pub fn encode(key: &[u8; 32], t: &Token) -> String {
    assert!((1..=MAX_PAGE).contains(&t.size), "page size {}", t.size);
    assert!(
        (1..=MAX_PAGE).contains(&t.content_size),
        "content page size {}",
        t.content_size
    );
    let (tag, id) = border_parts(t.border);
    let mut p = Vec::with_capacity(FIXED + MAC_LEN + 16 * t.query.len());
    p.push(VERSION);
    p.push(t.kind as u8);
    p.extend_from_slice(&t.room.0.to_be_bytes());
    p.push(tag);
    p.extend_from_slice(&id.to_be_bytes());
    p.push(t.size as u8);
    p.push(t.content_size as u8);
    p.push(u8::from(t.include_archived));
    p.push(u8::try_from(t.query.len()).expect("at most 255 words"));
    for w in &t.query {
        p.push(u8::try_from(w.len()).expect("a word of at most 255 bytes"));
        p.extend_from_slice(w.as_bytes());
    }
    let tag = mac(key, &p).finalize().into_bytes();
    p.extend_from_slice(&tag);
    B64.encode(p)
}

/// The token `s`, if it was made by `encode` under `key` for chat `room`
/// and endpoint `kind`, and nothing was changed.
pub fn decode(key: &[u8; 32], s: &str, room: RoomId, kind: Kind) -> Result<Token, Invalid> {
    decode_any(key, s, room, &[kind])
}

/// Like [`decode`], for an endpoint that reads tokens of any of `kinds`
/// (the history endpoint also opens a search hit's find tokens).
pub fn decode_any(key: &[u8; 32], s: &str, room: RoomId, kinds: &[Kind]) -> Result<Token, Invalid> {
    if s.len() > MAX_ENCODED {
        return Err(Invalid);
    }
    let bytes = B64.decode(s).map_err(|_| Invalid)?;
    if bytes.len() < FIXED_V1 + MAC_LEN {
        return Err(Invalid);
    }
    let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    // Constant-time comparison, before anything is read from the payload.
    mac(key, payload).verify_slice(tag).map_err(|_| Invalid)?;
    let t = parse(payload).ok_or(Invalid)?;
    if t.room != room || !kinds.contains(&t.kind) {
        return Err(Invalid);
    }
    Ok(t)
}

/// The fields of an authenticated payload; `None` if it is not one that
/// `encode` writes (so a key leak cannot smuggle odd values in either).
fn parse(p: &[u8]) -> Option<Token> {
    let mut r = Reader(p);
    let version = r.u8()?;
    if version != VERSION && version != VERSION_1 {
        return None;
    }
    let kind = match r.u8()? {
        1 => Kind::History,
        2 => Kind::Search,
        3 => Kind::Find,
        _ => return None,
    };
    let room = RoomId(r.u64()?);
    let (tag, id) = (r.u8()?, r.u64()?);
    let border = border_from(tag, id)?;
    let size = usize::from(r.u8()?);
    let content_size = if version == VERSION_1 {
        size
    } else {
        usize::from(r.u8()?)
    };
    if !(1..=MAX_PAGE).contains(&size) || !(1..=MAX_PAGE).contains(&content_size) {
        return None;
    }
    let include_archived = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let n = r.u8()?;
    let mut query = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = usize::from(r.u8()?);
        let w = std::str::from_utf8(r.take(len)?).ok()?;
        if w.is_empty() {
            return None;
        }
        query.push(w.to_owned());
    }
    if !r.0.is_empty() || (kind == Kind::Search) == query.is_empty() {
        return None;
    }
    Some(Token {
        kind,
        room,
        border,
        size,
        content_size,
        include_archived,
        query,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    const KEY: [u8; 32] = [7; 32];
    const ROOM: RoomId = RoomId(42);

    fn search_token() -> Token {
        Token {
            kind: Kind::Search,
            room: ROOM,
            border: Border::Below(MsgId(1234)),
            size: 20,
            content_size: 7,
            include_archived: false,
            query: vec!["grüße".into(), "hello".into()],
        }
    }

    fn all_kinds() -> Vec<Token> {
        let history = Token {
            kind: Kind::History,
            border: Border::Above(MsgId(u64::MAX)),
            size: MAX_PAGE,
            content_size: MAX_PAGE,
            include_archived: true,
            query: vec![],
            ..search_token()
        };
        let find = Token {
            kind: Kind::Find,
            border: Border::AtOrBelow(MsgId(1)),
            size: 1,
            content_size: 1,
            query: vec![],
            ..search_token()
        };
        let find_up = Token {
            border: Border::AtOrAbove(MsgId(9)),
            ..find.clone()
        };
        vec![search_token(), history, find, find_up]
    }

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        for t in all_kinds() {
            let s = encode(&KEY, &t);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{s}"
            );
            assert_eq!(decode(&KEY, &s, ROOM, t.kind), Ok(t.clone()));
            // Padding, if a client adds it back, is accepted.
            let pad = "=".repeat((4 - s.len() % 4) % 4);
            assert_eq!(decode(&KEY, &format!("{s}{pad}"), ROOM, t.kind), Ok(t));
        }
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let s = encode(&KEY, &search_token());
        let raw = B64.decode(&s).unwrap();
        for i in 0..raw.len() {
            for bit in [0x01, 0x80] {
                let mut bad = raw.clone();
                bad[i] ^= bit;
                assert_eq!(
                    decode(&KEY, &B64.encode(&bad), ROOM, Kind::Search),
                    Err(Invalid),
                    "byte {i}"
                );
            }
        }
        // And every changed character of the text form.
        for i in 0..s.len() {
            let mut chars: Vec<char> = s.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let altered: String = chars.into_iter().collect();
            if altered != s {
                assert!(
                    decode(&KEY, &altered, ROOM, Kind::Search).is_err(),
                    "char {i}"
                );
            }
        }
    }

    #[test]
    fn a_token_of_another_chat_kind_or_key_is_refused() {
        let s = encode(&KEY, &search_token());
        assert_eq!(
            decode(&KEY, &s, RoomId(43), Kind::Search),
            Err(Invalid),
            "another patient's chat"
        );
        assert_eq!(decode(&KEY, &s, ROOM, Kind::History), Err(Invalid));
        assert_eq!(decode(&KEY, &s, ROOM, Kind::Find), Err(Invalid));
        assert_eq!(decode(&[8; 32], &s, ROOM, Kind::Search), Err(Invalid));
    }

    #[test]
    fn truncated_and_extended_tokens_are_refused() {
        let s = encode(&KEY, &search_token());
        for n in 0..s.len() {
            assert!(decode(&KEY, &s[..n], ROOM, Kind::Search).is_err(), "{n}");
        }
        let raw = B64.decode(&s).unwrap();
        for n in 0..raw.len() {
            let cut = B64.encode(&raw[..n]);
            assert_eq!(decode(&KEY, &cut, ROOM, Kind::Search), Err(Invalid));
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(
            decode(&KEY, &B64.encode(&longer), ROOM, Kind::Search),
            Err(Invalid)
        );
        assert_eq!(
            decode(&KEY, &"A".repeat(MAX_ENCODED + 4), ROOM, Kind::Search),
            Err(Invalid)
        );
    }

    #[test]
    fn well_signed_but_odd_payloads_are_refused() {
        // What `encode` never writes, signed with the right key anyway.
        let sign = |mut p: Vec<u8>| {
            let tag = mac(&KEY, &p).finalize().into_bytes();
            p.extend_from_slice(&tag);
            B64.encode(p)
        };
        let good = B64.decode(encode(&KEY, &search_token())).unwrap();
        let payload = &good[..good.len() - MAC_LEN];
        let patch = |i: usize, v: u8| {
            let mut p = payload.to_vec();
            p[i] = v;
            sign(p)
        };
        assert!(decode(&KEY, &sign(payload.to_vec()), ROOM, Kind::Search).is_ok());
        for (i, v) in [
            (0, 3),
            (0, 0),
            (1, 9),
            (10, 5),
            (19, 0),
            (19, 101),
            (20, 0),
            (20, 101),
            (21, 2),
        ] {
            assert_eq!(
                decode(&KEY, &patch(i, v), ROOM, Kind::Search),
                Err(Invalid),
                "byte {i} = {v}"
            );
        }
        // A search token without words, a history token with words.
        let mut no_words = payload[..FIXED].to_vec();
        no_words[FIXED - 1] = 0;
        assert_eq!(
            decode(&KEY, &sign(no_words), ROOM, Kind::Search),
            Err(Invalid)
        );
        let mut worded = payload.to_vec();
        worded[1] = Kind::History as u8;
        assert_eq!(
            decode(&KEY, &sign(worded), ROOM, Kind::History),
            Err(Invalid)
        );
        // A word that is not UTF-8.
        let mut p = payload[..FIXED].to_vec();
        p[FIXED - 1] = 1;
        p.extend_from_slice(&[2, 0xff, 0xfe]);
        assert_eq!(decode(&KEY, &sign(p), ROOM, Kind::Search), Err(Invalid));
    }

    /// Tokens written before the content size byte existed still open
    /// their page; their hits' tokens keep the page size they had.
    #[test]
    fn a_version_1_token_decodes_with_its_page_size_as_content_size() {
        let t = search_token();
        let raw = B64.decode(encode(&KEY, &t)).unwrap();
        let mut v1 = raw[..raw.len() - MAC_LEN].to_vec();
        v1[0] = VERSION_1;
        v1.remove(20);
        let tag = mac(&KEY, &v1).finalize().into_bytes();
        v1.extend_from_slice(&tag);
        let got = decode(&KEY, &B64.encode(v1), ROOM, Kind::Search).unwrap();
        assert_eq!(
            got,
            Token {
                content_size: t.size,
                ..t
            }
        );
    }

    #[test]
    fn decode_any_takes_each_listed_kind_and_no_other() {
        for t in all_kinds() {
            let s = encode(&KEY, &t);
            let d = decode_any(&KEY, &s, ROOM, &[Kind::History, Kind::Find]);
            assert_eq!(d.is_ok(), t.kind != Kind::Search, "{t:?}");
        }
    }

    #[test]
    fn random_input_never_panics_and_never_decodes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..200);
            let mut raw = vec![0u8; n];
            rng.fill_bytes(&mut raw);
            assert!(decode(&KEY, &B64.encode(&raw), ROOM, Kind::History).is_err());
            // Arbitrary text too, not only valid base64.
            let text = String::from_utf8_lossy(&raw);
            assert!(decode(&KEY, &text, ROOM, Kind::Find).is_err());
        }
    }
}

#[cfg(test)]
mod props;
