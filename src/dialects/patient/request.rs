//! The patient dialect's requests, read: which endpoint a method and path
//! name (`owns`, `target`), the query parameters (`Query`: page size,
//! page token, flags), a search query's words, and the JSON bodies of
//! `inbound`/`outbound` and `archive`. Pure: no I/O.

use std::collections::HashMap;

use hyper::Method;
use serde::Deserialize;

use super::tokens::Token;
use super::{bad_request, Result, MAX_QUERY_WORDS};
use crate::core::pages::MAX_PAGE;
use crate::model::words;
use crate::net::http::percent_decode;

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// Whether `path` is this dialect's (`/{tenant}/{instance}/patient/…`,
/// or `/patients/…` as Welkin's live API and SDK write it); the router
/// hands such paths to [`super::route`], which parses the rest.
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
    pub(super) tenant: String,
    pub(super) instance: String,
    pub(super) patient: String,
    pub(super) endpoint: Endpoint,
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
// Bodies and search words
// ---------------------------------------------------------------------------

/// The body of `inbound` and `outbound`: `{"message"}`.
#[derive(Deserialize)]
pub(crate) struct Text {
    pub(super) message: String,
}

/// The body of `archive`: `{"externalIds":[…]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArchiveBody {
    pub(super) external_ids: Vec<String>,
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
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::dialects::patient::Fail;
    use crate::error::Kind;
    use crate::net::http;
    use serde_json::json;

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
