//! The audit trail in the store (API.md §7; the records themselves are
//! `core::audit`'s), ascending by `e seq`, so a page is a range scan from
//! a seq and the newest record is one seek. A key holds one record or a
//! block of them:
//!
//! - a *block* (the sequencer's: the records of one group commit) under
//!   the seq of its last record — one sled write for the whole group, as
//!   a post in a patient chat writes one record each, and a write is most
//!   of what a record costs (issue 17's measurements, README). The key of
//!   the block holding seq `n` is the first at or after `n`.
//! - a *single* record under its own seq (`restore`'s, a backup's
//!   records, and every record written before blocks were).
//!
//! Each record is `codec`-encoded on its own, inside a block too, so
//! damage to one record's bytes leaves the others readable: a single
//! record as `Sealed`, a block's as `Packed` (its JSON shortened by
//! `packed`; blocks written before that hold `Sealed`s).
//! Nothing here removes an audit key: the trail is only appended to (by
//! the sequencer, or by `restore` before any sequencer runs).

mod packed;

use super::keys::*;
use super::{codec, Result, Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};

/// A record as the store keeps it (its meaning is `core::audit`'s): its canonical JSON, its chain hash, and
/// its time in Unix ms (so records are found by time without parsing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub at_ms: u64,
    pub json: String,
    pub hash: [u8; 32],
}

/// A stored record, or why it cannot be read.
pub type StoredAudit = std::result::Result<Sealed, String>;

/// The first byte of a block's value (a single record's is `codec`'s
/// version byte, never these): its records as `Packed`, or — blocks
/// written before records were packed — as `Sealed`.
const BLOCK: u8 = 0xB2;
const SEALED_BLOCK: u8 = 0xB1;

/// A record as a block keeps it: `Sealed` with its JSON packed
/// (`packed::pack`, given the record's seq and time).
#[derive(Serialize, Deserialize)]
struct Packed {
    at_ms: u64,
    json: Vec<u8>,
    hash: [u8; 32],
}

impl Packed {
    fn new(seq: u64, r: &Sealed) -> Packed {
        Packed {
            at_ms: r.at_ms,
            json: packed::pack(seq, r.at_ms, &r.json),
            hash: r.hash,
        }
    }

    fn unpack(self, seq: u64) -> StoredAudit {
        let json = packed::unpack(seq, self.at_ms, &self.json)
            .ok_or("its packed JSON is not UTF-8 text")?;
        Ok(Sealed {
            at_ms: self.at_ms,
            json,
            hash: self.hash,
        })
    }
}

/// A block's records: each one's seq and its `codec` bytes.
type Block = Vec<(u64, Vec<u8>)>;

/// Records in one block at most: a read decodes a block whole, so a page
/// of records decodes at most this many more than it shows.
const BLOCK_RECORDS: usize = 64;

/// The records under one key, ascending: a single record, or a block's.
/// A block that cannot be decoded is one unreadable record at the key's
/// seq (`parlor audit verify` then names the first seq it lacks).
fn stored(key: &[u8], value: &[u8]) -> Vec<(u64, StoredAudit)> {
    let seq = tail_u64(key);
    match value.split_first() {
        Some((&tag @ (BLOCK | SEALED_BLOCK), body)) => match codec::decode::<Block>(body) {
            Ok(block) => block
                .into_iter()
                .map(|(seq, bytes)| match tag {
                    BLOCK => (
                        seq,
                        codec::decode::<Packed>(&bytes).and_then(|p| p.unpack(seq)),
                    ),
                    _ => (seq, codec::decode(&bytes)),
                })
                .collect(),
            Err(why) => vec![(seq, Err(format!("an undecodable block ({why})")))],
        },
        _ => vec![(seq, codec::decode(value))],
    }
}

/// The stored bytes of record `seq` under one key: a block's entry, or
/// the whole value (a single record, or a block that cannot be decoded).
fn raw_in(key: &[u8], value: &[u8], seq: u64) -> Option<Vec<u8>> {
    if let Some((&(BLOCK | SEALED_BLOCK), body)) = value.split_first() {
        if let Ok(block) = codec::decode::<Block>(body) {
            return block.into_iter().find(|(s, _)| *s == seq).map(|(_, b)| b);
        }
    }
    (tail_u64(key) == seq).then(|| value.to_vec())
}

impl Store {
    /// The newest audit record: its seq and what it holds.
    pub fn audit_last(&self) -> Result<Option<(u64, StoredAudit)>> {
        Ok(self
            .db()
            .scan_prefix([AUDIT])
            .next_back()
            .transpose()?
            .and_then(|(k, v)| stored(&k, &v).pop()))
    }

