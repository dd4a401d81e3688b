//! What a receiver gets (API.md §5, "Webhook"): the body, its signature and
//! the headers, built from a pending delivery. Pure: no I/O, no clock.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::model::{external_id, hex, Delivery, Webhook};

/// The JSON body, fields in the order of the seed's example.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    patient_id: String,
    patient_url: String,
    tenant_name: &'a str,
    instance_name: &'a str,
    message: &'a str,
}

/// The exact body bytes: these are what is signed and what is sent.
pub fn body(public_url: &str, d: &Delivery) -> Vec<u8> {
    let patient_id = d.patient.to_string();
    let body = Body {
        patient_url: patient_url(
            public_url,
            &d.workspace.tenant,
            &d.workspace.instance,
            &patient_id,
        ),
        patient_id,
        tenant_name: &d.workspace.tenant,
        instance_name: &d.workspace.instance,
        message: &d.text,
    };
    serde_json::to_vec(&body).expect("serializing a webhook body")
}

/// `<public-url>/<tenant>/<instance>/patients/<patientId>`, each segment
/// percent-encoded where it would otherwise change the path's meaning.
pub fn patient_url(public_url: &str, tenant: &str, instance: &str, patient: &str) -> String {
    format!(
        "{}/{}/{}/patients/{}",
        public_url.trim_end_matches('/'),
        segment(tenant),
        segment(instance),
        segment(patient)
    )
}

/// Percent-encodes a path segment: everything but RFC 3986's unreserved
/// characters and the sub-delimiters, `:` and `@` (a `pchar`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `X-Webhook-Id`: the message's `externalId`, so every retry of one event
/// carries the same id and two events never share one.
pub fn webhook_id(d: &Delivery) -> String {
    external_id(d.message)
}

/// `X-Webhook-Signature`: `sha256=` and the lower-case hex HMAC-SHA256 of
/// the exact body bytes, keyed by the API secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Every header of a delivery but `Host` and `Content-Length` (the client
/// sets those), in the order they are sent.
pub fn headers(hook: &Webhook, d: &Delivery, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        (
            "user-agent",
            concat!("parlor/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("x-webhook-api-key", hook.api_key.clone()),
        ("x-webhook-api-secret", hook.api_secret.clone()),
        ("x-webhook-id", webhook_id(d)),
        ("x-webhook-signature", signature(&hook.api_secret, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MsgId, UserId, Workspace};

    fn delivery(text: &str) -> Delivery {
        Delivery {
            message: MsgId(42),
            patient: UserId(7),
            workspace: Workspace::new("test-den", "chat2").unwrap(),
            text: text.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn signature_matches_the_rfc_4231_hmac_sha256_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn body_has_exactly_the_seed_fields_in_order() {
        let b = body("http://localhost:5000/", &delivery("Webhook test..."));
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"patientId":"7","patientUrl":"http://localhost:5000/test-den/chat2/patients/7","tenantName":"test-den","instanceName":"chat2","message":"Webhook test..."}"#
        );
    }

    #[test]
    fn body_escapes_text_as_json_and_keeps_unicode() {
        let b = body("http://h", &delivery("a \"quote\"\nand ü"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["message"], "a \"quote\"\nand ü");
    }

    #[test]
    fn patient_url_encodes_segments_that_would_change_the_path() {
        assert_eq!(
            patient_url("https://chat.example/base/", "a b", "x/y", "9"),
            "https://chat.example/base/a%20b/x%2Fy/patients/9"
        );
        assert_eq!(
            patient_url("http://h", "Klinik-Köln", "main", "1"),
            "http://h/Klinik-K%C3%B6ln/main/patients/1"
        );
    }

    #[test]
    fn headers_carry_key_secret_stable_id_and_signature_of_the_body() {
        let hook = Webhook {
            url: "http://127.0.0.1:1/".into(),
            api_key: "key".into(),
            api_secret: "secret".into(),
        };
        let d = delivery("hi");
        let b = body("http://h", &d);
        let h = headers(&hook, &d, &b);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get("x-webhook-api-key"), "key");
        assert_eq!(get("x-webhook-api-secret"), "secret");
        assert_eq!(get("x-webhook-id"), "IM0000000000000000000000000000002a");
        assert_eq!(get("x-webhook-signature"), signature("secret", &b));
        assert_eq!(get("content-type"), "application/json");
    }
}
