//! Live fan-out. The store is the source of truth; the hub only tells open
//! connections what was just committed. Never imports sled.
//!
//! Each connection has a bounded queue. A connection whose queue is full is
//! dropped from the hub (its socket is then closed with a reason): it
//! catches up from the log, and nobody buffers for it without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::model::{Message, MsgId, Participant, RoomId, UserId};

/// How many dialects may share an event's renderings (see [`Event::frame`]).
pub const FRAME_SLOTS: usize = 4;

/// Something committed in a room, for the room's participants, with
/// everything any dialect shows of it as of its commit: rendering it reads
/// nothing else, so a push never shows more (or less) than what was durable
/// when it was published.
#[derive(Debug)]
pub struct Event {
    pub room: RoomId,
    /// Who is told: the room's participants at commit time.
    pub audience: Arc<[UserId]>,
    pub kind: EventKind,
    /// Each dialect's rendering, made by the first of its recipients on
    /// that dialect and shared by the others (one render per dialect), in
    /// whatever form its transport sends (the hub does not know it).
    frames: [OnceLock<Option<Frame>>; FRAME_SLOTS],
}

/// A rendering shared by an event's recipients on one dialect.
type Frame = Box<dyn std::any::Any + Send + Sync>;

#[derive(Debug)]
pub enum EventKind {
    /// A new message, with its sender's username; `new_chat` holds the
    /// chat when the message is the first of a chat created with it (the
    /// actions dialect shows that as `create_chat`).
    Message {
        msg: Message,
        sender_name: String,
        new_chat: Option<ChatView>,
    },
    /// A participant's read marker moved; `chat` is the room as of that
    /// (the markers included).
    Read { chat: ChatView },
    /// A user joined the room (with the read marker they gave, if any).
    Joined {
        user: UserId,
        username: String,
        last_read: Option<MsgId>,
    },
}

/// A chat as of a commit: its participants with their read markers, and
/// its newest messages (at most `Limits::chat_history`), oldest first.
#[derive(Clone, Debug, Default)]
pub struct ChatView {
    pub participants: Vec<(UserId, Participant)>,
    pub recent: Vec<Message>,
}

impl Event {
    pub fn new(room: RoomId, audience: Arc<[UserId]>, kind: EventKind) -> Event {
        Event {
            room,
            audience,
            kind,
            frames: Default::default(),
        }
    }

    fn audience(&self) -> &[UserId] {
        &self.audience
    }

    /// The event as the dialect owning `slot` shows it (`None`: it does
    /// not): rendered by `render` the first time it is asked for, then
    /// shared — a clone of `T` each, so `T` is a shared buffer (`Bytes`,
    /// tungstenite's `Utf8Bytes`). `slot` is below [`FRAME_SLOTS`], and
    /// one slot is always asked for with one `T`.
    pub fn frame<T>(&self, slot: usize, render: impl FnOnce(&Event) -> Option<T>) -> Option<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let frame = self.frames[slot].get_or_init(|| render(self).map(|f| Box::new(f) as Frame));
        let shared = frame.as_ref()?.downcast_ref::<T>();
        debug_assert!(shared.is_some(), "slot {slot} asked for with two types");
        shared.cloned()
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

impl Subscription {
    /// The next event if one is already queued (`None` also once the hub
    /// has let go: [`Subscription::recv`] then says why).
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
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

    /// Open connections, for tests.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(id: u64, audience: &[u64]) -> Arc<Event> {
        Arc::new(Event::new(
            RoomId(1),
            audience.iter().map(|&u| UserId(u)).collect(),
            EventKind::Message {
                new_chat: None,
                sender_name: "ann".into(),
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
        ))
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

    /// However many connections show an event, each slot renders it once
    /// and every caller gets the same bytes; slots are separate.
    #[test]
    fn each_slot_renders_an_event_once_and_shares_it() {
        let e = ev(7, &[1, 2, 3]);
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let render = |e: &Event| {
            renders.fetch_add(1, Ordering::Relaxed);
            Some(Bytes::from(format!("message {}", id_of(e))))
        };
        let frames: Vec<Bytes> = (0..10).filter_map(|_| e.frame(0, render)).collect();
        assert_eq!(renders.load(Ordering::Relaxed), 1);
        assert_eq!(frames.len(), 10);
        assert!(frames.iter().all(|f| f.as_ptr() == frames[0].as_ptr()));
        assert_eq!(&frames[0][..], b"message 7");
        // A dialect that does not show it renders nothing, once.
        let hidden = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let none = e.frame(1, |_| {
                hidden.fetch_add(1, Ordering::Relaxed);
                None::<Bytes>
            });
            assert!(none.is_none());
        }
        assert_eq!(hidden.load(Ordering::Relaxed), 1);
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
