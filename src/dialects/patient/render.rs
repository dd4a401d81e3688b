//! What the patient dialect sends: messages as the seeds show them, the
//! `{"meta","content"}` envelope with its page tokens, and search or find
//! hits, each with the tokens that open the history around it.

use std::collections::HashMap;

use hyper::StatusCode;
use serde::Serialize;

use super::tokens::{self, Kind, Token};
use super::Result;
use crate::core::pages::{Border, Page};
use crate::core::patients::PatientChat;
use crate::core::Core;
use crate::model::time::rfc3339;
use crate::model::{external_id, Message, UserId};
use crate::net::http::{self, Resp};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sender {
    client_type: &'static str,
    id: String,
    title_name: Option<String>,
}

/// A message as the seeds show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireMessage {
    sender: Sender,
    message: String,
    external_id: String,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Meta {
    next_page_token: Option<String>,
    prev_page_token: Option<String>,
    page_size: usize,
    found: bool,
}

#[derive(Serialize)]
pub(super) struct Envelope<T> {
    pub(super) meta: Meta,
    pub(super) content: Vec<T>,
}

/// A search or find item: the message and the tokens that open the
/// history around it (`find?pageToken=`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HitMeta {
    next_page_token: String,
    prev_page_token: String,
}

#[derive(Serialize)]
pub(super) struct Hit {
    meta: HitMeta,
    message: WireMessage,
}

/// Renders one chat's messages and tokens; looks each sender up once.
pub(super) struct Render<'a> {
    core: &'a Core,
    chat: &'a PatientChat,
    pub(super) key: [u8; 32],
    titles: HashMap<UserId, Option<String>>,
}

impl<'a> Render<'a> {
    pub(super) fn new(core: &'a Core, chat: &'a PatientChat) -> Result<Render<'a>> {
        Ok(Render {
            core,
            chat,
            key: core.page_token_key()?,
            titles: HashMap::new(),
        })
    }

    /// `PATIENT` (no title) when the chat's patient sent it — also when
    /// staff posted it on their behalf — else `USER` with the sender's
    /// display name.
    pub(super) fn message(&mut self, m: &Message) -> Result<WireMessage> {
        let sender = if m.sender == self.chat.patient.id {
            Sender {
                client_type: "PATIENT",
                id: m.sender.to_string(),
                title_name: None,
            }
        } else {
            let title = match self.titles.get(&m.sender) {
                Some(t) => t.clone(),
                None => {
                    let t = self.core.user(m.sender)?.map(|u| u.display_name);
                    self.titles.insert(m.sender, t.clone());
                    t
                }
            };
            Sender {
                client_type: "USER",
                id: m.sender.to_string(),
                title_name: title,
            }
        };
        Ok(WireMessage {
            sender,
            message: m.text.clone(),
            external_id: external_id(m.id),
            created_at: rfc3339(m.at_ms),
        })
    }

    fn token(&self, kind: Kind, border: Border, at: &Paged, q: &[String]) -> String {
        tokens::encode(
            &self.key,
            &Token {
                kind,
                room: self.chat.room,
                border,
                size: at.size,
                content_size: at.content_size,
                include_archived: at.include_archived,
                query: q.to_vec(),
            },
        )
    }

    /// The envelope's `meta`, tokens of `kind` leading on from `page`.
    pub(super) fn meta(&self, kind: Kind, at: &Paged, page: &Page, q: &[String]) -> Meta {
        let (older, newer) = page.cuts(at.border);
        let tok = |b| self.token(kind, b, at, q);
        Meta {
            next_page_token: page.older.then(|| tok(older)),
            prev_page_token: page.newer.then(|| tok(newer)),
            page_size: at.size,
            found: !page.messages.is_empty(),
        }
    }

    /// Search/find items: each message with the find tokens around it,
    /// for pages of `at.content_size` messages.
    pub(super) fn hits(&mut self, page: &Page, at: &Paged) -> Result<Vec<Hit>> {
        let around = Paged {
            border: Border::Newest,
            size: at.content_size,
            content_size: at.content_size,
            include_archived: at.include_archived,
        };
        let mut out = Vec::with_capacity(page.messages.len());
        for m in &page.messages {
            out.push(Hit {
                meta: HitMeta {
                    next_page_token: self.token(Kind::Find, Border::AtOrBelow(m.id), &around, &[]),
                    prev_page_token: self.token(Kind::Find, Border::AtOrAbove(m.id), &around, &[]),
                },
                message: self.message(m)?,
            });
        }
        Ok(out)
    }
}

/// Where a page is read from, how long it is (and, for search, how long
/// the pages its hits open are), and whether archived messages count.
pub(super) struct Paged {
    pub(super) border: Border,
    pub(super) size: usize,
    pub(super) content_size: usize,
    pub(super) include_archived: bool,
}

pub(super) fn ok_json<T: Serialize>(v: &T) -> Resp {
    http::json(StatusCode::OK, v)
}
