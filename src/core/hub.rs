//! Live fan-out. The store is the source of truth; the hub only tells open
//! connections what was just committed. Never imports sled.
//!
//! Each connection has a bounded queue. A connection whose queue is full is
//! dropped from the hub (its socket is then closed with a reason): it
//! catches up from the log, and nobody buffers for it without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::model::{Message, MsgId, Participant, RoomId, UserId};

/// Something committed in a room, for the room's participants.
#[derive(Debug)]
pub struct Event {
    pub room: RoomId,
    /// Who is told: the room's participants at commit time.
    pub audience: Arc<[UserId]>,
    pub kind: EventKind,
}

#[derive(Debug)]
pub enum EventKind {
    /// A new message; `new_chat` when it is the first of a chat created
    /// with it (the actions dialect shows that as `create_chat`).
    Message { msg: Message, new_chat: bool },
    /// A participant's read marker moved.
    Read { user: UserId, marker: Participant },
    /// A user joined the room (with the read marker they gave, if any).
    Joined {
        user: UserId,
        last_read: Option<MsgId>,
    },
}

impl Event {
    fn audience(&self) -> &[UserId] {
        &self.audience
    }
}

/// Why the hub let go of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// The queue was full: the client reads slower than messages arrive.
    TooSlow,
    /// The token the connection was opened with was revoked.
    LoggedOut,
}

struct Conn {
    id: u64,
    token: [u8; 32],
    tx: mpsc::Sender<Arc<Event>>,
    kick: Arc<Mutex<Option<Kick>>>,
}

pub struct Hub {
    conns: Mutex<HashMap<UserId, Vec<Conn>>>,
    next_id: AtomicU64,
    queue: usize,
    per_user: usize,
}

/// A connection's place in the hub. Dropping it unregisters.
pub struct Subscription {
    hub: Arc<Hub>,
    user: UserId,
    id: u64,
    rx: mpsc::Receiver<Arc<Event>>,
    kick: Arc<Mutex<Option<Kick>>>,
}

impl Subscription {
    /// The next event; `Err(kick)` once the hub has let go of this
    /// connection (after the events already queued).
    pub async fn recv(&mut self) -> Result<Arc<Event>, Kick> {
        match self.rx.recv().await {
            Some(ev) => Ok(ev),
            None => Err(self
                .kick
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(Kick::TooSlow)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut conns = self.hub.lock();
        if let Some(list) = conns.get_mut(&self.user) {
            list.retain(|c| c.id != self.id);
            if list.is_empty() {
                conns.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// `queue`: events a connection may lag behind before it is dropped;
    /// `per_user`: open connections a user may hold.
    pub fn new(queue: usize, per_user: usize) -> Hub {
        Hub {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue,
            per_user,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection of `user` opened with the token whose hash is
    /// `token`. `None` when the user already holds `per_user` connections.
    pub fn subscribe(self: &Arc<Self>, user: UserId, token: [u8; 32]) -> Option<Subscription> {
        let (tx, rx) = mpsc::channel(self.queue);
        let kick = Arc::new(Mutex::new(None));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.lock();
        let list = conns.entry(user).or_default();
        if list.len() >= self.per_user {
            return None;
        }
        list.push(Conn {
            id,
            token,
            tx,
            kick: kick.clone(),
        });
        Some(Subscription {
            hub: self.clone(),
            user,
            id,
            rx,
            kick,
        })
    }

    /// Hands a committed event to every connection of its audience.
    /// Called by the sequencer, in id order, after the commit is durable.
    pub fn publish(&self, ev: Arc<Event>) {
        let mut conns = self.lock();
        for user in ev.audience() {
            let Some(list) = conns.get_mut(user) else {
                continue;
            };
            list.retain(|c| match c.tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    *c.kick.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kick::TooSlow);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            if list.is_empty() {
                conns.remove(user);
            }
        }
    }

    /// Lets go of every connection opened with a revoked token.
    pub fn revoke(&self, user: UserId, token: &[u8; 32]) {
        let mut conns = self.lock();
        if let Some(list) = conns.get_mut(&user) {
            list.retain(|c| {
                if &c.token == token {
                    *c.kick.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kick::LoggedOut);
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Open connections, for metrics and tests.
    pub fn connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, audience: &[u64]) -> Arc<Event> {
        Arc::new(Event {
            room: RoomId(1),
            audience: audience.iter().map(|&u| UserId(u)).collect(),
            kind: EventKind::Message {
                new_chat: false,
                msg: Message {
                    id: MsgId(id),
                    room: RoomId(1),
                    sender: UserId(audience[0]),
                    text: "x".into(),
                    at_ms: 0,
                    author: None,
                    is_read: false,
                    archived: false,
                },
            },
        })
    }

    fn id_of(e: &Event) -> u64 {
        match &e.kind {
            EventKind::Message { msg, .. } => msg.id.0,
            _ => 0,
        }
    }

    #[tokio::test]
    async fn publish_reaches_every_connection_of_the_audience_in_order() {
        let hub = Arc::new(Hub::new(8, 10));
        let mut a1 = hub.subscribe(UserId(1), [1; 32]).unwrap();
        let mut a2 = hub.subscribe(UserId(1), [2; 32]).unwrap();
        let mut c = hub.subscribe(UserId(3), [3; 32]).unwrap();
        hub.publish(ev(1, &[1, 2]));
        hub.publish(ev(2, &[1]));
        for s in [&mut a1, &mut a2] {
            assert_eq!(id_of(&s.recv().await.unwrap()), 1);
            assert_eq!(id_of(&s.recv().await.unwrap()), 2);
        }
        assert!(c.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_connection_as_too_slow() {
        let hub = Arc::new(Hub::new(2, 10));
        let mut slow = hub.subscribe(UserId(1), [1; 32]).unwrap();
        for id in 1..=3 {
            hub.publish(ev(id, &[1]));
        }
        assert_eq!(hub.connections(), 0);
        // What was queued still arrives, then the reason.
        assert_eq!(id_of(&slow.recv().await.unwrap()), 1);
        assert_eq!(id_of(&slow.recv().await.unwrap()), 2);
        assert_eq!(slow.recv().await.unwrap_err(), Kick::TooSlow);
    }

    #[tokio::test]
    async fn revoke_drops_only_that_tokens_connections() {
        let hub = Arc::new(Hub::new(4, 10));
        let mut gone = hub.subscribe(UserId(1), [1; 32]).unwrap();
        let _kept = hub.subscribe(UserId(1), [2; 32]).unwrap();
        hub.revoke(UserId(1), &[1; 32]);
        assert_eq!(gone.recv().await.unwrap_err(), Kick::LoggedOut);
        assert_eq!(hub.connections(), 1);
    }

    #[test]
    fn per_user_cap_and_drop_unregisters() {
        let hub = Arc::new(Hub::new(4, 2));
        let a = hub.subscribe(UserId(1), [0; 32]).unwrap();
        let _b = hub.subscribe(UserId(1), [0; 32]).unwrap();
        assert!(hub.subscribe(UserId(1), [0; 32]).is_none());
        drop(a);
        assert!(hub.subscribe(UserId(1), [0; 32]).is_some());
    }
}
