//! The core's one error type. A `Kind` says what went wrong in terms every
//! dialect can map to its own wire shape (each dialect's impl of
//! `dialects::wire_error::WireError`; the core names no wire code);
//! the message is a sentence safe to show a client. Internal causes are
//! logged where they happen and never put into a message.

use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    InvalidCredentials,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    /// The server cannot take writes for now (its disk is full); reads go
    /// on. Carries `retry_after`.
    Unavailable,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// For `RateLimited` and `Unavailable`: when the caller may try again.
    pub retry_after: Option<Duration>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Retry-After` of [`Error::unavailable`]: room on a disk comes back when
/// an operator frees it, not in a second.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(10);

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Error {
        Error::new(Kind::BadRequest, m)
    }
    pub fn not_found(m: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Error {
        Error::new(Kind::Forbidden, m)
    }
    pub fn conflict(m: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, m)
    }
    pub fn too_large(m: impl Into<String>) -> Error {
        Error::new(Kind::TooLarge, m)
    }
    pub fn unauthenticated() -> Error {
        Error::new(Kind::Unauthenticated, "missing, invalid or revoked token")
    }
    pub fn rate_limited(retry_after: Duration) -> Error {
        Error {
            kind: Kind::RateLimited,
            message: "too many requests; slow down".into(),
            retry_after: Some(retry_after),
        }
    }
    /// A write refused because the store has no room on its disk (see
    /// `store::space`): nothing was stored; try again later.
    pub fn unavailable() -> Error {
        Error {
            kind: Kind::Unavailable,
            message: "the server cannot store anything right now (its disk is full); nothing \
                      was stored, try again later"
                .into(),
            retry_after: Some(UNAVAILABLE_RETRY),
        }
    }
    pub fn with_message(mut self, m: impl Into<String>) -> Error {
        self.message = m.into();
        self
    }
    /// An internal failure: the cause is logged here, the client sees only
    /// that something went wrong on our side.
    pub fn internal(cause: impl fmt::Display) -> Error {
        tracing::error!(%cause, "internal error");
        Error::new(Kind::Internal, "internal server error")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}
