//! API.md §7 over HTTP: `GET /admin/audit`, the audit trail paged for
//! the operator (an admin of any workspace). Translation only: the trail,
//! who may read it and how much a page may scan are `core::audit`'s; the
//! page token is this module's wire form (the seq the next page starts
//! at, base64url).

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::{caller, Ctx};
use crate::core::audit::{self, Filter, DEFAULT_PAGE, MAX_PAGE};
use crate::core::blocking;
use crate::error::{Error, Result};
use crate::model::time::parse_rfc3339;
use crate::model::UserId;
use crate::net::http::{self, percent_decode, Resp};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn token(seq: u64) -> String {
    B64.encode(seq.to_be_bytes())
}

fn parse_token(s: &str) -> Result<u64> {
    B64.decode(s)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .filter(|&seq| seq >= 1)
        .ok_or_else(|| Error::bad_request("pageToken is not one this endpoint gave"))
}

/// What a `GET /admin/audit` query asks for.
#[derive(Debug, Default)]
pub(crate) struct Query {
    filter: Filter,
    size: usize,
    from: Option<u64>,
}

/// The query string: `tenant`, `instance`, `patient`, `kind`, `since`,
/// `pageSize`, `pageToken`, each at most once; anything else is refused
/// (a mistyped filter must not widen an audit query silently). Pure.
pub(crate) fn parse_query(q: Option<&str>) -> Result<Query> {
    let mut out = Query {
        size: DEFAULT_PAGE,
        ..Query::default()
    };
    let mut seen = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Error::bad_request("the query string is not valid percent-encoded UTF-8");
        let k = percent_decode(k, true).ok_or_else(bad)?;
        let v = percent_decode(v, true).ok_or_else(bad)?;
        if seen.contains(&k) {
            return Err(Error::bad_request(format!("{k} is given twice")));
        }
        let nonempty = |v: String| {
            if v.is_empty() {
                Err(Error::bad_request(format!("{k} must not be empty")))
            } else {
                Ok(Some(v))
            }
        };
        match k.as_str() {
            "tenant" => out.filter.tenant = nonempty(v)?,
            "instance" => out.filter.instance = nonempty(v)?,
            "patient" => {
                out.filter.patient = Some(
                    UserId::parse(&v)
                        .ok_or_else(|| Error::bad_request("patient must be a user id"))?,
                )
            }
            "kind" => {
                out.filter.kind = Some(audit::Kind::parse(&v).ok_or_else(|| {
                    let kinds: Vec<&str> = audit::Kind::ALL.iter().map(|k| k.as_str()).collect();
                    Error::bad_request(format!("kind must be one of {}", kinds.join(", ")))
                })?)
            }
            "since" => {
                let ms = parse_rfc3339(&v).ok_or_else(|| {
                    Error::bad_request("since must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
                })?;
                out.filter.since_ms = Some(u64::try_from(ms).unwrap_or(0));
            }
            "pageSize" => {
                out.size = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "pageSize must be an integer from 1 to {MAX_PAGE}"
                        ))
                    })?
            }
            "pageToken" => out.from = Some(parse_token(&v)?),
            _ => return Err(Error::bad_request(format!("unknown query parameter {k}"))),
        }
        seen.push(k);
    }
    Ok(out)
}

/// What only an admin may do here.
const READ: &str = "read the audit trail";

/// `GET /admin/audit?tenant=&instance=&patient=&kind=&since=&pageSize=
/// &pageToken=` → `200 {"records":[…],"nextPageToken"}`, oldest first;
/// `nextPageToken` is `null` once the trail's end is reached. A page ends
/// early (fewer records, a token to go on) once it has looked at
/// `core::audit::SCAN_PER_PAGE` records.
pub async fn list(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    caller.actor().admin(READ)?;
    let q = parse_query(req.uri().query())?;
    let core = ctx.core.clone();
    let page = blocking(move || {
        let admin = caller.actor().admin(READ)?;
        core.audit_page(&admin, &q.filter, q.size, q.from)
    })
    .await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "records": page.records, "nextPageToken": page.next.map(token) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn the_query_takes_each_filter_once_and_refuses_the_rest() {
        let q = parse_query(Some(
            "tenant=acme&instance=north%20wing&patient=7&kind=chat.read&since=2024-01-02T00:00:00Z&pageSize=5",
        ))
        .unwrap();
        assert_eq!(q.filter.tenant.as_deref(), Some("acme"));
        assert_eq!(q.filter.instance.as_deref(), Some("north wing"));
        assert_eq!(q.filter.patient, Some(UserId(7)));
        assert_eq!(q.filter.kind, Some(audit::Kind::ChatRead));
        assert_eq!(q.filter.since_ms, Some(1_704_153_600_000));
        assert_eq!((q.size, q.from), (5, None));
        let q = parse_query(None).unwrap();
        assert_eq!((q.size, q.from), (DEFAULT_PAGE, None));
        let q = parse_query(Some(&format!("pageToken={}", token(300)))).unwrap();
        assert_eq!(q.from, Some(300));
        for bad in [
            "pageSize=0",
            "pageSize=1001",
            "pageSize=x",
            "kind=chat.delete",
            "patient=-1",
            "since=yesterday",
            "tenant=",
            "tenant=a&tenant=b",
            "pageToken=AAAA",
            &format!("pageToken={}", token(0)),
            "tennant=a",
            "tenant=%zz",
        ] {
            let e = parse_query(Some(bad)).expect_err(bad);
            assert_eq!(e.kind, Kind::BadRequest, "{bad}");
        }
    }
}
