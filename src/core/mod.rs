//! The core: one store, one sequencer, one hub, and every rule of who may
//! do what. Dialects call the operations here and only translate.
//!
//! - `actor`: who asks (operator, person, API client), and the one check
//!   of the operator's operations
//! - `commit`: the sequencer — ordering and durability are enforced there
//! - `hub`: live fan-out with bounded queues
//! - `passwords`: argon2 on a small pool of low-priority threads
//! - `tokens`, `limits`: tokens, throttles
//! - `accounts`, `rooms`, `messages`, `cursor`, `patients`: the operations
//! - `pages`: a patient chat's history and search pages, id-bordered
//! - `derived`: the records that follow from others by a rule (care
//!   team, patient-chat index, search postings, outbox), written only
//!   there — by the writer's jobs and by restore alike
//! - `reach`: who a user may reach (a patient: only their care team)
//! - `api_clients`: integrations' names and secrets, exchanged for tokens
//! - `audit`: the hash-chained audit trail, and `ToShow`, which holds an
//!   answer's patient-chat messages until their read is recorded
//! - `overview`: a user's rooms with bounded unread counts (read-only)
//! - `webhooks`: each workspace's webhook; `outbox`: its deliveries, from
//!   queued to sent, dead or dropped
//! - `retention`: retention policies, legal holds and the purge;
//!   `erasure`: erasing a person

pub mod accounts;
pub mod actor;
pub mod api_clients;
pub mod audit;
pub mod backup;
pub mod commit;
pub mod cursor;
pub mod derived;
pub mod erasure;
pub mod hub;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod overview;
pub mod pages;
pub mod passwords;
pub mod patients;
pub mod reach;
pub mod retention;
pub mod rooms;
pub mod tokens;
pub mod webhooks;

