//! Retention in the store (API.md §8): each workspace's retention policy
//! (`RETENTION`, `y` workspace → days), legal holds (`HOLD`, `q`
//! workspace patient → `Hold`, patient 0 holding the whole workspace) and
//! the chats of erased patients, which every purge empties (`ERASED_CHAT`,
//! `z` room). What a purge deletes, and the `l` mark it leaves, is in
//! `messages`.

use std::sync::atomic::Ordering;

use super::keys::*;
use super::{Result, Store, WriteBatch};
use crate::model::{Hold, RoomId, UserId, Workspace};

fn hold_key(ws: &Workspace, patient: Option<UserId>) -> Vec<u8> {
    with_id(
        &workspace(HOLD, &ws.tenant, &ws.instance),
        patient.map_or(0, |p| p.0),
    )
}

impl Store {
    /// A workspace's retention in days; `None`: kept forever.
    pub fn retention(&self, ws: &Workspace) -> Result<Option<u64>> {
        Ok(self
            .raw_get(workspace(RETENTION, &ws.tenant, &ws.instance))?
            .and_then(|v| read_u64(&v)))
    }

    /// Every workspace with a retention policy, and its days.
    pub fn retentions(&self) -> Result<Vec<(Workspace, u64)>> {
        let mut out = Vec::new();
        for (k, v) in self.prefix(&[RETENTION])? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            if let Some(days) = read_u64(&v) {
                out.push((super::export::parse_workspace(&k)?, days));
            }
        }
        Ok(out)
    }

    /// The hold on one patient's chat (`Some(patient)`) or on the whole
    /// workspace (`None`).
    pub fn hold(&self, ws: &Workspace, patient: Option<UserId>) -> Result<Option<Hold>> {
        self.get(&hold_key(ws, patient))
    }

    /// Whether retention and erasure must leave a patient's chat (or, with
    /// `None`, anything of the workspace) alone: a hold on the workspace,
    /// or on that patient's chat.
    pub fn held(&self, ws: &Workspace, patient: Option<UserId>) -> Result<bool> {
        Ok(self.hold(ws, None)?.is_some()
            || match patient {
                Some(p) => self.hold(ws, Some(p))?.is_some(),
                None => false,
            })
    }

    /// Every hold: (workspace, patient or `None` for the workspace, hold).
    pub fn holds(&self) -> Result<Vec<(Workspace, Option<UserId>, Hold)>> {
        let mut out = Vec::new();
        for (k, v) in self.prefix(&[HOLD])? {
            let ws = super::export::parse_workspace(&k)?;
            let patient = Some(UserId(tail_u64(&k))).filter(|p| p.0 != 0);
            out.push((
                ws,
                patient,
                super::codec::decode(&v).map_err(super::StoreError)?,
            ));
        }
        Ok(out)
    }

    /// The chats of erased patients.
    pub fn erased_chats(&self) -> Result<Vec<RoomId>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&[ERASED_CHAT])? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(RoomId(tail_u64(&k)));
        }
        Ok(out)
    }
}

impl WriteBatch {
    pub fn put_retention(&mut self, ws: &Workspace, days: Option<u64>) {
        let key = workspace(RETENTION, &ws.tenant, &ws.instance);
        match days {
            Some(d) => self.insert(&key, &u64_value(d)),
            None => self.remove(&key),
        }
    }

    pub fn put_hold(&mut self, ws: &Workspace, patient: Option<UserId>, hold: Option<&Hold>) {
        let key = hold_key(ws, patient);
        match hold {
            Some(h) => self.put(&key, h),
            None => self.remove(&key),
        }
    }

    pub fn put_erased_chat(&mut self, room: RoomId) {
        self.insert(&one(ERASED_CHAT, room.0), &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh;

    fn ws(t: &str) -> Workspace {
        Workspace::new(t, "main").unwrap()
    }

    #[test]
    fn retention_holds_and_erased_chats_read_back_as_written() {
        let (_dir, s) = fresh();
        let hold = Hold {
            reason: "case 12".into(),
            at_ms: 5,
        };
        let mut b = WriteBatch::default();
        b.put_retention(&ws("a"), Some(30));
        b.put_retention(&ws("b"), Some(7));
        b.put_hold(&ws("a"), Some(UserId(9)), Some(&hold));
        b.put_hold(&ws("b"), None, Some(&hold));
        b.put_erased_chat(RoomId(4));
        s.write_through(b).unwrap();
        assert_eq!(s.retention(&ws("a")).unwrap(), Some(30));
        assert_eq!(s.retention(&ws("c")).unwrap(), None);
        assert_eq!(s.retentions().unwrap(), vec![(ws("a"), 30), (ws("b"), 7)]);
        // A patient's hold holds that chat only; a workspace's, everything.
        assert!(s.held(&ws("a"), Some(UserId(9))).unwrap());
        assert!(!s.held(&ws("a"), Some(UserId(8))).unwrap());
        assert!(!s.held(&ws("a"), None).unwrap());
        assert!(s.held(&ws("b"), Some(UserId(8))).unwrap());
        assert!(s.held(&ws("b"), None).unwrap());
        assert_eq!(s.holds().unwrap().len(), 2);
        assert_eq!(s.erased_chats().unwrap(), vec![RoomId(4)]);

        let mut b = WriteBatch::default();
        b.put_retention(&ws("a"), None);
        b.put_hold(&ws("a"), Some(UserId(9)), None);
        s.write_through(b).unwrap();
        assert_eq!(s.retention(&ws("a")).unwrap(), None);
        assert!(!s.held(&ws("a"), Some(UserId(9))).unwrap());
    }
}
