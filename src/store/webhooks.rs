//! Webhooks in the store: each workspace's webhook, the outbox of pending
//! deliveries and the deliveries set aside as dead. Key layouts: `WEBHOOK`
//! (`h` workspace), `OUTBOX` (`o` msg) and `DEAD` (`g` msg) in `keys`:
//! both delivery keyspaces are keyed by the message id, so each reads in
//! message order, and moving a delivery between them keeps its key.

use super::keys::*;
use super::{codec, Result, Store, StoreError, WriteBatch};
use crate::model::{DeadDelivery, Delivery, MsgId, Webhook, Workspace};

impl Store {
    pub fn webhook(&self, ws: &Workspace) -> Result<Option<Webhook>> {
        self.get(&workspace(WEBHOOK, &ws.tenant, &ws.instance))
    }

    /// Pending deliveries in message order, from `from` on.
    pub fn outbox(&self, from: MsgId, limit: usize) -> Result<Vec<Delivery>> {
        self.deliveries(OUTBOX, from, limit)
    }

    /// One pending delivery (with the calling job's own writes).
    pub fn delivery(&self, message: MsgId) -> Result<Option<Delivery>> {
        self.get(&one(OUTBOX, message.0))
    }

    /// Dead deliveries in message order, from `from` on.
    pub fn dead(&self, from: MsgId, limit: usize) -> Result<Vec<DeadDelivery>> {
        self.deliveries(DEAD, from, limit)
    }

    /// One dead delivery (with the calling job's own writes).
    pub fn dead_one(&self, message: MsgId) -> Result<Option<DeadDelivery>> {
        self.get(&one(DEAD, message.0))
    }

    /// How many deliveries are dead: a walk of their keyspace (done once,
    /// at open; `Core` keeps the count from then on).
    pub fn dead_count(&self) -> Result<u64> {
        let mut n = 0;
        for kv in self.db().range(one(DEAD, 0)..one(DEAD + 1, 0)) {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    fn deliveries<T: serde::de::DeserializeOwned>(
        &self,
        tag: u8,
        from: MsgId,
        limit: usize,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for kv in self
            .db()
            .range(one(tag, from.0)..one(tag + 1, 0))
            .take(limit)
        {
            let (_, v) = kv?;
            out.push(codec::decode(&v).map_err(StoreError)?);
        }
        Ok(out)
    }
}

impl WriteBatch {
    pub fn put_webhook(&mut self, ws: &Workspace, hook: &Webhook) {
        self.put(&workspace(WEBHOOK, &ws.tenant, &ws.instance), hook);
    }

    pub fn remove_webhook(&mut self, ws: &Workspace) {
        self.remove(&workspace(WEBHOOK, &ws.tenant, &ws.instance));
    }

    pub fn put_delivery(&mut self, d: &Delivery) {
        self.put(&one(OUTBOX, d.message.0), d);
    }

    pub fn remove_delivery(&mut self, message: MsgId) {
        self.remove(&one(OUTBOX, message.0));
    }

    pub fn put_dead(&mut self, d: &DeadDelivery) {
        self.put(&one(DEAD, d.delivery.message.0), d);
    }

    pub fn remove_dead(&mut self, message: MsgId) {
        self.remove(&one(DEAD, message.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UserId;

    fn delivery(id: u64) -> Delivery {
        Delivery {
            message: MsgId(id),
            patient: UserId(3),
            workspace: Workspace::new("t", "i").unwrap(),
            text: format!("m{id}"),
            at_ms: id,
        }
    }

    #[test]
    fn outbox_and_dead_are_separate_keyspaces_read_in_message_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for id in [10, 2, 7] {
            b.put_delivery(&delivery(id));
        }
        b.put_dead(&DeadDelivery {
            delivery: delivery(5),
            failed_attempts: 4,
            last_error: "the receiver answered 500".into(),
            dead_ms: 99,
        });
        s.write_through(b).unwrap();
        let ids = |v: Vec<Delivery>| v.into_iter().map(|d| d.message.0).collect::<Vec<_>>();
        assert_eq!(ids(s.outbox(MsgId(0), 10).unwrap()), [2, 7, 10]);
        assert_eq!(ids(s.outbox(MsgId(3), 1).unwrap()), [7]);
        let dead = s.dead(MsgId(0), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].delivery, delivery(5));
        assert_eq!(s.dead_count().unwrap(), 1);
        assert!(s.delivery(MsgId(5)).unwrap().is_none());
        assert_eq!(s.dead_one(MsgId(5)).unwrap().unwrap().failed_attempts, 4);

        // Moved back: the same key in the outbox, gone from the dead.
        let mut b = WriteBatch::default();
        b.remove_dead(MsgId(5));
        b.put_delivery(&delivery(5));
        s.write_through(b).unwrap();
        assert_eq!(ids(s.outbox(MsgId(0), 10).unwrap()), [2, 5, 7, 10]);
        assert_eq!(s.dead_count().unwrap(), 0);
    }

    #[test]
    fn a_removed_webhook_is_gone_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let hook = Webhook {
            url: "http://127.0.0.1:9/h".into(),
            api_key: "k".into(),
            api_secret: "s".into(),
        };
        let (a, b_ws) = (
            Workspace::new("t", "i").unwrap(),
            Workspace::new("t", "i2").unwrap(),
        );
        let mut b = WriteBatch::default();
        b.put_webhook(&a, &hook);
        b.put_webhook(&b_ws, &hook);
        s.write_through(b).unwrap();
        let mut b = WriteBatch::default();
        b.remove_webhook(&a);
        s.write_through(b).unwrap();
        assert!(s.webhook(&a).unwrap().is_none());
        assert!(s.webhook(&b_ws).unwrap().is_some());
    }
}