    /// Audit records from seq `from` on, ascending, read lazily: the cost
    /// is the records taken.
    pub fn audit_from(&self, from: u64) -> impl Iterator<Item = Result<(u64, StoredAudit)>> + '_ {
        self.db()
            .range(one(AUDIT, from)..one(AUDIT + 1, 0))
            .flat_map(move |kv| match kv {
                Ok((k, v)) => stored(&k, &v)
                    .into_iter()
                    .filter(|(seq, _)| *seq >= from)
                    .map(Ok)
                    .collect(),
                Err(e) => vec![Err(e.into())],
            })
            .inspect(|_| {
                self.scanned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
    }

    /// The smallest seq whose record was made at or after `ms` (one past
    /// the newest if none): a binary search, O(log n) seeks (a record's
    /// time never decreases as seq grows). An unreadable record counts as
    /// older.
    pub fn audit_first_at(&self, ms: u64) -> Result<u64> {
        let end = self.audit_last()?.map_or(0, |(seq, _)| seq) + 1;
        let (mut lo, mut hi) = (1u64, end);
        let mut found = end;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The key at or after `mid` holds it (or the next record).
            let next = self.db().range(one(AUDIT, mid)..one(AUDIT + 1, 0)).next();
            self.scanned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let record = next.transpose()?.and_then(|(k, v)| {
                stored(&k, &v)
                    .into_iter()
                    .find(|(seq, _)| *seq >= mid && *seq < hi)
            });
            match record {
                Some((seq, Ok(s))) if s.at_ms >= ms => {
                    found = seq;
                    hi = mid;
                }
                Some((seq, _)) => lo = seq + 1,
                None => hi = mid,
            }
        }
        Ok(found)
    }

    /// Appends a record outside the sequencer (`restore`'s own record),
    /// durably. Only while no sequencer runs.
    pub fn append_audit(&self, seq: u64, record: &Sealed) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_audit(seq, record);
        self.write_through(b)
    }

    /// The stored bytes of record `seq` (exported as they are when they
    /// cannot be decoded, so a backup keeps even a damaged trail intact).
    pub(super) fn audit_raw(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db()
            .range(one(AUDIT, seq)..one(AUDIT + 1, 0))
            .next()
            .transpose()?
            .and_then(|(k, v)| raw_in(&k, &v, seq)))
    }

    /// A test seam for `parlor audit verify` (tests/audit.rs): edits the
    /// stored bytes of record `seq` as disk damage or a forger would,
    /// through the log like any write. parlor itself never calls it (the
    /// trail is never rewritten); only while no sequencer runs. Answers
    /// whether the record existed.
    #[doc(hidden)]
    pub fn damage_audit_record(
        &self,
        seq: u64,
        edit: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Result<bool> {
        let Some((key, value)) = self
            .db()
            .range(one(AUDIT, seq)..one(AUDIT + 1, 0))
            .next()
            .transpose()?
        else {
            return Ok(false);
        };
        let Some(mut v) = raw_in(&key, &value, seq) else {
            return Ok(false);
        };
        edit(&mut v);
        // A block is written back whole with that record's bytes edited.
        let block = match value.split_first() {
            Some((&tag @ (BLOCK | SEALED_BLOCK), body)) => {
                codec::decode::<Block>(body).ok().map(|b| (tag, b))
            }
            _ => None,
        };
        let value = match block {
            Some((tag, mut block)) => {
                for (s, bytes) in &mut block {
                    if *s == seq {
                        *bytes = std::mem::take(&mut v);
                    }
                }
                block_value(tag, &block)
            }
            None => v,
        };
        let mut b = WriteBatch::default();
        b.insert(&key, &value);
        self.write_through(b)?;
        self.checkpoint()
            .map_err(|e| StoreError(format!("syncing the store: {e}")))?;
        Ok(true)
    }
}

/// A block's value: its tag, then the records.
fn block_value(tag: u8, block: &Block) -> Vec<u8> {
    let mut value = vec![tag];
    value.extend(codec::encode(block));
    value
}

impl WriteBatch {
    /// Appends a group commit's records (ascending seqs) as blocks of
    /// `BLOCK_RECORDS` at most, each under its last record's seq.
    pub fn put_audit_blocks(&mut self, records: &[(u64, Sealed)]) {
        for chunk in records.chunks(BLOCK_RECORDS) {
            let block: Block = chunk
                .iter()
                .map(|(seq, r)| (*seq, codec::encode(&Packed::new(*seq, r))))
                .collect();
            let (last, _) = chunk[chunk.len() - 1];
            self.insert(&one(AUDIT, last), &block_value(BLOCK, &block));
        }
    }

