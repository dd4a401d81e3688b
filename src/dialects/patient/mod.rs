//! The "patient" dialect (seeds 003/004, API.md §5): REST under
//! `/{tenant}/{instance}/patient/{patientId}/chat` — inbound and outbound
//! messages, history pages with page tokens, archive, search and find.
//! Welkin's own clients (§5a) are served unchanged: `/patients/` is the
//! same resource, `size` is `pageSize`, a search hit's tokens open
//! history pages, `contentPageSize` sizes the hits' pages, and query
//! parameters this dialect does not know are ignored.
//!
//! Translation only: the path, query and body become one core call
//! (`core::patients`), its answer becomes the seeds' JSON. Who may do
//! what, where pages start and end, and the search index all live in the
//! core; this module never touches the store. Page tokens are this
//! dialect's wire format (`tokens`), keyed by the core's page-token key.
//!
//! Every error is API.md §1's `{"error","error_code"}`; a page token that
//! does not verify is `400 INVALID_PAGE_TOKEN`, this dialect's one code of
//! its own.
//!
//! Here: this dialect's failures and wire error, and its handlers;
//! `request` reads a request, `render` writes the answer.

mod render;
mod request;
pub(crate) mod tokens;

pub use request::owns;
pub(crate) use request::{query_words, target, ArchiveBody, Query, Text};

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::wire_error::{Rest, WireError};
use super::{caller, Ctx};
use crate::core::audit::ToShow;
use crate::core::pages::Border;
use crate::core::patients::PatientChat;
use crate::core::{blocking, Core};
use crate::error::Error;
use crate::model::time::parse_rfc3339;
use crate::model::User;
use crate::net::http::{self, Resp};
use render::{ok_json, Envelope, Paged, Render};
use request::Endpoint;
use tokens::Kind;

/// `pageSize` when none is given.
pub const DEFAULT_PAGE: usize = 20;
/// Most words a search query may have (each is one posting-list walk).
pub const MAX_QUERY_WORDS: usize = 16;

/// What a request can fail with: a core error, or a page token that does
/// not verify (which has its own code here and nowhere else).
#[derive(Debug)]
pub(crate) enum Fail {
    Core(Error),
    BadToken,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Core(e)
    }
}

impl From<tokens::Invalid> for Fail {
    fn from(_: tokens::Invalid) -> Fail {
        Fail::BadToken
    }
}

type Result<T, E = Fail> = std::result::Result<T, E>;

/// The patient dialect, as its wire error names it.
pub(crate) struct Patient;

/// This dialect's wire error: API.md §1's body and status, and `400
/// INVALID_PAGE_TOKEN` for a page token that does not verify.
impl WireError for Patient {
    type Fail = Fail;
    type Wire = Resp;

    fn wire(f: &Fail) -> Resp {
        match f {
            Fail::Core(e) => Rest::wire(e),
            Fail::BadToken => http::json(
                StatusCode::BAD_REQUEST,
                &Rest::body(
                    "INVALID_PAGE_TOKEN",
                    "the page token is not valid for this chat",
                ),
            ),
        }
    }
}

