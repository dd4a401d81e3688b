//! The store as a sequence of sled-independent records: what `parlor
//! backup` writes and `parlor restore` reads (and what a migration away
//! from sled would read). Only primary records are exported; `import`
//! writes them with the same `WriteBatch` methods the writer uses, and
//! what follows from them by the core's rules (care team, patient-chat
//! index, search postings) its caller adds through a callback, in the same
//! batch (`core::derived`: the writer's jobs call the same rules), so a
//! restored store cannot disagree with itself.
//!
//! Order: page-token key, users, tokens, rooms, participants, DMs,
//! messages (by id), webhooks, pending deliveries, dead deliveries, API
//! clients (each with the hashes of its tokens), retention policies, legal
//! holds, erased patients' chats, the audit trail (by seq,
//! as stored: its hashes stay valid) — rooms before their messages, so
//! what follows from a message may depend on its room.

use serde::{Deserialize, Serialize};

use super::audit::Sealed;
use super::keys::*;
use super::{codec, Result, Store, StoreError, TokenRecord, WriteBatch};
use crate::model::{
    hex, ApiClient, DeadDelivery, Delivery, Hold, Message, MsgId, Participant, Room, RoomId, User,
    UserId, Webhook, Workspace,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    PageTokenKey {
        key: String,
    },
    User {
        user: User,
    },
    Token {
        hash: String,
        user: UserId,
        created_ms: u64,
    },
    Room {
        room: Room,
    },
    Participant {
        room: RoomId,
        user: UserId,
        marker: Participant,
    },
    Dm {
        a: UserId,
        b: UserId,
        room: RoomId,
    },
    Message {
        message: Message,
    },
    Webhook {
        workspace: Workspace,
        webhook: Webhook,
    },
    Delivery {
        delivery: Delivery,
    },
    /// A delivery set aside as dead (kept until retried).
    DeadDelivery {
        dead: DeadDelivery,
    },
    ApiClient {
        client: ApiClient,
        /// Hex SHA-256 of each token issued to it (its `Token` records are
        /// exported as everyone's): what a rotation must revoke.
        tokens: Vec<String>,
    },
    /// A workspace's retention in days (API.md §8).
    Retention {
        workspace: Workspace,
        days: u64,
    },
    /// A legal hold: on a patient's chat, or (`patient` absent) on the
    /// whole workspace.
    Hold {
        workspace: Workspace,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patient: Option<UserId>,
        hold: Hold,
    },
    /// The chat of an erased patient: emptied by every purge.
    ErasedChat {
        room: RoomId,
    },
    /// An audit record (`Sealed`): its canonical JSON, hash
    /// (hex) and time, kept exactly.
    Audit {
        seq: u64,
        at_ms: u64,
        json: String,
        hash: String,
    },
    /// An audit record whose stored bytes cannot be decoded: the bytes
    /// (hex), so that the restored trail is the same, damage included
    /// (`parlor audit verify` names it).
    AuditUnreadable {
        seq: u64,
        bytes: String,
    },
}

