//! What the typed dialect sends: `{"type","data"}` frames in the seed's
//! key order, its chats, messages and joins, with numeric ids and RFC
//! 3339 UTC times, and usernames looked up once per request.

use std::collections::HashMap;

use serde::Serialize;

use crate::core::rooms::RoomInfo;
use crate::core::Core;
use crate::model::time::rfc3339;
use crate::model::{Message, Participant, UserId};

#[derive(Serialize)]
pub(super) struct Person {
    pub(super) id: u64,
    pub(super) username: String,
}

#[derive(Serialize)]
pub(super) struct Chat {
    id: u64,
    participants: Vec<Person>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
pub(super) struct Msg<'a> {
    id: u64,
    chat: u64,
    sender: Person,
    text: &'a str,
    timestamp: String,
    is_read: bool,
}

impl<'m> Msg<'m> {
    pub(super) fn new(
        m: &'m Message,
        sender: Person,
        participants: &[(UserId, Participant)],
    ) -> Msg<'m> {
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
pub(super) struct Joined {
    pub(super) chat: u64,
    pub(super) user: Person,
    /// Present only when the join gave one (the seed: "if specified").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_read_message: Option<u64>,
}

/// `{"type","data"}`, in the seed's key order.
pub(super) fn frame<T: Serialize + ?Sized>(kind: &str, data: &T) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T: ?Sized> {
        r#type: &'a str,
        data: &'a T,
    }
    serde_json::to_string(&Frame { r#type: kind, data }).expect("serializing a reply")
}

/// Usernames by id, looked up once per request.
pub(super) struct Names<'a> {
    core: &'a Core,
    known: HashMap<UserId, String>,
}

impl<'a> Names<'a> {
    pub(super) fn new(core: &'a Core) -> Self {
        Names {
            core,
            known: HashMap::new(),
        }
    }

    pub(super) fn person(&mut self, id: UserId) -> Person {
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

    pub(super) fn chat(&mut self, info: &RoomInfo) -> Chat {
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

    pub(super) fn message<'m>(
        &mut self,
        m: &'m Message,
        participants: &[(UserId, Participant)],
    ) -> Msg<'m> {
        Msg::new(m, self.person(m.sender), participants)
    }
}
