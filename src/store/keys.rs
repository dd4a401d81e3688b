//! Every key the store writes, built here and nowhere else.
//!
//! All data lives in ONE sled tree, split into keyspaces by a leading tag
//! byte (a group commit's writes are made atomic by the write-ahead log,
//! whatever keyspaces they touch). Integers are big-endian so byte order is numeric order.
//!
//! | tag | key                          | value                         |
//! |-----|------------------------------|-------------------------------|
//! | `0` | `0` name                     | meta (format version, …)      |
//! | `u` | `u` user:u64                 | `User`                        |
//! | `n` | `n` username bytes           | user:u64                      |
//! | `t` | `t` sha256(token):32         | `TokenRec`                    |
//! | `r` | `r` room:u64                 | `Room`                        |
//! | `p` | `p` room:u64 user:u64        | `Participant` (read marker)   |
//! | `m` | `m` user:u64 room:u64        | empty: the rooms of a user    |
//! | `d` | `d` low user:u64 high:u64    | room:u64: the pair's DM       |
//! | `l` | `l` msg:u64                  | room:u64 at_ms:u64: the log   |
//! | `i` | `i` room:u64 msg:u64         | `Message`: a room's messages  |
//! | `c` | `c` patient:u64              | room:u64: the care-team chat  |
//! | `w` | `w` workspace 0 user:u64     | empty: staff/admins of a ws   |
//! | `k` | `k` workspace 0 room:u64     | empty: patient chats of a ws  |
//! | `s` | `s` room:u64 word 0 msg:u64  | empty: search postings        |
//! | `h` | `h` workspace                | `Webhook`: a ws's webhook     |
//! | `o` | `o` msg:u64                  | `Delivery`: webhook outbox    |
//! | `g` | `g` msg:u64                  | `DeadDelivery`: given up      |
//! | `a` | `a` tenant 0 name            | `ApiClient` (API.md §6)       |
//! | `b` | `b` user:u64                 | `a` key: a client's own user  |
//! | `x` | `x` user:u64 sha256(token)   | empty: a client's tokens      |
//! | `e` | `e` seq:u64                  | `Sealed`: the audit trail     |
//! | `y` | `y` workspace                | days:u64: a ws's retention    |
//! | `q` | `q` workspace patient:u64    | `Hold` (patient 0: the ws)    |
//! | `z` | `z` room:u64                 | empty: an erased patient's chat, emptied by every purge |
//!
//! A message purged or erased leaves its `l` entry (no text: its room and
//! time) with a trailing 1 byte, so ids and time bounds stay as they were
//! and the newest id is never given again.
//!
//! `workspace` is `tenant 0 instance` (names hold no control characters,
//! so the 0 bytes cannot be ambiguous); `word` is a case-folded word of at
//! most `MAX_WORD` bytes, ended by 0 so that `cat` is not a prefix of
//! `cats`.

pub const META: u8 = b'0';
pub const USER: u8 = b'u';
pub const USERNAME: u8 = b'n';
pub const TOKEN: u8 = b't';
pub const ROOM: u8 = b'r';
pub const PARTICIPANT: u8 = b'p';
pub const MEMBERSHIP: u8 = b'm';
pub const DM: u8 = b'd';
pub const LOG: u8 = b'l';
pub const ROOM_MSG: u8 = b'i';
pub const PATIENT_CHAT: u8 = b'c';
pub const WS_STAFF: u8 = b'w';
pub const WS_PATIENT_CHAT: u8 = b'k';
pub const SEARCH: u8 = b's';
pub const WEBHOOK: u8 = b'h';
pub const OUTBOX: u8 = b'o';
pub const DEAD: u8 = b'g';
pub const API_CLIENT: u8 = b'a';
pub const CLIENT_USER: u8 = b'b';
pub const CLIENT_TOKEN: u8 = b'x';
pub const AUDIT: u8 = b'e';
pub const RETENTION: u8 = b'y';
pub const HOLD: u8 = b'q';
pub const ERASED_CHAT: u8 = b'z';