fn bad_request(m: impl Into<String>) -> Fail {
    Fail::Core(Error::bad_request(m))
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// Serves one request of this dialect (the router calls this for every
/// path [`owns`] claims), rendering its own errors.
pub async fn route(ctx: Ctx, req: Request<Incoming>) -> Resp {
    handle(ctx, req).await.unwrap_or_else(|f| Patient::wire(&f))
}

async fn handle(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let t = target(&method, &path)
        .ok_or_else(|| Error::not_found(format!("no endpoint {method} {path}")))?;
    let caller = caller(&ctx.core, &req)?.user;
    let core = ctx.core.clone();
    let chat = core
        .patient_chat(&caller, &t.tenant, &t.instance, &t.patient)
        .await?;
    match t.endpoint {
        Endpoint::Inbound | Endpoint::Outbound => send(core, caller, chat, t.endpoint, req).await,
        Endpoint::Archive => archive(core, caller, chat, req).await,
        Endpoint::History | Endpoint::Search | Endpoint::Find => {
            let q = Query::parse(req.uri().query())?;
            let endpoint = t.endpoint;
            let read = blocking(move || match endpoint {
                Endpoint::History => history(&core, &chat, &q),
                Endpoint::Search => search(&core, &chat, &q),
                _ => find(&core, &chat, &q),
            })
            .await?;
            Ok(ctx.core.show(read).await?)
        }
    }
}

/// `POST …/chat/inbound` `{"message"}` → the message, sent as the
/// patient (also when staff posts it for them).
/// `POST …/chat/outbound` `{"message"}` → the message, sent as the staff
/// caller; `403` for the patient.
async fn send(
    core: Arc<Core>,
    caller: User,
    chat: PatientChat,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Resp> {
    let b: Text = http::read_json(req).await?;
    let m = if endpoint == Endpoint::Inbound {
        core.inbound(&caller, &chat, b.message).await?
    } else {
        core.outbound(&caller, &chat, b.message).await?
    };
    blocking(move || Ok(ok_json(&Render::new(&core, &chat)?.message(&m)?))).await
}

/// `POST …/chat/archive` `{"externalIds":[…]}` → `204`; all or nothing,
/// `404` if one is not a message of this chat, `403` for the patient.
async fn archive(
    core: Arc<Core>,
    caller: User,
    chat: PatientChat,
    req: Request<Incoming>,
) -> Result<Resp> {
    let b: ArchiveBody = http::read_json(req).await?;
    core.archive(&caller, &chat, &b.external_ids).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `GET …/chat?pageSize=|pageToken=&includeArchived=` → `{"meta",
/// "content"}`, newest first; `nextPageToken` older, `prevPageToken`
/// newer. The token may also be a search hit's (or a find page's): then
/// this is the page `find` would show, and history pages lead on from it.
fn history(core: &Core, chat: &PatientChat, q: &Query) -> Result<ToShow<Resp>> {
    let mut r = Render::new(core, chat)?;
    let size = q.page_size()?;
    let token = q
        .token()
        .map(|s| tokens::decode_any(&r.key, s, chat.room, &[Kind::History, Kind::Find]))
        .transpose()?;
    let size = token
        .as_ref()
        .map_or(size.unwrap_or(DEFAULT_PAGE), |t| t.size);
    let at = Paged {
        include_archived: q.include_archived(token.as_ref())?,
        border: token.as_ref().map_or(Border::Newest, |t| t.border),
        size,
        content_size: size,
    };
    let page = core.history_page(chat, at.border, at.size, at.include_archived)?;
    page.try_map(|page| {
        let content = page
            .messages
            .iter()
            .map(|m| r.message(m))
            .collect::<Result<Vec<_>>>()?;
        let meta = r.meta(Kind::History, &at, &page, &[]);
        Ok(ok_json(&Envelope { meta, content }))
    })
}

/// `GET …/chat/search?query=&pageSize=|pageToken=` → the seed's search
/// envelope, hits newest first, each with its own find tokens. A token
/// carries its query; `query` may then be left out (or repeat it).
fn search(core: &Core, chat: &PatientChat, q: &Query) -> Result<ToShow<Resp>> {
    let mut r = Render::new(core, chat)?;
    let size = q.page_size()?;
    let token = q
        .token()
        .map(|s| tokens::decode(&r.key, s, chat.room, Kind::Search))
        .transpose()?;
    // With a token, an empty `query=` is the same as none.
    let asked = q
        .get("query")
        .filter(|s| token.is_none() || !s.is_empty())
        .map(query_words)
        .transpose()?;
    let words = match (&token, asked) {
        (Some(t), Some(a)) if a != t.query => {
            return Err(bad_request(
                "query differs from the page token's; leave it out with a pageToken",
            ))
        }
        (Some(t), _) => t.query.clone(),
        (None, Some(a)) => a,
        (None, None) => return Err(bad_request("query is required")),
    };
    let content_size = match (&token, q.content_page_size()?) {
        (Some(t), Some(c)) if c != t.content_size => {
            return Err(bad_request(
                "contentPageSize differs from the page token's; leave it out with a pageToken",
            ))
        }
        (Some(t), _) => t.content_size,
        (None, c) => c.unwrap_or(DEFAULT_PAGE),
    };
    let at = Paged {
        border: token.as_ref().map_or(Border::Newest, |t| t.border),
        size: token
            .as_ref()
            .map_or(size.unwrap_or(DEFAULT_PAGE), |t| t.size),
        content_size,
        include_archived: false,
    };
    let page = core.search_page(chat, &words, at.border, at.size)?;
    page.try_map(|page| {
        let content = r.hits(&page, &at)?;
        let meta = r.meta(Kind::Search, &at, &page, &words);
        Ok(ok_json(&Envelope { meta, content }))
    })
}

/// `GET …/chat/find?pageToken=` → the page around a search hit (or on from
/// an earlier find page), hit included; `GET …/chat/find?date=&before=
/// &pageSize=&includeArchived=` → the `pageSize` messages at or before
/// (`before=true`, the default) or at or after `date`, nearest to it.
/// Either way the search envelope, newest first.
fn find(core: &Core, chat: &PatientChat, q: &Query) -> Result<ToShow<Resp>> {
    let mut r = Render::new(core, chat)?;
    let size = q.page_size()?;
    let at = match q.token() {
        Some(s) => {
            if q.get("date").is_some() || q.get("before").is_some() {
                return Err(bad_request(
                    "date and before open a new page; leave them out with a pageToken",
                ));
            }
            let t = tokens::decode(&r.key, s, chat.room, Kind::Find)?;
            Paged {
                include_archived: q.include_archived(Some(&t))?,
                border: t.border,
                size: t.size,
                content_size: t.size,
            }
        }
        None => {
            let date = q
                .get("date")
                .ok_or_else(|| bad_request("find needs a pageToken, or a date"))?;
            let ms = parse_rfc3339(date).ok_or_else(|| {
                bad_request("date must be an RFC 3339 date-time, e.g. 2021-03-05T16:09:52.655Z")
            })?;
            let before = q.flag("before")?.unwrap_or(true);
            let size = size.unwrap_or(DEFAULT_PAGE);
            Paged {
                border: core.border_at(u64::try_from(ms).unwrap_or(0), before)?,
                size,
                content_size: size,
                include_archived: q.include_archived(None)?,
            }
        }
    };
    let page = core.history_page(chat, at.border, at.size, at.include_archived)?;
    page.try_map(|page| {
        let content = r.hits(&page, &at)?;
        let meta = r.meta(Kind::Find, &at, &page, &[]);
        Ok(ok_json(&Envelope { meta, content }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialects::wire_error::check::{every_kind_is_shown, response};

    #[test]
    fn every_kind_is_a_rest_error_and_a_bad_token_its_own() {
        every_kind_is_shown::<Patient>(Fail::Core, response);
        assert_eq!(
            response(Patient::wire(&Fail::BadToken)),
            "400 Bad Request {\"error\":\"the page token is not valid for this chat\",\
             \"error_code\":\"INVALID_PAGE_TOKEN\"}"
        );
    }
}
