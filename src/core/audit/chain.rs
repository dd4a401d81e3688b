//! The chain itself: a record's canonical JSON, its hash over the one
//! before, sealing an entry as the next record, and verifying the whole
//! trail. Pure: no store, no writer (see the module above).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Entry;
use crate::error::Result;
use crate::model::time::rfc3339;
use crate::model::{hex, hex_into};
use crate::store::{Sealed, StoredAudit};

/// A record as `GET /admin/audit` and `parlor audit export` show it; its
/// canonical JSON is this without `hash` (see the module header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub kind: String,
    pub actor: String,
    /// `null` for daemon-wide events (backup, restore, an unknown sign-in).
    pub tenant: Option<String>,
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    pub detail: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Record {
    /// The canonical JSON: the record without `hash`.
    pub fn canonical(&self) -> Vec<u8> {
        let bare = Record {
            hash: None,
            ..self.clone()
        };
        serde_json::to_vec(&bare).expect("serializing a record")
    }
}

impl Sealed {
    /// The record, with its hash.
    pub fn record(&self) -> std::result::Result<Record, String> {
        let mut r: Record =
            serde_json::from_str(&self.json).map_err(|e| format!("not a record ({e})"))?;
        if r.hash.is_some() {
            return Err("its JSON holds a hash".into());
        }
        r.hash = Some(hex(&self.hash));
        Ok(r)
    }
}

/// The chain: SHA-256 of the previous hash (hex) and the canonical JSON.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut prev_hex = [0u8; 64];
    hex_into(prev, &mut prev_hex);
    let mut h = Sha256::new();
    h.update(prev_hex);
    h.update(canonical);
    h.finalize().into()
}

/// The chain's end: the newest record's seq, hash and time. The writer's
/// (`commit::Counters`), and `restore`'s while no writer runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
    pub at_ms: u64,
}

impl Head {
    /// Resumed from the store's newest record. An unreadable one is
    /// chained past from a zero hash (`parlor audit verify` names it);
    /// the trail goes on, and nothing is refused for it.
    pub fn resume(last: Option<(u64, StoredAudit)>) -> Head {
        match last {
            None => Head::default(),
            Some((seq, Ok(s))) => Head {
                seq,
                hash: s.hash,
                at_ms: s.at_ms,
            },
            Some((seq, Err(why))) => {
                tracing::error!(
                    seq,
                    why,
                    "the newest audit record is unreadable; the trail goes on after it (`parlor audit verify` names it)"
                );
                Head {
                    seq,
                    ..Head::default()
                }
            }
        }
    }

    /// `entry` sealed as the record after this head, at `now_ms`: the
    /// record to store and the new head.
    pub fn seal(&self, now_ms: u64, actor: String, e: Entry) -> (Head, Sealed) {
        let seq = self.seq + 1;
        let ws = e.workspace.as_ref();
        // The canonical JSON, as `Record::canonical` writes it.
        let json = serde_json::to_string(&Canonical {
            seq,
            at: &rfc3339(now_ms),
            kind: e.kind.as_str(),
            actor: &actor,
            tenant: ws.map(|w| w.tenant.as_str()),
            instance: ws.map(|w| w.instance.as_str()),
            patient: e.patient.map(|p| p.0),
            detail: &e.detail,
        })
        .expect("serializing a record");
        let hash = chain_hash(&self.hash, json.as_bytes());
        let head = Head {
            seq,
            hash,
            at_ms: now_ms,
        };
        (
            head,
            Sealed {
                at_ms: now_ms,
                json,
                hash,
            },
        )
    }
}

/// What sealing serializes: a [`Record`] without `hash`, borrowed from
/// the entry (its members, in the same order, serialize as `Record`'s
/// do; a user id as a string).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    at: &'a str,
    kind: &'a str,
    actor: &'a str,
    tenant: Option<&'a str>,
    instance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_string")]
    patient: Option<u64>,
    detail: &'a BTreeMap<&'static str, Value>,
}