/// What the core's unit tests (and the webhook worker's) share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::accounts::NewUser;
    use super::limits::Limits;
    use super::patients::PatientChat;
    use super::{Admin, Core};
    use crate::error::Result;
    use crate::model::{Role, User, Webhook, Workspace};

    /// A user made by the operator, in workspace `tenant/main`.
    pub async fn user(core: &Core, name: &str, role: Role, tenant: &str) -> User {
        let ws = Workspace::new(tenant, "main").unwrap();
        user_in(core, name, role, ws, None).await
    }

    /// A user made by the operator, in `workspace`, with its display name.
    pub async fn user_in(
        core: &Core,
        name: &str,
        role: Role,
        workspace: Workspace,
        display_name: Option<String>,
    ) -> User {
        let new = NewUser {
            username: name.into(),
            password: "pw".into(),
            role,
            workspace,
            display_name,
        };
        let id = core.create_user(&Admin::operator(), new).await.unwrap();
        core.user(id).unwrap().unwrap()
    }

    /// A core with no send limits and two staff users of the default
    /// workspace, ann and bob, each shown as `display(name)`.
    pub async fn ann_and_bob(
        dir: &std::path::Path,
        display: impl Fn(&str) -> Option<String>,
    ) -> (Arc<Core>, User, User) {
        let core = open(dir);
        let mut made = Vec::new();
        for name in ["ann", "bob"] {
            let staff = Role::Staff;
            made.push(user_in(&core, name, staff, Workspace::default(), display(name)).await);
        }
        let (bob, ann) = (made.pop().unwrap(), made.pop().unwrap());
        (core, ann, bob)
    }

    /// A core with no send limits.
    pub fn open(dir: &std::path::Path) -> Arc<Core> {
        let limits = Limits {
            msg_burst: 1_000_000,
            msg_rate: 1_000_000,
            ..Limits::default()
        };
        Core::open(dir, limits).unwrap()
    }

    /// The core of a store `backup::restore` just wrote. sled lets go of
    /// its lock when its last thread ends, a moment after `restore`
    /// dropped the store: wait for it (a restarted daemon, a new process,
    /// never sees this).
    pub fn open_restored(dir: &std::path::Path) -> Arc<Core> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Core::open(dir, Limits::default()) {
                Err(crate::store::OpenError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => break r.unwrap(),
            }
        }
    }

    /// A webhook no test sends to (the worker does not run in unit tests).
    pub fn hook() -> Webhook {
        Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            api_key: "k".into(),
            api_secret: "s".into(),
        }
    }

    /// Workspace `a/main` with a nurse and two patients, and a staff user
    /// of workspace `b/main`.
    pub struct Clinic {
        pub core: Arc<Core>,
        pub staff: User,
        pub pat: User,
        pub other_pat: User,
        pub outsider: User,
    }

    pub async fn clinic(dir: &std::path::Path) -> Clinic {
        let core = open(dir);
        Clinic {
            staff: user(&core, "nurse", Role::Staff, "a").await,
            pat: user(&core, "pat", Role::Patient, "a").await,
            other_pat: user(&core, "pat2", Role::Patient, "a").await,
            outsider: user(&core, "doc-b", Role::Staff, "b").await,
            core,
        }
    }

    /// A clinic, and `pat`'s chat (opened by the patient).
    pub async fn clinic_and_chat(dir: &std::path::Path) -> (Clinic, PatientChat) {
        let c = clinic(dir).await;
        let ch = c.chat(&c.pat).await.unwrap();
        (c, ch)
    }

    impl Clinic {
        /// `other_pat`'s chat, as the nurse asks for it.
        pub async fn other_chat(&self) -> PatientChat {
            let id = self.other_pat.id.to_string();
            self.core
                .patient_chat(&self.staff, "a", "main", &id)
                .await
                .unwrap()
        }

        /// `pat`'s chat, as `caller` asks for it.
        pub async fn chat(&self, caller: &User) -> Result<PatientChat> {
            self.core
                .patient_chat(caller, "a", "main", &self.pat.id.to_string())
                .await
        }
    }

    pub struct Two {
        pub core: Arc<Core>,
        pub staff: User,
        /// A patient of workspace `a/main`, and one of `b/main`.
        pub pats: [User; 2],
    }

    /// Two workspaces with a webhook each, and `n` staff messages to each
    /// one's patient (the staff of `b` posting there).
    pub async fn two(dir: &std::path::Path, n: usize) -> Two {
        let core = open(dir);
        let staff = user(&core, "nurse", Role::Staff, "a").await;
        let staff_b = user(&core, "nurse-b", Role::Staff, "b").await;
        let pats = [
            user(&core, "pat-a", Role::Patient, "a").await,
            user(&core, "pat-b", Role::Patient, "b").await,
        ];
        for (p, s) in pats.iter().zip([&staff, &staff_b]) {
            core.set_webhook(&Admin::operator(), p.workspace.clone(), hook())
                .await
                .unwrap();
            let t = &p.workspace.tenant;
            let ch = core
                .patient_chat(s, t, "main", &p.id.to_string())
                .await
                .unwrap();
            for i in 0..n {
                core.outbound(s, &ch, format!("m{i}")).await.unwrap();
            }
        }
        Two { core, staff, pats }
    }
}

use std::path::Path;
use std::sync::Arc;

use crate::model::User;
use crate::store::checkpoint::Checkpointer;
use crate::store::{OpenError, Store};
pub use actor::Admin;
use commit::Committer;
use hub::Hub;
use limits::{Limits, LoginThrottle, UserBuckets};

pub struct Core {
    store: Arc<Store>,
    pub hub: Arc<Hub>,
    commit: Committer,
    checkpointer: Checkpointer,
    passwords: passwords::Passwords,
    login_throttle: LoginThrottle,
    send_buckets: UserBuckets,
    pub limits: Limits,
    pub metrics: Arc<metrics::Metrics>,
    /// A compaction failed (or was cut short) since deletions were made:
    /// the next purge run compacts even if it deletes nothing
    /// (`retention`).
    compact_owed: std::sync::atomic::AtomicBool,
}

/// Runs a long read (a whole history, a search) on the blocking pool.
pub async fn blocking<T, E, F>(f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<crate::error::Error> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(crate::error::Error::internal(e)))?
}

/// An authenticated caller: the user, the hash of the token used, and
/// whether the user is an API client's (see [`Caller::actor`]).
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub token: [u8; 32],
    pub client: bool,
}

