//! The audit trail in the store (API.md §7; the records themselves are
//! `core::audit`'s): one key per record, `e seq`, ascending, so a page is
//! a range scan from a seq and the newest record is one seek. Values are
//! `codec`-encoded `Sealed` records. Nothing here removes an audit key:
//! the trail is only appended to (by the sequencer's jobs, or by
//! `restore` before any sequencer runs).

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

fn stored(key: &[u8], value: &[u8]) -> (u64, StoredAudit) {
    (tail_u64(key), codec::decode(value))
}

impl Store {
    /// The newest audit record: its seq and what it holds.
    pub fn audit_last(&self) -> Result<Option<(u64, StoredAudit)>> {
        Ok(self
            .db()
            .scan_prefix([AUDIT])
            .next_back()
            .transpose()?
            .map(|(k, v)| stored(&k, &v)))
    }

    /// Audit records from seq `from` on, ascending, read lazily: the cost
    /// is the records taken.
    pub fn audit_from(&self, from: u64) -> impl Iterator<Item = Result<(u64, StoredAudit)>> + '_ {
        self.db()
            .range(one(AUDIT, from)..one(AUDIT + 1, 0))
            .map(|kv| {
                self.scanned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (k, v) = kv?;
                Ok(stored(&k, &v))
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
            let next = self.db().range(one(AUDIT, mid)..one(AUDIT, hi)).next();
            self.scanned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match next.transpose()?.map(|(k, v)| stored(&k, &v)) {
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
        Ok(self.db().get(one(AUDIT, seq))?.map(|v| v.to_vec()))
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
        let Some(mut v) = self.audit_raw(seq)? else {
            return Ok(false);
        };
        edit(&mut v);
        let mut b = WriteBatch::default();
        b.insert(&one(AUDIT, seq), &v);
        self.write_through(b)?;
        self.checkpoint()
            .map_err(|e| StoreError(format!("syncing the store: {e}")))?;
        Ok(true)
    }
}

impl WriteBatch {
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
