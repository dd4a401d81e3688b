//! A record's JSON as a block keeps it: the same text, shorter. What every
//! record repeats becomes one byte: the opening `{"seq":N,"at":"T","kind":"`
//! (its seq and time, which the block and `Sealed::at_ms` hold anyway),
//! member names, the common kinds. Those bytes are control bytes, which
//! `serde_json` never writes unescaped; a text that holds one anyway is
//! kept as it is, after [`LITERAL`]. A `chat.post` record's ~190 bytes
//! become ~45: what a record adds to sled is most of its cost (issue 17's
//! measurements, README).

use crate::model::time::rfc3339;

/// First byte of a text kept as it is.
const LITERAL: u8 = 0;
/// The opening, with the record's own seq and time.
const OPENING: u8 = 1;
/// Byte `FIRST_TOKEN + i` stands for `TOKENS[i]`.
const FIRST_TOKEN: u8 = 2;
const TOKENS: [&str; 30] = [
    r#"","actor":""#,
    r#"","tenant":""#,
    r#"","instance":""#,
    r#"","patient":""#,
    r#"","detail":{"#,
    r#"","tenant":null,"instance":null,"detail":{"#,
    r#""message":""#,
    r#"","room":""#,
    r#""room":""#,
    r#"","sender":""#,
    r#""count":"#,
    r#","first":""#,
    r#"","last":""#,
    r#""}}"#,
    r#"}}"#,
    r#"","#,
    r#"":""#,
    "chat.post",
    "chat.read",
    "chat.archive",
    "auth.login",
    "auth.logout",
    "auth.fail",
    "token.issue",
    r#""addr":""#,
    r#""user":""#,
    r#""method":""#,
    r#""messages":"#,
    r#""name":""#,
    r#""url":""#,
];

/// For each byte, the indices of the tokens that start with it, longest
/// first: most bytes start none, and the first that matches is the
/// longest.
fn starting_with(b: u8) -> &'static [u8] {
    static TABLE: std::sync::OnceLock<[Vec<u8>; 256]> = std::sync::OnceLock::new();
    &TABLE.get_or_init(|| {
        std::array::from_fn(|first| {
            let mut found: Vec<u8> = (0..TOKENS.len() as u8)
                .filter(|&i| TOKENS[i as usize].as_bytes()[0] == first as u8)
                .collect();
            found.sort_by_key(|&i| std::cmp::Reverse(TOKENS[i as usize].len()));
            found
        })
    })[b as usize]
}