impl Core {
    /// Opens the store in `dir` and starts the sequencer.
    pub fn open(dir: &Path, limits: Limits) -> Result<Arc<Core>, OpenError> {
        let (store, summary) = Store::open_with(dir, &limits.store)?;
        tracing::info!(
            recovered = summary.recovered,
            replayed = summary.replayed,
            users = summary.last_user,
            rooms = summary.last_room,
            last_message = summary.last_msg,
            "store opened cleanly"
        );
        let store = Arc::new(store);
        let metrics = Arc::new(metrics::Metrics::default());
        let dead = store
            .dead_count()
            .map_err(|e| OpenError::Other(format!("counting dead webhook deliveries: {e}")))?;
        metrics
            .webhook_dead
            .store(dead, std::sync::atomic::Ordering::Relaxed);
        let queue = limits.conn_queue.max(2 * commit::MAX_BATCH);
        let hub = Arc::new(Hub::new(queue, limits.conns_per_user));
        let commit = Committer::start(store.clone(), hub.clone(), metrics.clone())
            .map_err(|e| OpenError::Other(format!("starting the writer: {e}")))?;
        let checkpointer = Checkpointer::start(store.clone(), limits.checkpoint.clone())
            .map_err(|e| OpenError::Other(format!("starting the checkpoint thread: {e}")))?;
        let passwords = passwords::Passwords::start(limits.argon2_threads)
            .map_err(|e| OpenError::Other(format!("starting the password threads: {e}")))?;
        Ok(Arc::new(Core {
            store,
            hub,
            commit,
            checkpointer,
            passwords,
            login_throttle: LoginThrottle::new(
                limits.login_fails_per_account,
                limits.login_fails_per_addr,
            ),
            send_buckets: UserBuckets::new(limits.msg_burst, limits.msg_rate),
            limits,
            metrics,
            compact_owed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Finishes queued writes and syncs. Call once, at the end.
    pub fn shutdown(&self) {
        self.commit.shutdown();
        self.checkpointer.shutdown();
        let s = self.commit.stats();
        if s.batches > 0 {
            tracing::info!(
                batches = s.batches,
                jobs = s.jobs,
                max_batch = s.max_batch,
                mean_sync_us = s.sync_micros_total / s.batches,
                max_sync_us = s.sync_micros_max,
                "group commit figures"
            );
        }
    }

    pub fn commit_stats(&self) -> commit::CommitStats {
        self.commit.stats()
    }

    /// `/metrics`: everything the core counts, in Prometheus text format.
    pub fn render_metrics(&self, extra: &str) -> String {
        let space = self.store.space();
        let disk = metrics::Disk {
            full: space.refusing().is_some(),
            free: space.free(),
            reserve: space.reserve(),
        };
        self.metrics.render(self.commit.visible().0, disk, extra)
    }

    /// The writer thread takes jobs: a no-op job goes through it. (A job
    /// refused with its group for lack of room went through it too.)
    pub async fn writer_alive(&self) -> bool {
        match self.commit.run(|_| Ok(((), vec![]))).await {
            Ok(()) => true,
            Err(e) => e.kind == crate::error::Kind::Unavailable,
        }
    }

    /// `/readyz`: the writer takes jobs and the store takes writes; if it
    /// does not, `Unavailable` saying why (a full disk).
    pub async fn ready(&self) -> Result<(), crate::error::Error> {
        if !self.writer_alive().await {
            return Err(crate::error::Error::internal(
                "the writer does not take jobs",
            ));
        }
        match self.store.space().refusing() {
            Some(why) => Err(crate::error::Error::unavailable().with_message(why)),
            None => Ok(()),
        }
    }

    /// Items read by store range scans so far (for cost tests).
    #[cfg(test)]
    pub fn items_scanned(&self) -> u64 {
        self.store.scanned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, UserId, Workspace};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A job that holds the writer thread until `gate` is released.
    async fn hold_writer(core: &Core, started: Option<mpsc::Sender<()>>) -> mpsc::Sender<()> {
        let (gate, wait) = mpsc::channel::<()>();
        let _answered = core
            .commit
            .submit(move |_| {
                if let Some(s) = started {
                    let _ = s.send(());
                }
                let _ = wait.recv();
                Ok(((), vec![]))
            })
            .await
            .unwrap();
        gate
    }

    /// A job that adds user `name` (its id from the writer's counter).
    async fn add_user(core: &Core, name: &'static str) -> crate::error::Result<UserId> {
        core.commit
            .run(move |tx| {
                let user = User {
                    id: tx.next_user_id(),
                    username: name.into(),
                    display_name: name.into(),
                    role: Role::Staff,
                    workspace: Workspace::default(),
                    password_hash: String::new(),
                    created_ms: tx.now_ms,
                };
                tx.batch.put_user(&user);
                Ok((user.id, vec![]))
            })
            .await
    }

    /// With no room on the disk, a group is refused whole: every job in it
    /// answers UNAVAILABLE (the one that failed on its own too), no id is
    /// used and nothing it staged remains; readiness and the metrics say
    /// why, the writer still answers. Once there is room the checkpoint
    /// thread lets writes resume by themselves, with the next id.
    #[tokio::test]
    async fn a_group_refused_for_room_uses_no_id_and_writes_resume_by_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(add_user(&core, "ann").await.unwrap(), UserId(1));
        core.store.space().pretend_free(Some(0));
        // One group: a no-op holding the writer, a write, a failing job.
        let gate = hold_writer(&core, None).await;
        let bob = core
            .commit
            .submit(|tx| {
                let id = tx.next_user_id();
                tx.batch.put_user(&User {
                    id,
                    username: "bob".into(),
                    display_name: "bob".into(),
                    role: Role::Staff,
                    workspace: Workspace::default(),
                    password_hash: String::new(),
                    created_ms: tx.now_ms,
                });
                Ok((id, vec![]))
            })
            .await
            .unwrap();
        let failing = core
            .commit
            .submit(|_| Err::<((), _), _>(crate::error::Error::conflict("on its own")))
            .await
            .unwrap();
        gate.send(()).unwrap();
        let within = Duration::from_secs(10);
        for e in [
            tokio::time::timeout(within, bob)
                .await
                .unwrap()
                .unwrap()
                .unwrap_err(),
            tokio::time::timeout(within, failing)
                .await
                .unwrap()
                .unwrap()
                .unwrap_err(),
        ] {
            assert_eq!(e.kind, crate::error::Kind::Unavailable, "{e}");
            assert!(e.retry_after.is_some());
        }
        let e = add_user(&core, "bob").await.unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Unavailable);
        assert!(core.writer_alive().await);
        let e = core.ready().await.unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Unavailable);
        assert!(e.message.contains("disk is full"), "{}", e.message);
        assert!(core.render_metrics("").contains("parlor_disk_full 1\n"));
        assert!(core.user(UserId(2)).unwrap().is_none());

        core.store.space().pretend_free(None);
        tokio::time::timeout(within, async {
            while core.ready().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("writes resume within 10 s");
        assert!(core.render_metrics("").contains("parlor_disk_full 0\n"));
        // Nothing the refused group staged is left for the writer to see.
        let seen = core
            .commit
            .run(|tx| Ok((tx.store.user_id_by_name("bob")?, vec![])))
            .await
            .unwrap();
        assert_eq!(seen, None);
        assert_eq!(add_user(&core, "bob").await.unwrap(), UserId(2));
        core.shutdown();
    }

    /// A job's writes are seen outside the writer only once its group is
    /// durable — from a task or the blocking pool — so no answer needs to
    /// wait for a sync after its reads.
    #[tokio::test]
    async fn no_read_sees_a_write_before_its_group_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        // The writer takes the first job and holds; the next two queue
        // behind it and so join its group: the user is applied, then the
        // third job holds the group before its sync.
        let first = hold_writer(&core, None).await;
        let _answered = core
            .commit
            .submit(|tx| {
                let user = User {
                    id: tx.next_user_id(),
                    username: "ann".into(),
                    display_name: "ann".into(),
                    role: Role::Staff,
                    workspace: Workspace::default(),
                    password_hash: String::new(),
                    created_ms: tx.now_ms,
                };
                tx.batch.put_user(&user);
                Ok(((), vec![]))
            })
            .await
            .unwrap();
        let (started, is_holding) = mpsc::channel();
        let second = hold_writer(&core, Some(started)).await;
        first.send(()).unwrap();
        tokio::task::spawn_blocking(move || is_holding.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the third job runs");

        // The user's job ran, its group is not durable: no read outside
        // the writer sees it (sled gets a group only after its log
        // record is synced), from a task or the blocking pool.
        assert!(core.user(UserId(1)).unwrap().is_none());
        let c = core.clone();
        let pooled = blocking(move || c.user(UserId(1))).await.unwrap();
        assert!(pooled.is_none(), "a read saw a user that is not durable");

        second.send(()).unwrap();
        let c = core.clone();
        let shown = tokio::time::timeout(Duration::from_secs(10), async move {
            loop {
                if let Some(u) = c.user(UserId(1)).unwrap() {
                    return u;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the user is seen once durable");
        assert_eq!(shown.username, "ann");
        core.shutdown();
    }
}
