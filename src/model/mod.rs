//! The one vocabulary every dialect shares: ids, users, rooms, messages.
//! Plain data with validation; no I/O here. `time`: RFC 3339 times
//! (with milliseconds) out and in, for every dialect and the audit trail.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

pub mod time;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl $name {
            /// Parses the decimal form a dialect renders as a JSON string.
            pub fn parse(s: &str) -> Option<Self> {
                if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse().ok().map($name)
            }
        }
    };
}

id_type!(
    /// A user, unique across the daemon.
    UserId
);
id_type!(
    /// A room (a chat), unique across the daemon.
    RoomId
);
id_type!(
    /// A message. Global and assigned in commit order: see `core::commit`.
    MsgId
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Patient,
    Staff,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "patient" => Some(Role::Patient),
            "staff" => Some(Role::Staff),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }
}

/// A tenancy boundary, named by `(tenant, instance)`. Nothing crosses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workspace {
    pub tenant: String,
    pub instance: String,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace {
            tenant: "default".into(),
            instance: "default".into(),
        }
    }
}

impl Workspace {
    pub fn new(tenant: &str, instance: &str) -> Result<Workspace> {
        check_name("tenant", tenant)?;
        check_name("instance", instance)?;
        Ok(Workspace {
            tenant: tenant.into(),
            instance: instance.into(),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub workspace: Workspace,
    /// argon2id PHC string; never leaves the core.
    pub password_hash: String,
    pub created_ms: u64,
}

/// How an erased user is shown (API.md §8), in place of every name.
pub const ERASED_NAME: &str = "erased user";

impl User {
    /// Removes what named the person and let them in: their name becomes
    /// [`ERASED_NAME`], their password hash goes. Their id, role and
    /// workspace stay (ids are never reused; their messages elsewhere
    /// keep their sender).
    pub fn erase(&mut self) {
        self.username = ERASED_NAME.to_owned();
        self.display_name = ERASED_NAME.to_owned();
        self.password_hash.clear();
    }

    /// Whether [`User::erase`] was applied: no user can be made with an
    /// empty password hash.
    pub fn is_erased(&self) -> bool {
        self.username == ERASED_NAME && self.password_hash.is_empty()
    }
}

/// A legal hold (API.md §8): on one patient's chat, or on a whole
/// workspace; while it stands, retention and erasure leave it alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    /// When it was set (Unix ms).
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomKind {
    /// Two users (or one, talking to themself); closed.
    Dm,
    /// Created by an admin with a fixed member list; closed.
    Group,
    /// Anyone of the workspace may join.
    Open,
    /// A patient and their care team.
    Patient,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Room {
    pub id: RoomId,
    pub kind: RoomKind,
    pub name: Option<String>,
    pub workspace: Workspace,
    pub created_ms: u64,
    /// For `RoomKind::Patient`: whose care-team chat this is.
    pub patient: Option<UserId>,
}

impl Room {
    /// Whether a user of the room's workspace may join on their own.
    pub fn is_open(&self) -> bool {
        self.kind == RoomKind::Open
    }
}

/// A user's membership in a room, with their read marker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Newest message the user has read; `MsgId(0)` when none.
    pub last_read: MsgId,
    /// When the marker last moved (Unix ms); 0 if never.
    pub last_read_ms: u64,
    /// When the user last posted here (Unix ms); 0 if never.
    pub last_posted_ms: u64,
    pub joined_ms: u64,
}

impl Participant {
    /// When the user was last active here: read or posted; 0 if never.
    pub fn last_seen_ms(&self) -> u64 {
        self.last_read_ms.max(self.last_posted_ms)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MsgId,
    pub room: RoomId,
    pub sender: UserId,
    pub text: String,
    /// Commit time, Unix ms; never decreases as ids grow (so a time can be
    /// turned into an id bound: `Store::first_id_at`).
    pub at_ms: u64,
    /// Who really posted it, when that is not `sender` (staff posting a
    /// patient's message on their behalf).
    pub author: Option<UserId>,
    /// The read flag as the sender set it (typed dialect); a message also
    /// counts as read once another participant's marker reaches it.
    pub is_read: bool,
    /// Hidden from history and search unless asked for (patient dialect).
    pub archived: bool,
}

impl Message {
    /// Whether someone other than the sender has read it, or it was sent
    /// as read.
    pub fn read_by_other(&self, participants: &[(UserId, Participant)]) -> bool {
        self.is_read
            || participants
                .iter()
                .any(|(u, p)| *u != self.sender && p.last_read >= self.id)
    }
}

/// A workspace's webhook (API.md §5): where staff messages in patient
/// chats are announced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
}

/// A pending webhook call, written in the same commit as its message and
/// removed once the receiver answered 2xx.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub message: MsgId,
    pub patient: UserId,
    pub workspace: Workspace,
    pub text: String,
    pub at_ms: u64,
}

/// A delivery set aside after failing for `--webhook-give-up-hours`: kept,
/// no longer tried, until the operator retries it (back into the outbox).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadDelivery {
    pub delivery: Delivery,
    /// Failed attempts, the last one included.
    pub failed_attempts: u32,
    pub last_error: String,
    /// When it was set aside, Unix ms.
    pub dead_ms: u64,
}

/// An API client (API.md §6): a bridge that exchanges its name and secret
/// for tokens. It acts through its own user (`user`: staff of
/// `workspace`, hidden from participant lists, no password).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiClient {
    pub name: String,
    pub workspace: Workspace,
    pub user: UserId,
    /// SHA-256 of the secret (256 random bits: see `core::api_clients`).
    pub secret_hash: [u8; 32],
    pub created_ms: u64,
    /// When the secret was last replaced; `created_ms` if never.
    pub rotated_ms: u64,
}