fn unhex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let bad = || StoreError(format!("bad hex value {s:?}"));
    if s.len() != 2 * N {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn unhex_vec(s: &str) -> Result<Vec<u8>> {
    let bad = || StoreError(format!("bad hex value {s:?}"));
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    (0..s.len() / 2)
        .map(|i| {
            s.get(2 * i..2 * i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// `tenant 0 instance 0` after the tag byte.
pub(super) fn parse_workspace(key: &[u8]) -> Result<Workspace> {
    let mut parts = key[1..].split(|&b| b == 0);
    let (Some(t), Some(i)) = (parts.next(), parts.next()) else {
        return Err(StoreError("bad workspace key".into()));
    };
    let s = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| StoreError("bad workspace key".into()))
    };
    Ok(Workspace {
        tenant: s(t)?,
        instance: s(i)?,
    })
}

impl Store {
    /// Calls `out` with every primary record, messages up to `upto` (the
    /// visible id: a consistent cut of the log). Other records are read as
    /// they are while the export runs.
    pub fn export(&self, upto: MsgId, out: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        if let Some(v) = self.db().get(PAGE_KEY_KEY)? {
            out(Record::PageTokenKey { key: hex(&v) })?;
        }
        for kv in self.db().scan_prefix([USER]) {
            let (_, v) = kv?;
            out(Record::User {
                user: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().scan_prefix([TOKEN]) {
            let (k, v) = kv?;
            let rec: TokenRecord = codec::decode(&v).map_err(StoreError)?;
            out(Record::Token {
                hash: hex(&k[1..]),
                user: rec.user,
                created_ms: rec.created_ms,
            })?;
        }
        for kv in self.db().scan_prefix([ROOM]) {
            let (_, v) = kv?;
            out(Record::Room {
                room: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().scan_prefix([PARTICIPANT]) {
            let (k, v) = kv?;
            out(Record::Participant {
                room: RoomId(read_u64(&k[1..9]).unwrap_or(0)),
                user: UserId(tail_u64(&k)),
                marker: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().scan_prefix([DM]) {
            let (k, v) = kv?;
            out(Record::Dm {
                a: UserId(read_u64(&k[1..9]).unwrap_or(0)),
                b: UserId(tail_u64(&k)),
                room: RoomId(read_u64(&v).unwrap_or(0)),
            })?;
        }
        for kv in self.db().range(one(LOG, 1)..=one(LOG, upto.0)) {
            let (k, _) = kv?;
            if let Some(message) = self.message(MsgId(tail_u64(&k)))? {
                out(Record::Message { message })?;
            }
        }
        for kv in self.db().scan_prefix([WEBHOOK]) {
            let (k, v) = kv?;
            out(Record::Webhook {
                workspace: parse_workspace(&k)?,
                webhook: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().range(one(OUTBOX, 0)..=one(OUTBOX, upto.0)) {
            let (_, v) = kv?;
            out(Record::Delivery {
                delivery: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().range(one(DEAD, 0)..=one(DEAD, upto.0)) {
            let (_, v) = kv?;
            out(Record::DeadDelivery {
                dead: codec::decode(&v).map_err(StoreError)?,
            })?;
        }
        for kv in self.db().scan_prefix([API_CLIENT]) {
            let (_, v) = kv?;
            let client: ApiClient = codec::decode(&v).map_err(StoreError)?;
            let tokens = self.client_tokens(client.user)?;
            out(Record::ApiClient {
                tokens: tokens.iter().map(|t| hex(t)).collect(),
                client,
            })?;
        }
        for (workspace, days) in self.retentions()? {
            out(Record::Retention { workspace, days })?;
        }
        for (workspace, patient, hold) in self.holds()? {
            out(Record::Hold {
                workspace,
                patient,
                hold,
            })?;
        }
        for room in self.erased_chats()? {
            out(Record::ErasedChat { room })?;
        }
        for item in self.audit_from(1) {
            out(match item? {
                (seq, Ok(s)) => Record::Audit {
                    seq,
                    at_ms: s.at_ms,
                    json: s.json,
                    hash: hex(&s.hash),
                },
                (seq, Err(_)) => Record::AuditUnreadable {
                    seq,
                    bytes: hex(&self.audit_raw(seq)?.unwrap_or_default()),
                },
            })?;
        }
        Ok(())
    }

    /// Whether the store holds no data: only meta keys (format version,
    /// page-token key), which sort below every other keyspace.
    pub fn is_fresh(&self) -> Result<bool> {
        Ok(self.db().range([META + 1]..).next().is_none())
    }

    /// Writes records (in `export` order) into this store, each with what
    /// `derive` adds to its batch for it (the records derived from it),
    /// through the write-ahead log (it holds the whole history, see
    /// `Store::open_with`), then checkpoints. Meant for a fresh store
    /// (`restore`).
    pub fn import(
        &self,
        records: &mut dyn Iterator<Item = Result<Record>>,
        derive: &mut dyn FnMut(&Record, &mut WriteBatch),
    ) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let (mut n, mut pending) = (0u64, 0usize);
        for rec in records {
            let rec = rec?;
            derive(&rec, &mut batch);
            match rec {
                Record::PageTokenKey { key } => {
                    batch.insert(PAGE_KEY_KEY, &unhex::<32>(&key)?);
                }
                Record::User { user } => batch.put_user(&user),
                Record::Token {
                    hash,
                    user,
                    created_ms,
                } => {
                    batch.put_token(&unhex::<32>(&hash)?, &TokenRecord { user, created_ms });
                }
                Record::Room { room } => batch.put_room(&room),
                Record::Participant { room, user, marker } => {
                    batch.put_participant(room, user, &marker)
                }
                Record::Dm { a, b, room } => batch.put_dm(a, b, room),
                Record::Message { message } => batch.put_message(&message),
                Record::Webhook { workspace, webhook } => batch.put_webhook(&workspace, &webhook),
                Record::Delivery { delivery } => batch.put_delivery(&delivery),
                Record::DeadDelivery { dead } => batch.put_dead(&dead),
                Record::ApiClient { client, tokens } => {
                    for t in &tokens {
                        batch.put_client_token(client.user, &unhex::<32>(t)?);
                    }
                    batch.put_api_client(&client);
                }
                Record::Retention { workspace, days } => {
                    batch.put_retention(&workspace, Some(days))
                }
                Record::Hold {
                    workspace,
                    patient,
                    hold,
                } => batch.put_hold(&workspace, patient, Some(&hold)),
                Record::ErasedChat { room } => batch.put_erased_chat(room),
                Record::Audit {
                    seq,
                    at_ms,
                    json,
                    hash,
                } => batch.put_audit(
                    seq,
                    &Sealed {
                        at_ms,
                        json,
                        hash: unhex::<32>(&hash)?,
                    },
                ),
                Record::AuditUnreadable { seq, bytes } => {
                    batch.put_audit_raw(seq, &unhex_vec(&bytes)?)
                }
            }
            n += 1;
            pending += 1;
            if pending >= 1000 {
                self.write_through(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.write_through(batch)?;
        self.checkpoint()
            .map(|_| ())
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(n)
    }
}

#[cfg(test)]
impl Store {
    /// Every key and value of the keyspaces the core derives (care teams,
    /// the patient-chat index, search postings) and of the outbox, in key
    /// order: what a restore must give back as the writer wrote it.
    pub(crate) fn derived_keyspaces(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        [PATIENT_CHAT, WS_STAFF, WS_PATIENT_CHAT, SEARCH, OUTBOX]
            .into_iter()
            .flat_map(|tag| self.db().scan_prefix([tag]))
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }
}