pub const PAGE_KEY_KEY: &[u8] = b"0page_token_key";

pub use crate::model::MAX_WORD;

/// `tag tenant 0 instance 0`: the prefix of a workspace's keys.
pub fn workspace(tag: u8, tenant: &str, instance: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + instance.len() + 8);
    k.push(tag);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(instance.as_bytes());
    k.push(0);
    k
}

/// `a tenant 0 name`: an API client, unique within its tenant (a name is
/// `A-Z a-z 0-9 . _ -`, a tenant holds no control characters: the 0 byte
/// cannot be ambiguous).
pub fn api_client(tenant: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + tenant.len() + name.len());
    k.push(API_CLIENT);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `x user hash`: one token of an API client's user (`user` alone, the
/// prefix of them all), so that a rotation finds every one to revoke.
pub fn client_token(user: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + 32);
    k.extend_from_slice(&one(CLIENT_TOKEN, user));
    k.extend_from_slice(hash);
    k
}

/// `s room word 0`: the prefix of a word's postings in a room.
pub fn postings(room: u64, word: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + word.len() + 8);
    k.push(SEARCH);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(word.as_bytes());
    k.push(0);
    k
}

/// `prefix id`.
pub fn with_id(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub const FORMAT_VERSION_KEY: &[u8] = b"0format_version";
/// The seq of the last write-ahead log record applied to the index:
/// written in the same sled batch as nothing else, after that record's
/// writes, so a checkpoint that holds it holds them.
pub const WAL_SEQ_KEY: &[u8] = b"0wal_seq";

pub fn one(tag: u8, a: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k
}

pub fn two(tag: u8, a: u64, b: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..17].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn bytes(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

/// The last big-endian u64 of a key (the second id of `two`, the id of `one`).
pub fn tail_u64(key: &[u8]) -> u64 {
    let n = key.len();
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[n - 8..]);
    u64::from_be_bytes(b)
}

pub fn u64_value(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn read_u64(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_sort_numerically() {
        assert!(one(LOG, 2) < one(LOG, 10));
        assert!(one(LOG, 255) < one(LOG, 256));
        assert!(one(LOG, u64::MAX - 1) < one(LOG, u64::MAX));
        assert!(two(ROOM_MSG, 1, u64::MAX) < two(ROOM_MSG, 2, 0));
        assert!(two(ROOM_MSG, 7, 2) < two(ROOM_MSG, 7, 10));
    }

    #[test]
    fn keyspaces_do_not_interleave() {
        // Every key of a keyspace lies between its tag and the next byte.
        let lo = [ROOM_MSG];
        let hi = [ROOM_MSG + 1];
        let k = two(ROOM_MSG, u64::MAX, u64::MAX);
        assert!(lo.as_slice() < k.as_slice() && k.as_slice() < hi.as_slice());
        assert!(FORMAT_VERSION_KEY[0] == META);
    }

    #[test]
    fn a_word_is_not_a_prefix_of_a_longer_word() {
        let cat = with_id(&postings(1, "cat"), u64::MAX);
        let cats = with_id(&postings(1, "cats"), 0);
        assert!(!cats.starts_with(&postings(1, "cat")));
        assert!(cat < cats);
        // API clients: ("ab","c") and ("a","bc") do not collide either,
        // and one user's tokens sort under its own prefix.
        assert_ne!(api_client("ab", "c"), api_client("a", "bc"));
        assert!(client_token(7, &[0xff; 32]).starts_with(&one(CLIENT_TOKEN, 7)));
        assert!(client_token(7, &[0xff; 32]) < client_token(8, &[0; 32]).to_vec());
        // Workspaces: ("ab","c") and ("a","bc") do not collide.
        assert_ne!(
            workspace(WS_STAFF, "ab", "c"),
            workspace(WS_STAFF, "a", "bc")
        );
    }

    #[test]
    fn tail_reads_back_the_last_id() {
        assert_eq!(tail_u64(&two(PARTICIPANT, 3, 99)), 99);
        assert_eq!(tail_u64(&one(USER, 12345)), 12345);
    }
}