/// A message's `externalId` (patient dialect): `IM` + 32 hex digits, stable
/// and unique because it is the message id.
pub fn external_id(id: MsgId) -> String {
    format!("IM{:032x}", id.0)
}

/// The message id inside an `externalId`, if it is one.
pub fn parse_external_id(s: &str) -> Option<MsgId> {
    let hex = s.strip_prefix("IM")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v != 0)
        .map(MsgId)
}

/// The words of a text, for search: maximal runs of Unicode letters and
/// digits, lower-cased, each once. (Words over [`MAX_WORD`] bytes are not
/// indexed; a query naming one matches nothing.)
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Lowercase hex of `bytes` (hashes, keys and digests as the wire and
/// the exports show them).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits")
}

/// [`hex`] into `out` (twice as long as `bytes`), for a caller that
/// must not allocate (the audit chain hashes one per record).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Longest indexed word, in bytes; longer words are not searchable.
pub const MAX_WORD: usize = 64;

/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 16_384;
/// Longest username or display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A message text: 1..=16,384 bytes, kept exactly as sent (not trimmed).
pub fn check_text(text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(Error::bad_request("message text is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::too_large(format!(
            "message text is {} bytes; at most {MAX_TEXT_BYTES} are allowed",
            text.len()
        )));
    }
    Ok(())
}

/// A username, display name, tenant or instance: 1..=64 characters, no
/// control characters.
pub fn check_name(what: &str, s: &str) -> Result<()> {
    let n = s.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(Error::bad_request(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn text_limits_are_bytes_not_chars() {
        assert_eq!(check_text("").unwrap_err().kind, Kind::BadRequest);
        assert!(check_text(&"a".repeat(MAX_TEXT_BYTES)).is_ok());
        assert_eq!(
            check_text(&"a".repeat(MAX_TEXT_BYTES + 1))
                .unwrap_err()
                .kind,
            Kind::TooLarge
        );
        // 4-byte characters: 4,096 of them is exactly the limit.
        assert!(check_text(&"😀".repeat(4096)).is_ok());
        assert!(check_text(&"😀".repeat(4097)).is_err());
        // Not trimmed: whitespace alone is a message.
        assert!(check_text("  ").is_ok());
    }

    #[test]
    fn id_parse_rejects_signs_spaces_and_overflow() {
        assert_eq!(UserId::parse("42"), Some(UserId(42)));
        assert_eq!(UserId::parse("+42"), None);
        assert_eq!(UserId::parse(" 42"), None);
        assert_eq!(UserId::parse(""), None);
        assert_eq!(UserId::parse("18446744073709551616"), None);
    }

    #[test]
    fn external_ids_round_trip_and_reject_lookalikes() {
        let e = external_id(MsgId(255));
        assert_eq!(e, "IM000000000000000000000000000000ff");
        assert_eq!(parse_external_id(&e), Some(MsgId(255)));
        // Hex digits in either case.
        assert_eq!(
            parse_external_id("IM000000000000000000000000000000FF"),
            Some(MsgId(255))
        );
        assert_eq!(parse_external_id("IM00"), None);
        assert_eq!(
            parse_external_id("XX000000000000000000000000000000ff"),
            None
        );
        assert_eq!(
            parse_external_id("IMffffffffffffffff0000000000000001"),
            None
        );
        assert_eq!(parse_external_id(&external_id(MsgId(0))), None);
    }

    #[test]
    fn words_split_on_unicode_boundaries_and_fold_case() {
        assert_eq!(words("Hello, WORLD! hello"), ["hello", "world"]);
        assert_eq!(
            words("Grüße aus Köln—über 3 Tage"),
            ["3", "aus", "grüße", "köln", "tage", "über"]
        );
        assert_eq!(words("...!?"), Vec::<String>::new());
    }

    #[test]
    fn names_are_counted_in_characters() {
        assert!(check_name("username", &"é".repeat(64)).is_ok());
        assert!(check_name("username", &"é".repeat(65)).is_err());
        assert!(check_name("username", "a\nb").is_err());
    }
}
