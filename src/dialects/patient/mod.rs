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

pub(crate) mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{caller, Ctx};
use crate::core::audit::ToShow;
use crate::core::patients::{Border, Page, PatientChat, MAX_PAGE};
use crate::core::{blocking, Core};
use crate::error::Error;
use crate::model::time::{parse_rfc3339, rfc3339};
use crate::model::{external_id, words, Message, MsgId, User, UserId};
use crate::net::http::{self, percent_decode, Resp};
use tokens::{Kind, Token};

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

/// This dialect's wire error: API.md §1's body and status.
pub(crate) fn wire_error(f: &Fail) -> Resp {
    match f {
        Fail::Core(e) => http::error(e),
        Fail::BadToken => http::json(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "the page token is not valid for this chat",
                "error_code": "INVALID_PAGE_TOKEN",
            }),
        ),
    }
}

fn bad_request(m: impl Into<String>) -> Fail {
    Fail::Core(Error::bad_request(m))
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// Whether `path` is this dialect's (`/{tenant}/{instance}/patient/…`,
/// or `/patients/…` as Welkin's live API and SDK write it); the router
/// hands such paths to [`route`], which parses the rest.
pub fn owns(path: &str) -> bool {
    matches!(path.split('/').nth(3), Some("patient" | "patients"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    History,
    Inbound,
    Outbound,
    Archive,
    Search,
    Find,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    tenant: String,
    instance: String,
    patient: String,
    endpoint: Endpoint,
}

/// The endpoint a method and path name, with the path's parts decoded.
pub(crate) fn target(method: &Method, path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (t, i, p, sub) = match segs.as_slice() {
        [t, i, "patient" | "patients", p, "chat"] => (t, i, p, None),
        [t, i, "patient" | "patients", p, "chat", sub] => (t, i, p, Some(*sub)),
        _ => return None,
    };
    let endpoint = match (method, sub) {
        (&Method::GET, None) => Endpoint::History,
        (&Method::POST, Some("inbound")) => Endpoint::Inbound,
        (&Method::POST, Some("outbound")) => Endpoint::Outbound,
        (&Method::POST, Some("archive")) => Endpoint::Archive,
        (&Method::GET, Some("search")) => Endpoint::Search,
        (&Method::GET, Some("find")) => Endpoint::Find,
        _ => return None,
    };
    Some(Target {
        tenant: percent_decode(t, false)?,
        instance: percent_decode(i, false)?,
        patient: percent_decode(p, false)?,
        endpoint,
    })
}

// ---------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------

/// A request's query parameters, decoded; each name at most once.
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Result<Query> {
        let mut map = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || bad_request("the query string is not valid percent-encoded UTF-8");
            let (k, v) = (
                percent_decode(k, true).ok_or_else(bad)?,
                percent_decode(v, true).ok_or_else(bad)?,
            );
            if map.contains_key(&k) {
                return Err(bad_request(format!("query parameter {k} is given twice")));
            }
            map.insert(k, v);
        }
        Ok(Query(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `pageToken`; an empty one counts as none.
    pub(crate) fn token(&self) -> Option<&str> {
        self.get("pageToken").filter(|t| !t.is_empty())
    }

    /// `pageSize` (or its synonym `size`, as Welkin's clients send it),
    /// 1..=100; refused together with a `pageToken`, and both names at once.
    pub(crate) fn page_size(&self) -> Result<Option<usize>> {
        let (name, v) = match (self.get("pageSize"), self.get("size")) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(bad_request(
                    "size is a synonym of pageSize; give one of them",
                ))
            }
            (Some(v), None) => ("pageSize", v),
            (None, Some(v)) => ("size", v),
        };
        if self.token().is_some() {
            return Err(bad_request(format!(
                "{name} and pageToken are mutually exclusive; the token carries its page size"
            )));
        }
        Self::size_value(name, v).map(Some)
    }

    /// `contentPageSize` (search), 1..=100: the page size of each hit's
    /// own tokens.
    pub(crate) fn content_page_size(&self) -> Result<Option<usize>> {
        self.get("contentPageSize")
            .map(|v| Self::size_value("contentPageSize", v))
            .transpose()
    }

    fn size_value(name: &str, v: &str) -> Result<usize> {
        match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(bad_request(format!(
                "{name} must be an integer from 1 to {MAX_PAGE}"
            ))),
        }
    }

    /// A `true`/`false` parameter (any case).
    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(bad_request(format!("{name} must be true or false"))),
        }
    }

    /// `includeArchived`: with a token it may be left out, or repeat the
    /// token's value; anything else is a contradiction.
    pub(crate) fn include_archived(&self, token: Option<&Token>) -> Result<bool> {
        let asked = self.flag("includeArchived")?;
        match (token, asked) {
            (Some(t), Some(a)) if a != t.include_archived => Err(bad_request(
                "includeArchived differs from the page token's; leave it out with a pageToken",
            )),
            (Some(t), _) => Ok(t.include_archived),
            (None, a) => Ok(a.unwrap_or(false)),
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

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
struct WireMessage {
    sender: Sender,
    message: String,
    external_id: String,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    next_page_token: Option<String>,
    prev_page_token: Option<String>,
    page_size: usize,
    found: bool,
}

#[derive(Serialize)]
struct Envelope<T> {
    meta: Meta,
    content: Vec<T>,
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
struct Hit {
    meta: HitMeta,
    message: WireMessage,
}

/// Renders one chat's messages and tokens; looks each sender up once.
struct Render<'a> {
    core: &'a Core,
    chat: &'a PatientChat,
    key: [u8; 32],
    titles: HashMap<UserId, Option<String>>,
}

impl<'a> Render<'a> {
    fn new(core: &'a Core, chat: &'a PatientChat) -> Result<Render<'a>> {
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
    fn message(&mut self, m: &Message) -> Result<WireMessage> {
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
    fn meta(&self, kind: Kind, at: &Paged, page: &Page, q: &[String]) -> Meta {
        let (older, newer) = cuts(page, at.border);
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
    fn hits(&mut self, page: &Page, at: &Paged) -> Result<Vec<Hit>> {
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

/// Where the pages beyond `page` start: older (`Below`) and newer
/// (`Above`) than its messages — or, for an empty page, than the border
/// it was read from.
fn cuts(page: &Page, border: Border) -> (Border, Border) {
    if let (Some(oldest), Some(newest)) = (page.messages.last(), page.messages.first()) {
        return (Border::Below(oldest.id), Border::Above(newest.id));
    }
    let (below, above) = match border {
        Border::Newest => (u64::MAX, u64::MAX),
        Border::Below(x) | Border::AtOrAbove(x) => (x.0, x.0.saturating_sub(1)),
        Border::AtOrBelow(x) | Border::Above(x) => (x.0.saturating_add(1), x.0),
    };
    (Border::Below(MsgId(below)), Border::Above(MsgId(above)))
}

/// Where a page is read from, how long it is (and, for search, how long
/// the pages its hits open are), and whether archived messages count.
struct Paged {
    border: Border,
    size: usize,
    content_size: usize,
    include_archived: bool,
}

fn ok_json<T: Serialize>(v: &T) -> Resp {
    http::json(StatusCode::OK, v)
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// Serves one request of this dialect (the router calls this for every
/// path [`owns`] claims), rendering its own errors.
pub async fn route(ctx: Ctx, req: Request<Incoming>) -> Resp {
    handle(ctx, req).await.unwrap_or_else(|f| wire_error(&f))
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

#[derive(Deserialize)]
pub(crate) struct Text {
    message: String,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArchiveBody {
    external_ids: Vec<String>,
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

/// The words of a search query (`model::words`: all must match,
/// whole words, any case).
pub(crate) fn query_words(query: &str) -> Result<Vec<String>> {
    let all = words(query);
    if all.is_empty() {
        return Err(bad_request("query must contain at least one word"));
    }
    if all.len() > MAX_QUERY_WORDS {
        return Err(bad_request(format!(
            "query may have at most {MAX_QUERY_WORDS} words"
        )));
    }
    Ok(all)
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

    #[test]
    fn owns_only_the_patient_segment_in_third_place() {
        assert!(owns("/gh/sb-demo/patient/7/chat"));
        assert!(owns("/gh/sb-demo/patient"));
        assert!(owns("/gh/sb-demo/patients/7/chat"));
        assert!(!owns("/gh/sb-demo/patientz/7/chat"));
        assert!(!owns("/chat/patient/x"));
        assert!(!owns("/patient/a/b/chat"));
        assert!(!owns("/healthz"));
    }

    #[test]
    fn target_names_each_endpoint_and_decodes_the_path() {
        let t = target(&Method::GET, "/gh/sb%20demo/patient/7/chat").unwrap();
        assert_eq!(
            t,
            Target {
                tenant: "gh".into(),
                instance: "sb demo".into(),
                patient: "7".into(),
                endpoint: Endpoint::History,
            }
        );
        assert_eq!(
            target(&Method::GET, "/t/i/patients/7/chat/search")
                .unwrap()
                .endpoint,
            Endpoint::Search
        );
        for (m, sub, e) in [
            (Method::POST, "inbound", Endpoint::Inbound),
            (Method::POST, "outbound", Endpoint::Outbound),
            (Method::POST, "archive", Endpoint::Archive),
            (Method::GET, "search", Endpoint::Search),
            (Method::GET, "find", Endpoint::Find),
        ] {
            let path = format!("/t/i/patient/7/chat/{sub}");
            assert_eq!(target(&m, &path).unwrap().endpoint, e, "{path}");
        }
        for (m, path) in [
            (Method::POST, "/t/i/patient/7/chat"),
            (Method::GET, "/t/i/patient/7/chat/inbound"),
            (Method::GET, "/t/i/patient/7/chat/"),
            (Method::GET, "/t/i/patient/7/chat/search/x"),
            (Method::GET, "/t/i/patient/7"),
            (Method::GET, "/t/i/patientz/7/chat"),
            (Method::GET, "/t/i/patient/7/chat/find%"),
            (Method::GET, "/t/%ff/patient/7/chat"),
        ] {
            assert_eq!(target(&m, path), None, "{m} {path}");
        }
    }

    #[test]
    fn query_decodes_plus_and_escapes_and_refuses_repeats() {
        let q = Query::parse(Some("query=Hello+w%C3%B6rld&pageSize=5&x")).unwrap();
        assert_eq!(q.get("query"), Some("Hello wörld"));
        assert_eq!(q.page_size().ok().flatten(), Some(5));
        assert_eq!(q.get("x"), Some(""));
        assert!(Query::parse(Some("a=1&a=2")).is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(None).unwrap().0.is_empty());
    }

    #[test]
    fn page_size_is_1_to_100_and_excludes_a_token() {
        let size = |s: &str| Query::parse(Some(s)).unwrap().page_size().ok();
        assert_eq!(size(""), Some(None));
        assert_eq!(size("pageSize=1"), Some(Some(1)));
        assert_eq!(size("pageSize=100"), Some(Some(100)));
        for bad in [
            "pageSize=0",
            "pageSize=101",
            "pageSize=",
            "pageSize=-1",
            "pageSize=2x",
        ] {
            assert_eq!(size(bad), None, "{bad}");
        }
        assert_eq!(size("pageSize=5&pageToken=abc"), None);
        // `size` is a synonym; both at once, or with a token, are refused.
        assert_eq!(size("size=7"), Some(Some(7)));
        assert_eq!(size("size=0"), None);
        assert_eq!(size("size=5&pageSize=5"), None);
        assert_eq!(size("size=5&pageToken=abc"), None);
        // An empty token is no token.
        assert_eq!(size("pageSize=5&pageToken="), Some(Some(5)));
    }

    #[test]
    fn query_words_fold_case_and_refuse_empty_queries() {
        let w = query_words("Hello, WORLD hello").ok().unwrap();
        assert_eq!(w, ["hello", "world"]);
        assert!(query_words("").is_err());
        assert!(query_words(" ,.!? ").is_err());
        let many: Vec<String> = (0..=MAX_QUERY_WORDS).map(|i| format!("w{i}")).collect();
        assert!(query_words(&many.join(" ")).is_err());
    }

    fn msg(id: u64) -> Message {
        Message {
            id: MsgId(id),
            room: crate::model::RoomId(1),
            sender: UserId(1),
            text: "x".into(),
            at_ms: 0,
            author: None,
            is_read: false,
            archived: false,
        }
    }

    #[test]
    fn cuts_follow_the_page_or_else_its_border() {
        let page = |ids: &[u64]| Page {
            messages: ids.iter().map(|&i| msg(i)).collect(),
            older: true,
            newer: true,
        };
        let b = |x| MsgId(x);
        assert_eq!(
            cuts(&page(&[9, 7, 4]), Border::Below(b(10))),
            (Border::Below(b(4)), Border::Above(b(9)))
        );
        let empty = page(&[]);
        assert_eq!(
            cuts(&empty, Border::Below(b(5))),
            (Border::Below(b(5)), Border::Above(b(4)))
        );
        assert_eq!(
            cuts(&empty, Border::AtOrBelow(b(5))),
            (Border::Below(b(6)), Border::Above(b(5)))
        );
        assert_eq!(
            cuts(&empty, Border::Above(b(5))),
            (Border::Below(b(6)), Border::Above(b(5)))
        );
        assert_eq!(
            cuts(&empty, Border::AtOrAbove(b(5))),
            (Border::Below(b(5)), Border::Above(b(4)))
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::error::Kind;

    /// Found by `a_percent_without_two_hex_digits_is_refused`:
    /// `u8::from_str_radix` takes a leading `+`, so `%+a` in a path or
    /// query was read as a newline instead of a 400 (or a 404 for a path).
    #[test]
    fn percent_sign_escape_bug_plus_is_not_a_hex_digit() {
        assert!(Query::parse(Some("query=%+a")).is_err());
        assert_eq!(target(&Method::GET, "/t/i/patient/%+a/chat"), None);
        assert_eq!(percent_decode("%+a", true), None);
        assert_eq!(percent_decode("%0A+x", true).as_deref(), Some("\n x"));
    }
    use crate::fuzzing::strategies::{json_value, mutated, object_with, odd_string};
    use proptest::prelude::*;

    /// Every byte as `%XX`: the most escaped spelling of `s`.
    fn escape(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    /// A request as `patient_request` reads it: method byte, then
    /// `path \n query \n body`.
    fn request(method: u8, path: &str, query: &str, body: &[u8]) -> Vec<u8> {
        let mut v = vec![method];
        v.extend_from_slice(format!("{path}\n{query}\n").as_bytes());
        v.extend_from_slice(body);
        v
    }

    fn body_like() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![4 => object_with(&["message", "externalIds"]), 1 => json_value()]
    }

    fn query_like() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            4 => proptest::sample::select(&[
                "pageSize", "pageToken", "includeArchived", "query", "date", "before",
            ][..]).prop_map(str::to_owned),
            1 => odd_string(),
        ];
        proptest::collection::vec((name, odd_string(), any::<bool>()), 0..5).prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v, esc)| {
                    if esc {
                        format!("{k}={}", escape(&v))
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_request_bytes_decode_or_are_a_400(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            crate::fuzzing::patient_request(&data);
        }

        #[test]
        fn request_shaped_input_decodes_or_is_a_400(
            method in any::<u8>(),
            path in prop_oneof![
                "/[a-z%0-9]{0,6}/[a-z%0-9]{0,6}/patient/[^/]{0,8}/chat(/(inbound|outbound|archive|search|find|[a-z%]{0,4}))?",
                "\\PC{0,30}",
            ],
            query in query_like(),
            body in body_like().prop_flat_map(|v| prop_oneof![Just(v.to_string()), mutated(v.to_string())]),
        ) {
            crate::fuzzing::patient_request(&request(method, &path, &query, body.as_bytes()));
        }

        #[test]
        fn path_parts_come_back_percent_decoded(
            tenant in "\\PC{1,12}",
            instance in "\\PC{1,12}",
            patient in "\\PC{1,12}",
        ) {
            let path = format!("/{}/{}/patient/{}/chat/find", escape(&tenant), escape(&instance), escape(&patient));
            prop_assert_eq!(
                target(&Method::GET, &path),
                Some(Target { tenant, instance, patient, endpoint: Endpoint::Find })
            );
        }

        #[test]
        fn query_parameters_come_back_decoded(
            pairs in proptest::collection::btree_map("\\PC{1,10}", "\\PC{0,10}", 0..5)
        ) {
            let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect();
            let Ok(parsed) = Query::parse(Some(&q.join("&"))) else {
                panic!("escaped pairs did not parse: {q:?}");
            };
            prop_assert_eq!(parsed.0, pairs.into_iter().collect::<HashMap<_, _>>());
        }

        #[test]
        fn a_percent_without_two_hex_digits_is_refused(
            bad in "%([^0-9A-Fa-f].|.[^0-9A-Fa-f]|.?)",
            tail in "[g-z]{0,3}",
        ) {
            let q = format!("a={bad}{tail}");
            match Query::parse(Some(&q)) {
                Err(Fail::Core(e)) => prop_assert_eq!(e.kind, Kind::BadRequest),
                Err(Fail::BadToken) => prop_assert!(false, "{q}: a token error"),
                Ok(parsed) => prop_assert!(false, "{q} parsed as {:?}", parsed.get("a")),
            }
        }

        #[test]
        fn page_size_is_taken_only_from_1_to_100(n in prop_oneof![0u64..200, any::<u64>()]) {
            let q = Query::parse(Some(&format!("pageSize={n}"))).ok().unwrap();
            let got = q.page_size().ok().flatten();
            prop_assert_eq!(got, (1..=100).contains(&n).then_some(n as usize));
        }

        #[test]
        fn well_typed_bodies_give_their_values(
            message in odd_string(),
            ids in proptest::collection::vec(odd_string(), 0..5),
        ) {
            let t: Text = http::json_object(json!({ "message": message }).to_string().as_bytes()).unwrap();
            prop_assert_eq!(t.message, message);
            let a: ArchiveBody = http::json_object(json!({ "externalIds": ids }).to_string().as_bytes()).unwrap();
            prop_assert_eq!(a.external_ids, ids);
        }
    }
}
