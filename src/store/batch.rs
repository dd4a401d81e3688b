//! Write batches: the writes a job makes, durable together (in its
//! group's log record). Each keyspace adds its own `put_*` / `remove_*`
//! methods next to its reads (`users`, `rooms`, …); here are the batch
//! itself, its encoding as a write-ahead log record's payload, and the
//! decoding back at replay.

use serde::Serialize;

use super::codec;

/// One write of a batch.
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// A log record's payload back into its writes, in order: a key, and its
/// new value or `None` (removed). Checked whole before any is applied.
pub(super) type Ops<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

pub(super) fn decode_ops(mut p: &[u8]) -> std::result::Result<Ops<'_>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if p.len() < n {
            return Err("a log record's writes end early".into());
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    fn len(p: &mut &[u8]) -> std::result::Result<usize, String> {
        Ok(u32::from_le_bytes(take(p, 4)?.try_into().expect("4 bytes")) as usize)
    }
    let mut ops = Vec::new();
    while !p.is_empty() {
        let kind = take(&mut p, 1)?[0];
        let n = len(&mut p)?;
        let key = take(&mut p, n)?;
        match kind {
            OP_PUT => {
                let n = len(&mut p)?;
                ops.push((key, Some(take(&mut p, n)?)));
            }
            OP_REMOVE => ops.push((key, None)),
            k => return Err(format!("a log record holds an unknown write kind {k}")),
        }
    }
    Ok(ops)
}

/// One job's writes: durable together (one log record per group), applied
/// to sled a key at a time after the sync, in the order they were staged
/// (stage a record before what is derived from it). Built by
/// `core::commit` jobs only.
#[derive(Default)]
pub struct WriteBatch(Vec<Op>);

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends this batch's writes to a log record's payload:
    /// per write `kind: u8 | key len: u32 LE | key [| value len | value]`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for op in &self.0 {
            let (kind, key, value) = match op {
                Op::Put(k, v) => (OP_PUT, k, Some(v)),
                Op::Remove(k) => (OP_REMOVE, k, None),
            };
            out.push(kind);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            if let Some(v) = value {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }

    /// Each write as (key, value), `None` removing the key: what
    /// [`Store::stage`](super::Store::stage) keeps of the batch.
    pub(super) fn into_writes(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.0.into_iter().map(|op| match op {
            Op::Put(k, v) => (k, Some(v)),
            Op::Remove(k) => (k, None),
        })
    }

    pub(super) fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.0.push(Op::Put(key.to_vec(), value.to_vec()));
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        self.0.push(Op::Remove(key.to_vec()));
    }

    pub(super) fn put<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.0.push(Op::Put(key.to_vec(), codec::encode(value)));
    }
}
