//! The built-in web client: its static files (`web/` at the top of the
//! repository — HTML, one stylesheet, plain JavaScript modules, no build
//! step), compiled into the binary and served at `/` and `/app/…`.
//!
//! Every answer carries a strong `ETag` (a hash of the bytes; a matching
//! `If-None-Match` gets `304`), `Cache-Control: no-cache` (the URLs carry
//! no version, so a browser revalidates and an upgrade is seen at once)
//! and strict security headers: a Content-Security-Policy that allows only
//! this origin's own files and connections (no inline script or style, no
//! framing), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
//! `X-Content-Type-Options: nosniff`.
//!
//! The client speaks only parlor's public API (see `web/js/`); this module
//! knows nothing of it and touches no state.

use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::net::http::{self, Resp};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $file)),
        }
    };
}

/// Every file of the client, by the path it is served at.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/app/app.css", "app.css", CSS),
    asset!("/app/icon.svg", "icon.svg", SVG),
    asset!("/app/main.js", "js/main.js", JS),
    asset!("/app/api.js", "js/api.js", JS),
    asset!("/app/live.js", "js/live.js", JS),
    asset!("/app/store.js", "js/store.js", JS),
    asset!("/app/view.js", "js/view.js", JS),
];

/// Only this origin's files and connections (`'self'` covers `ws:`/`wss:`
/// to the same host in CSP 3); nothing inline, no plugins, no framing, no
/// form posts (the sign-in form is sent by script).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether `path` is one of the web client's files (the router sends
/// these here). Exact paths only: `/app/…` is also a possible tenant name
/// of the patient dialect's `/{tenant}/{instance}/patient/…`.
pub fn owns(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// `GET /`, `GET /app/<file>` — the client's files, `304` when the
/// browser's copy is current; an unknown file is `404 NOT_FOUND`.
pub fn serve<B>(req: &Request<B>) -> Result<Resp> {
    let path = req.uri().path();
    let asset = ASSETS
        .iter()
        .find(|a| a.path == path)
        .ok_or_else(|| Error::not_found(format!("no file {path}")))?;
    let etag = etag(asset.body);
    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_etag(v, &etag));
    let mut r = if fresh {
        http::empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut r = Response::new(http::full(asset.body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = r.headers_mut();
    h.insert(
        ETAG,
        HeaderValue::from_str(&etag).expect("hex is a header value"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h);
    Ok(r)
}

fn secure(h: &mut hyper::HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
}

/// A strong validator: the first 128 bits of the bytes' SHA-256, quoted.
/// (Hashing a few KiB per request costs microseconds; no cache needed.)
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `If-None-Match`: `*` or a list of tags, compared weakly (RFC 9110
/// §13.1.2: a `W/` prefix is ignored).
fn matches_etag(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn get(path: &str, inm: Option<&str>) -> Resp {
        let mut b = Request::builder().uri(path);
        if let Some(v) = inm {
            b = b.header(IF_NONE_MATCH, v);
        }
        serve(&b.body(()).unwrap()).unwrap()
    }

    async fn body(r: Resp) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_tag_and_security_headers() {
        for a in ASSETS {
            let r = get(a.path, None);
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            let h = r.headers();
            assert_eq!(h[CONTENT_TYPE], a.content_type);
            assert_eq!(h[ETAG], etag(a.body).as_str());
            assert_eq!(h[CACHE_CONTROL], "no-cache");
            assert_eq!(h[X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[REFERRER_POLICY], "no-referrer");
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(!csp.contains("unsafe"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(body(r).await, a.body, "{}", a.path);
        }
    }

    #[tokio::test]
    async fn a_matching_if_none_match_gets_304_without_a_body() {
        let tag = etag(ASSETS[0].body);
        for inm in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"x\", {tag}"),
            "*".into(),
        ] {
            let r = get("/", Some(&inm));
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
            assert_eq!(r.headers()[ETAG], tag.as_str());
            assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
            assert!(body(r).await.is_empty());
        }
        assert_eq!(get("/", Some("\"stale\"")).status(), StatusCode::OK);
    }

    #[test]
    fn unknown_files_are_not_found_and_others_paths_are_not_ours() {
        let req = Request::builder().uri("/app/nope.js").body(()).unwrap();
        assert_eq!(serve(&req).unwrap_err().kind, crate::error::Kind::NotFound);
        assert!(owns("/") && owns("/app/main.js"));
        assert!(!owns("/ws") && !owns("/chat/rooms") && !owns("/app/nope.js"));
        assert!(!owns("/app/main/patient/7/chat"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<style"));
        assert!(!html.contains("style="));
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        assert!(!html.contains("onclick") && !html.contains("javascript:"));
    }
}