    /// Appends audit record `seq`.
    pub fn put_audit(&mut self, seq: u64, record: &Sealed) {
        self.put(&one(AUDIT, seq), record);
    }

    /// Writes record `seq`'s bytes as they were exported (a backup of a
    /// record that could not be decoded).
    pub(super) fn put_audit_raw(&mut self, seq: u64, bytes: &[u8]) {
        self.insert(&one(AUDIT, seq), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(at_ms: u64) -> Sealed {
        Sealed {
            at_ms,
            json: format!("{{\"at\":{at_ms}}}"),
            hash: [at_ms as u8; 32],
        }
    }

    /// Blocks (the sequencer's) after single records (restore's, and
    /// older stores'): read back as one ascending trail, from any seq,
    /// found by time, each record damaged or read raw on its own.
    #[test]
    fn blocks_and_single_records_read_as_one_trail() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for seq in 1..=3u64 {
            b.put_audit(seq, &sealed(seq * 10));
        }
        s.write_through(b).unwrap();
        // Two groups' blocks: 4..=8 and 9..=9, then a single again.
        for group in [4..=8u64, 9..=9] {
            let records: Vec<(u64, Sealed)> = group.map(|q| (q, sealed(q * 10))).collect();
            let mut b = WriteBatch::default();
            b.put_audit_blocks(&records);
            s.write_through(b).unwrap();
        }
        let mut b = WriteBatch::default();
        b.put_audit(10, &sealed(100));
        s.write_through(b).unwrap();
        let all: Vec<(u64, u64)> = s
            .audit_from(1)
            .map(|r| r.unwrap())
            .map(|(q, r)| (q, r.unwrap().at_ms))
            .collect();
        assert_eq!(all, (1..=10).map(|q| (q, q * 10)).collect::<Vec<_>>());
        let from: Vec<u64> = s.audit_from(6).map(|r| r.unwrap().0).collect();
        assert_eq!(from, [6, 7, 8, 9, 10]);
        assert_eq!(s.audit_last().unwrap().unwrap().0, 10);
        for (ms, first) in [
            (0, 1),
            (35, 4),
            (50, 5),
            (61, 7),
            (90, 9),
            (100, 10),
            (101, 11),
        ] {
            assert_eq!(s.audit_first_at(ms).unwrap(), first, "at {ms}");
        }
        // Six keys for ten records: four singles, two blocks.
        assert_eq!(s.db().scan_prefix([AUDIT]).count(), 6);
        let raw = s.audit_raw(6).unwrap().unwrap();
        let packed = codec::decode::<Packed>(&raw).unwrap();
        assert_eq!(packed.unpack(6).unwrap(), sealed(60));
        assert!(s.damage_audit_record(6, &mut |v| v[0] ^= 0xff).unwrap());
        let ok: Vec<(u64, bool)> = s
            .audit_from(4)
            .map(|r| r.unwrap())
            .map(|(q, r)| (q, r.is_ok()))
            .collect();
        assert_eq!(
            ok,
            [
                (4, true),
                (5, true),
                (6, false),
                (7, true),
                (8, true),
                (9, true),
                (10, true)
            ]
        );
        // The damaged bytes read back raw as they are now (a backup keeps
        // them so).
        assert_ne!(s.audit_raw(6).unwrap().unwrap(), raw);
        assert!(!s.damage_audit_record(11, &mut |_| {}).unwrap());
        // A big group's records go in blocks of BLOCK_RECORDS at most, and
        // a scan counts the records it takes, not the blocks it decodes.
        let n = 2 * BLOCK_RECORDS as u64 + 5;
        let records: Vec<(u64, Sealed)> = (11..11 + n).map(|q| (q, sealed(200))).collect();
        let mut b = WriteBatch::default();
        b.put_audit_blocks(&records);
        s.write_through(b).unwrap();
        assert_eq!(s.db().scan_prefix([AUDIT]).count(), 6 + 3);
        let before = s.scanned();
        let seqs: Vec<u64> = s.audit_from(70).take(3).map(|r| r.unwrap().0).collect();
        assert_eq!((seqs, s.scanned() - before), (vec![70, 71, 72], 3));
        assert_eq!(s.audit_last().unwrap().unwrap().0, 10 + n);
    }

    /// A `chat.post` record as the sequencer seals it.
    fn post(seq: u64, at_ms: u64) -> Sealed {
        Sealed {
            at_ms,
            json: format!(
                r#"{{"seq":{seq},"at":"{}","kind":"chat.post","actor":"1234","tenant":"clinic-north","instance":"main","patient":"1234","detail":{{"message":"{}","room":"77","sender":"1234"}}}}"#,
                crate::model::time::rfc3339(at_ms),
                seq + 100_000
            ),
            hash: [seq as u8; 32],
        }
    }

    /// A block keeps its records packed, in a fraction of the bytes; a
    /// block written before records were packed (`Sealed`s) reads the
    /// same, damage to it included.
    #[test]
    fn packed_blocks_are_smaller_and_sealed_blocks_still_read() {
        let (_dir, s) = super::super::testing::fresh();
        let at = 1_796_540_685_123;
        let older: Vec<(u64, Sealed)> = (1..=10).map(|q| (q, post(q, at + q))).collect();
        let newer: Vec<(u64, Sealed)> = (11..=20).map(|q| (q, post(q, at + q))).collect();
        let sealed_block: Block = older.iter().map(|(q, r)| (*q, codec::encode(r))).collect();
        let mut b = WriteBatch::default();
        b.insert(&one(AUDIT, 10), &block_value(SEALED_BLOCK, &sealed_block));
        b.put_audit_blocks(&newer);
        s.write_through(b).unwrap();
        let sizes: Vec<usize> = s
            .db()
            .scan_prefix([AUDIT])
            .map(|kv| kv.unwrap().1.len())
            .collect();
        assert_eq!(sizes.len(), 2);
        assert!(
            sizes[1] * 2 < sizes[0],
            "packed {} vs {}",
            sizes[1],
            sizes[0]
        );
        let all: Vec<(u64, Sealed)> = s
            .audit_from(1)
            .map(|r| r.unwrap())
            .map(|(q, r)| (q, r.unwrap()))
            .collect();
        assert_eq!(all, [older, newer].concat());
        assert_eq!(s.audit_first_at(at + 15).unwrap(), 15);
        assert_eq!(s.audit_first_at(at + 5).unwrap(), 5);
        for seq in [3, 13] {
            assert!(s.damage_audit_record(seq, &mut |v| v[0] ^= 0xff).unwrap());
        }
        let ok: Vec<u64> = s
            .audit_from(1)
            .map(|r| r.unwrap())
            .filter(|(_, r)| r.is_err())
            .map(|(q, _)| q)
            .collect();
        assert_eq!(ok, [3, 13]);
    }

    #[test]
    fn records_come_back_in_seq_order_and_are_found_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        assert!(s.audit_last().unwrap().is_none());
        assert_eq!(s.audit_first_at(0).unwrap(), 1);
        let mut b = WriteBatch::default();
        // Times 0, 10, 10, 20, 20, … for seqs 1..=300 (past one byte).
        for seq in 1..=300u64 {
            b.put_audit(seq, &sealed(seq / 2 * 10));
        }
        s.write_through(b).unwrap();
        let (last, rec) = s.audit_last().unwrap().unwrap();
        assert_eq!((last, rec.unwrap()), (300, sealed(1500)));
        let seqs: Vec<u64> = s.audit_from(255).take(3).map(|r| r.unwrap().0).collect();
        assert_eq!(seqs, [255, 256, 257]);
        assert_eq!(s.audit_first_at(0).unwrap(), 1);
        assert_eq!(s.audit_first_at(1).unwrap(), 2);
        assert_eq!(s.audit_first_at(10).unwrap(), 2);
        assert_eq!(s.audit_first_at(11).unwrap(), 4);
        assert_eq!(s.audit_first_at(1500).unwrap(), 300);
        assert_eq!(s.audit_first_at(1501).unwrap(), 301);
        let before = s.scanned();
        s.audit_first_at(777).unwrap();
        assert!(s.scanned() - before <= 10, "{}", s.scanned() - before);
        // Damage shows as a decoding error of that record alone.
        assert!(s.damage_audit_record(7, &mut |v| v[0] ^= 0xff).unwrap());
        assert!(!s.damage_audit_record(301, &mut |_| {}).unwrap());
        let got: Vec<bool> = s
            .audit_from(6)
            .take(3)
            .map(|r| r.unwrap().1.is_ok())
            .collect();
        assert_eq!(got, [true, false, true]);
    }
}
