//! Property tests of the page-token codec: every token a handler may
//! build round-trips, and any change to one — a byte, a character, the
//! chat, the kind or the key — is refused.

use super::*;
use crate::dialects::patient::MAX_QUERY_WORDS;
use crate::model::MAX_WORD;
use proptest::prelude::*;

const KEY: [u8; 32] = [9; 32];

#[test]
fn the_largest_token_a_handler_builds_fits_under_the_decode_limit() {
    let t = Token {
        kind: Kind::Search,
        room: RoomId(u64::MAX),
        border: Border::AtOrAbove(MsgId(u64::MAX)),
        size: MAX_PAGE,
        content_size: MAX_PAGE,
        include_archived: true,
        query: vec!["\u{10ffff}".repeat(MAX_WORD / 4); MAX_QUERY_WORDS],
    };
    let s = encode(&KEY, &t);
    assert!(s.len() <= MAX_ENCODED / 2, "{} chars", s.len());
    assert_eq!(decode(&KEY, &s, t.room, t.kind), Ok(t));
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::History), Just(Kind::Search), Just(Kind::Find)]
}

fn border() -> impl Strategy<Value = Border> {
    let id = prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()].prop_map(MsgId);
    prop_oneof![
        Just(Border::Newest),
        id.clone().prop_map(Border::Below),
        id.clone().prop_map(Border::AtOrBelow),
        id.clone().prop_map(Border::Above),
        id.prop_map(Border::AtOrAbove),
    ]
}

/// Any token a handler may build: search tokens carry 1..=16 words
/// (`MAX_QUERY_WORDS`) of any unicode, each at most `MAX_WORD` bytes
/// (a longer word matches nothing, so no token is made for it); the
/// others none.
fn token() -> impl Strategy<Value = Token> {
    let word = prop_oneof![
        "\\PC{1,20}",
        "[a-zäöüß0-9]{1,8}",
        "\\PC{60,64}",
        Just("x".repeat(MAX_WORD))
    ];
    (
        kind(),
        any::<u64>(),
        border(),
        (1..=MAX_PAGE, 1..=MAX_PAGE),
        any::<bool>(),
        proptest::collection::vec(word, 1..=MAX_QUERY_WORDS),
    )
        .prop_map(
            |(kind, room, border, (size, content), include_archived, words)| {
                let query = if kind == Kind::Search {
                    words
                        .into_iter()
                        .map(|mut w| {
                            while w.len() > MAX_WORD {
                                w.pop();
                            }
                            w
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                Token {
                    kind,
                    room: RoomId(room),
                    border,
                    size,
                    content_size: if kind == Kind::Search { content } else { size },
                    include_archived,
                    query,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_token_round_trips(t in token()) {
        let s = encode(&KEY, &t);
        prop_assert!(s.len() <= MAX_ENCODED, "{} chars", s.len());
        prop_assert_eq!(decode(&KEY, &s, t.room, t.kind), Ok(t));
    }

    #[test]
    fn any_single_byte_change_is_refused(
        t in token(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut raw = B64.decode(encode(&KEY, &t)).unwrap();
        let i = at.index(raw.len());
        raw[i] ^= xor;
        prop_assert_eq!(decode(&KEY, &B64.encode(&raw), t.room, t.kind), Err(Invalid));
    }

    #[test]
    fn any_single_character_change_is_refused(
        t in token(),
        at in any::<prop::sample::Index>(),
        c in prop_oneof![
            proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .".to_vec()
            ).prop_map(char::from),
            any::<char>(),
        ],
    ) {
        let s = encode(&KEY, &t);
        let mut chars: Vec<char> = s.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != c);
        chars[i] = c;
        let altered: String = chars.into_iter().collect();
        prop_assert_eq!(decode(&KEY, &altered, t.room, t.kind), Err(Invalid), "{}", altered);
    }

    #[test]
    fn a_token_is_refused_for_another_room_kind_or_key(
        t in token(),
        delta in 1..=u64::MAX,
        other in 1u8..3,
        mut key in any::<[u8; 32]>(),
    ) {
        let s = encode(&KEY, &t);
        let room = t.room.0 ^ delta;
        let other = match (t.kind as u8 + other) % 3 {
            0 => Kind::Find,
            1 => Kind::History,
            _ => Kind::Search,
        };
        if key == KEY {
            key[0] ^= 1;
        }
        prop_assert_eq!(decode(&KEY, &s, RoomId(room), t.kind), Err(Invalid));
        prop_assert_eq!(decode(&KEY, &s, t.room, other), Err(Invalid));
        prop_assert_eq!(decode(&key, &s, t.room, t.kind), Err(Invalid));
    }

    #[test]
    fn arbitrary_text_never_verifies(s in prop_oneof![any::<String>(), "[A-Za-z0-9_=-]{0,120}"], k in kind()) {
        prop_assert_eq!(decode(&KEY, &s, RoomId(1), k), Err(Invalid));
    }
}