/// Appends the opening of record `seq` made at `at_ms` to `out`.
fn opening(seq: u64, at_ms: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(br#","at":""#);
    out.extend_from_slice(rfc3339(at_ms).as_bytes());
    out.extend_from_slice(br#"","kind":""#);
}

/// `json` of record `seq` made at `at_ms`, packed.
pub(super) fn pack(seq: u64, at_ms: u64, json: &str) -> Vec<u8> {
    if json.bytes().any(|b| b < 0x20) {
        let mut out = vec![LITERAL];
        out.extend_from_slice(json.as_bytes());
        return out;
    }
    let mut out = Vec::with_capacity(json.len() / 2);
    opening(seq, at_ms, &mut out);
    let mut rest = match json.as_bytes().strip_prefix(out.as_slice()) {
        Some(rest) => {
            out.clear();
            out.push(OPENING);
            rest
        }
        None => {
            out.clear();
            json.as_bytes()
        }
    };
    while let Some((&b, after)) = rest.split_first() {
        // The second byte first: most candidates differ there, and a
        // whole comparison is a call.
        let token = starting_with(b).iter().find(|&&i| {
            let t = TOKENS[i as usize].as_bytes();
            rest.get(1) == t.get(1) && rest.starts_with(t)
        });
        match token {
            Some(&i) => {
                out.push(FIRST_TOKEN + i);
                rest = &rest[TOKENS[i as usize].len()..];
            }
            None => {
                out.push(b);
                rest = after;
            }
        }
    }
    out
}

/// The JSON that `pack(seq, at_ms, json)` packed. `None`: not valid text
/// (damaged bytes).
pub(super) fn unpack(seq: u64, at_ms: u64, packed: &[u8]) -> Option<String> {
    if let Some((&LITERAL, text)) = packed.split_first() {
        return String::from_utf8(text.to_vec()).ok();
    }
    let mut out = Vec::with_capacity(packed.len() * 4);
    for &b in packed {
        match b {
            OPENING => opening(seq, at_ms, &mut out),
            b if b >= FIRST_TOKEN && b < FIRST_TOKEN + TOKENS.len() as u8 => {
                out.extend_from_slice(TOKENS[(b - FIRST_TOKEN) as usize].as_bytes())
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = r#"{"seq":812,"at":"2026-12-06T07:04:45.123Z","kind":"chat.post","actor":"1234","tenant":"clinic-north","instance":"main","patient":"1234","detail":{"message":"104573","room":"77","sender":"1234"}}"#;
    const AT: u64 = 1_796_540_685_123;

    #[test]
    fn each_token_is_found_by_its_first_byte_longest_first() {
        for (i, t) in TOKENS.iter().enumerate() {
            let found = starting_with(t.as_bytes()[0]);
            assert!(found.contains(&(i as u8)), "{t}");
            let lens: Vec<usize> = found.iter().map(|&j| TOKENS[j as usize].len()).collect();
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{lens:?}");
        }
        let all: usize = (0..=255u8).map(|b| starting_with(b).len()).sum();
        assert_eq!(all, TOKENS.len());
    }

    #[test]
    fn a_post_record_packs_to_a_quarter_and_back() {
        assert_eq!(rfc3339(AT), "2026-12-06T07:04:45.123Z");
        let packed = pack(812, AT, POST);
        assert!(packed.len() * 4 < POST.len(), "{} bytes", packed.len());
        assert_eq!(packed[..2], [OPENING, FIRST_TOKEN + 17]);
        assert_eq!(unpack(812, AT, &packed).as_deref(), Some(POST));
    }

    /// The bytes `4988e45` packed these records to (printed by that
    /// commit's `pack`): blocks it wrote unpack to the same text, and
    /// packing still writes them — the format has not moved.
    #[test]
    fn blocks_packed_by_an_earlier_parlor_read_the_same() {
        const READ: &str = r#"{"seq":9,"at":"2026-12-06T07:04:45.123Z","kind":"chat.read","actor":"client:ehr","tenant":null,"instance":null,"detail":{"count":3,"first":"10","last":"12","room":"4"}}"#;
        let golden: [(u64, &str, &[u8]); 2] = [
            (
                812,
                POST,
                &[
                    1, 19, 2, 49, 50, 51, 52, 3, 99, 108, 105, 110, 105, 99, 45, 110, 111, 114,
                    116, 104, 4, 109, 97, 105, 110, 5, 49, 50, 51, 52, 6, 8, 49, 48, 52, 53, 55,
                    51, 9, 55, 55, 11, 49, 50, 51, 52, 15,
                ],
            ),
            (
                9,
                READ,
                &[
                    1, 20, 2, 99, 108, 105, 101, 110, 116, 58, 101, 104, 114, 7, 12, 51, 13, 49,
                    48, 14, 49, 50, 9, 52, 15,
                ],
            ),
        ];
        for (seq, text, packed) in golden {
            assert_eq!(unpack(seq, AT, packed).as_deref(), Some(text));
            assert_eq!(pack(seq, AT, text), packed);
        }
    }

    /// Whatever the text, it comes back: another record's opening, the
    /// tokens' bytes at every place, no workspace, non-ASCII, control
    /// bytes (kept literally), nothing.
    #[test]
    fn any_text_comes_back_as_it_was() {
        let texts = [
            POST.to_string(),
            POST.replace("812", "813"),
            r#"{"seq":1,"at":"1970-01-01T00:00:00.000Z","kind":"backup","actor":"cli","tenant":null,"instance":null,"detail":{}}"#.into(),
            TOKENS.concat(),
            format!("é{}ü\"}}}}\",\"", TOKENS.join("ß")),
            "tab\there, a NUL \0 and \u{1f}".into(),
            "\u{1}\u{2}".into(),
            String::new(),
        ];
        for t in &texts {
            let packed = pack(812, AT, t);
            assert_eq!(
                unpack(812, AT, &packed).as_deref(),
                Some(t.as_str()),
                "{t:?}"
            );
        }
        // The opening is only ever the record's own: another seq or time
        // unpacks to another text (and so to a hash that does not match).
        let packed = pack(812, AT, POST);
        assert_ne!(unpack(813, AT, &packed).as_deref(), Some(POST));
        assert_ne!(unpack(812, AT + 1, &packed).as_deref(), Some(POST));
    }
}