fn as_string<S: serde::Serializer>(id: &Option<u64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// What `parlor audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Records that verified, from seq 1.
    pub records: u64,
    /// The hash of the last of them (64 `0`s if none).
    pub head: String,
    /// The first record that does not, and why.
    pub bad: Option<Bad>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bad {
    pub seq: u64,
    pub why: String,
}

/// Recomputes the chain over the stored records (ascending by seq): every
/// seq from 1 present, each record readable, in canonical form, with its
/// own seq and time, and its hash chained to the previous one.
pub fn verify_chain(
    stored: impl Iterator<Item = crate::store::Result<(u64, StoredAudit)>>,
) -> Result<Verdict> {
    let (mut prev, mut records) = ([0u8; 32], 0u64);
    for item in stored {
        let (seq, sealed) = item?;
        let expected = records + 1;
        let fault = if seq != expected {
            Some((
                expected,
                format!("it is missing (the next stored is {seq})"),
            ))
        } else {
            match sealed {
                Err(why) => Some((seq, format!("it is unreadable ({why})"))),
                Ok(s) => check(&prev, seq, &s)
                    .err()
                    .map(|why| (seq, why))
                    .or_else(|| {
                        prev = s.hash;
                        None
                    }),
            }
        };
        if let Some((seq, why)) = fault {
            return Ok(Verdict {
                records,
                head: hex(&prev),
                bad: Some(Bad { seq, why }),
            });
        }
        records += 1;
    }
    Ok(Verdict {
        records,
        head: hex(&prev),
        bad: None,
    })
}

fn check(prev: &[u8; 32], seq: u64, s: &Sealed) -> std::result::Result<(), String> {
    let r = s.record()?;
    if r.seq != seq {
        return Err(format!("its JSON says seq {}", r.seq));
    }
    if r.canonical() != s.json.as_bytes() {
        return Err("its JSON is not in canonical form".into());
    }
    if rfc3339(s.at_ms) != r.at {
        return Err("its time index does not match its time".into());
    }
    if chain_hash(prev, s.json.as_bytes()) != s.hash {
        return Err("its hash does not match the previous hash and its content".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Actor, Kind};
    use super::*;
    use crate::model::{UserId, Workspace};

    fn known() -> Record {
        let mut detail = BTreeMap::new();
        detail.insert("room".to_string(), Value::from("4"));
        detail.insert("count".to_string(), Value::from(3));
        detail.insert("last".to_string(), Value::from("12"));
        detail.insert("first".to_string(), Value::from("10"));
        Record {
            seq: 1,
            at: "2024-01-02T03:04:05.678Z".into(),
            kind: "chat.read".into(),
            actor: "7".into(),
            tenant: Some("clinic".into()),
            instance: Some("main".into()),
            patient: Some("9".into()),
            detail,
            hash: Some("ignored".into()),
        }
    }

    const KNOWN_JSON: &str = r#"{"seq":1,"at":"2024-01-02T03:04:05.678Z","kind":"chat.read","actor":"7","tenant":"clinic","instance":"main","patient":"9","detail":{"count":3,"first":"10","last":"12","room":"4"}}"#;

    #[test]
    fn canonical_json_has_fixed_member_order_sorted_detail_and_no_hash() {
        assert_eq!(String::from_utf8(known().canonical()).unwrap(), KNOWN_JSON);
        // No patient: the member is left out; no workspace: nulls.
        let r = Record {
            patient: None,
            tenant: None,
            instance: None,
            detail: BTreeMap::new(),
            ..known()
        };
        assert_eq!(
            String::from_utf8(r.canonical()).unwrap(),
            r#"{"seq":1,"at":"2024-01-02T03:04:05.678Z","kind":"chat.read","actor":"7","tenant":null,"instance":null,"detail":{}}"#
        );
    }

    /// Pinned with a tool outside parlor:
    /// `printf '%064d%s' 0 "$KNOWN_JSON" | sha256sum`.
    #[test]
    fn hash_of_a_known_record_is_sha256_of_the_previous_hex_and_its_json() {
        let h = chain_hash(&[0; 32], KNOWN_JSON.as_bytes());
        assert_eq!(hex(&h), KNOWN_HASH);
        let (head, sealed) = Head::default().seal(
            1_704_164_645_678,
            "7".into(),
            Entry::new(Kind::ChatRead, Actor::User(UserId(7)))
                .workspace(&Workspace::new("clinic", "main").unwrap())
                .patient(UserId(9))
                .detail("room", "4")
                .detail("count", 3)
                .detail("first", "10")
                .detail("last", "12"),
        );
        assert_eq!(sealed.json, KNOWN_JSON);
        assert_eq!(hex(&sealed.hash), KNOWN_HASH);
        assert_eq!((head.seq, head.hash), (1, sealed.hash));
        assert_eq!(sealed.record().unwrap().hash.as_deref(), Some(KNOWN_HASH));
    }

    /// Sealing writes what `Record::canonical` writes, whatever the
    /// entry holds: `verify` compares the two.
    #[test]
    fn a_sealed_record_is_in_canonical_form() {
        let ws = Workspace::new("clinic", "main").unwrap();
        let entries = [
            Entry::new(Kind::Backup, Actor::Cli),
            Entry::new(Kind::UserErase, Actor::User(UserId(3)))
                .workspace(&ws)
                .patient(UserId(u64::MAX))
                .detail("names", vec!["a\"b".to_string(), "\\\n\u{1}é".into()])
                .detail("messages", 12_345_678_901u64)
                .detail("addr", "::1"),
            Entry::new(Kind::AuthFail, Actor::Unknown)
                .workspace(&ws)
                .detail("zeta", "last")
                .detail("alpha", "first"),
        ];
        let mut head = Head::default();
        for e in entries {
            let (h, sealed) = head.seal(1_700_000_000_000, "actor \"x\"".into(), e);
            assert_eq!(
                String::from_utf8(sealed.record().unwrap().canonical()).unwrap(),
                sealed.json
            );
            assert_eq!(h.hash, chain_hash(&head.hash, sealed.json.as_bytes()));
            head = h;
        }
    }

    const KNOWN_HASH: &str = "ff862b2eebb1a678476000b6bb45fa6822146914a1a6dacbefc6b097c6a660c4";

    fn chain(n: u64) -> Vec<(u64, StoredAudit)> {
        let mut head = Head::default();
        (1..=n)
            .map(|i| {
                let e =
                    Entry::new(Kind::AuthLogin, Actor::User(UserId(i))).detail("addr", "127.0.0.1");
                let (h, s) = head.seal(1_700_000_000_000 + i, i.to_string(), e);
                head = h;
                (i, Ok(s))
            })
            .collect()
    }

    fn verdict(records: Vec<(u64, StoredAudit)>) -> Verdict {
        verify_chain(records.into_iter().map(Ok)).unwrap()
    }

    #[test]
    fn verify_accepts_an_intact_chain_and_names_a_flipped_byte() {
        let good = verdict(chain(5));
        assert_eq!((good.records, good.bad), (5, None));
        assert_eq!(verdict(vec![]).head, "0".repeat(64));
        for at in [0, 10, 40] {
            let mut c = chain(5);
            let Ok(s) = &mut c[2].1 else { unreachable!() };
            let mut bytes = s.json.clone().into_bytes();
            bytes[at] ^= 0x01;
            s.json = String::from_utf8(bytes).unwrap();
            let v = verdict(c);
            assert_eq!(v.records, 2, "flip at {at}");
            assert_eq!(v.bad.unwrap().seq, 3, "flip at {at}");
        }
        // A flipped hash byte breaks this record's check.
        let mut c = chain(5);
        if let Ok(s) = &mut c[3].1 {
            s.hash[0] ^= 0x80;
        }
        assert_eq!(verdict(c).bad.unwrap().seq, 4);
        // A record rewritten with a hash recomputed from its new content
        // breaks the next one's chain.
        let mut c = chain(5);
        if let Ok(s) = &mut c[1].1 {
            s.json = s.json.replace("127.0.0.1", "127.0.0.2");
            let prev = match &c[0].1 {
                Ok(p) => p.hash,
                Err(_) => unreachable!(),
            };
            if let Ok(s) = &mut c[1].1 {
                s.hash = chain_hash(&prev, s.json.as_bytes());
            }
        }
        assert_eq!(verdict(c).bad.unwrap().seq, 3);
    }

    #[test]
    fn verify_names_a_gap_an_unreadable_record_and_a_wrong_time_index() {
        let mut c = chain(5);
        let _ = c.remove(2);
        let v = verdict(c);
        assert_eq!(v.records, 2);
        let bad = v.bad.unwrap();
        assert_eq!(bad.seq, 3);
        assert!(bad.why.contains("missing"), "{}", bad.why);
        let mut c = chain(3);
        c[0].1 = Err("undecodable value".into());
        assert_eq!(verdict(c).bad.unwrap().seq, 1);
        let mut c = chain(3);
        if let Ok(s) = &mut c[1].1 {
            s.at_ms += 1;
        }
        assert_eq!(verdict(c).bad.unwrap().seq, 2);
        // The first record must be seq 1.
        let mut c = chain(3);
        let _ = c.remove(0);
        assert_eq!(verdict(c).bad.unwrap().seq, 1);
    }
}
