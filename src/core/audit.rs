//! The audit trail (API.md §7): one append-only, hash-chained record of
//! who read or changed which patient's conversation, of sign-ins, and of
//! the operator's changes — for the whole daemon. Never imports sled.
//!
//! **Who writes.** Only jobs of the sequencer append records
//! (`commit::Tx::audit`), in the same group commit as the write they
//! record: a post's record is written by the post job itself. `seq` and
//! the chain's last hash belong to the writer, like the id counters
//! ([`Head`], resumed at open from the store's newest record); a job that
//! fails gives its records back, so `seq` has no gaps.
//!
//! **Reads.** An answer that shows messages of a patient chat is built
//! from a [`ToShow`], which core's message reads return and which holds
//! the messages until [`Core::show`] has made the `chat.read` record
//! durable: one small job per answer, taken into the next group commit
//! with everyone else's — about one commit's wait, never an fsync of its
//! own. Live pushes are not recorded (an event carries what it shows,
//! read by the writer, never through a `ToShow`).
//!
//! **Canonical form and hash.** A record's canonical JSON is what
//! `serde_json` writes for [`Record`] without its `hash`: no whitespace,
//! members in the order `seq, at, kind, actor, tenant, instance,
//! patient` (only when there is one), `detail`; `detail`'s members sorted
//! by key (its values are strings, numbers or arrays of strings); strings
//! escaped as `serde_json` does (`"`, `\` and control characters only).
//! `hash` is the lower-case hex SHA-256 of the previous record's `hash`
//! (64 hex characters; 64 `0`s before record 1) followed by this record's
//! canonical JSON. An exported record is its canonical JSON with `hash`
//! added last, so a verifier drops `hash` and hashes what is left.
//!
//! Nothing deletes or rewrites a record: the store has no way to.

mod chain;
mod to_show;

pub use chain::{verify_chain, Head, Record, Verdict};
pub use to_show::ToShow;

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

use super::{Admin, Core};
use crate::error::{Error, Result};
use crate::model::{UserId, Workspace};
use crate::store::{Store, StoredAudit};

/// What a record records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ChatRead,
    ChatPost,
    ChatArchive,
    AuthLogin,
    AuthFail,
    AuthLogout,
    TokenIssue,
    UserAdd,
    ApiClientAdd,
    ApiClientRotate,
    WebhookSet,
    WebhookDelete,
    WebhookDead,
    WebhookRetry,
    Backup,
    Restore,
    UserErase,
    RetentionSet,
    HoldSet,
    RetentionPurge,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::ChatRead,
        Kind::ChatPost,
        Kind::ChatArchive,
        Kind::AuthLogin,
        Kind::AuthFail,
        Kind::AuthLogout,
        Kind::TokenIssue,
        Kind::UserAdd,
        Kind::ApiClientAdd,
        Kind::ApiClientRotate,
        Kind::WebhookSet,
        Kind::WebhookDelete,
        Kind::WebhookDead,
        Kind::WebhookRetry,
        Kind::Backup,
        Kind::Restore,
        Kind::UserErase,
        Kind::RetentionSet,
        Kind::HoldSet,
        Kind::RetentionPurge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ChatRead => "chat.read",
            Kind::ChatPost => "chat.post",
            Kind::ChatArchive => "chat.archive",
            Kind::AuthLogin => "auth.login",
            Kind::AuthFail => "auth.fail",
            Kind::AuthLogout => "auth.logout",
            Kind::TokenIssue => "token.issue",
            Kind::UserAdd => "user.add",
            Kind::ApiClientAdd => "api_client.add",
            Kind::ApiClientRotate => "api_client.rotate",
            Kind::WebhookSet => "webhook.set",
            Kind::WebhookDelete => "webhook.delete",
            Kind::WebhookDead => "webhook.dead",
            Kind::WebhookRetry => "webhook.retry",
            Kind::Backup => "backup",
            Kind::Restore => "restore",
            Kind::UserErase => "user.erase",
            Kind::RetentionSet => "retention.set",
            Kind::HoldSet => "hold.set",
            Kind::RetentionPurge => "retention.purge",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A person (their id) or an API client's own user (`client:NAME`).
    User(UserId),
    /// The operator's command line (`cli`), with the daemon or without.
    Cli,
    /// A failed sign-in that names no account (`unknown`): what was typed
    /// is not kept, it may be a password.
    Unknown,
    /// The daemon itself (`daemon`): the webhook worker giving up, the
    /// retention purge.
    Daemon,
}

impl Actor {
    /// The record's `actor`: one point read tells an API client's user.
    pub(crate) fn resolve(&self, store: &Store) -> Result<String> {
        Ok(match self {
            Actor::User(id) => match store.api_client_of(*id)? {
                Some(c) => format!("client:{}", c.name),
                None => id.to_string(),
            },
            Actor::Cli => "cli".into(),
            Actor::Unknown => "unknown".into(),
            Actor::Daemon => "daemon".into(),
        })
    }
}

/// What a record says, before the writer gives it its place in the chain.
#[derive(Clone, Debug)]
pub struct Entry {
    kind: Kind,
    actor: Actor,
    workspace: Option<Workspace>,
    patient: Option<UserId>,
    detail: BTreeMap<&'static str, Value>,
}

impl Entry {
    pub fn new(kind: Kind, actor: Actor) -> Entry {
        Entry {
            kind,
            actor,
            workspace: None,
            patient: None,
            detail: BTreeMap::new(),
        }
    }

    /// The workspace it concerns (none for daemon-wide events).
    pub fn workspace(mut self, ws: &Workspace) -> Entry {
        self.workspace = Some(ws.clone());
        self
    }

    /// The patient whose chat (or account) it concerns.
    pub fn patient(mut self, patient: UserId) -> Entry {
        self.patient = Some(patient);
        self
    }

    pub(crate) fn actor(&self) -> &Actor {
        &self.actor
    }

    /// One member of `detail`: a string, a number or a list of strings.
    pub fn detail(mut self, key: &'static str, value: impl Into<Value>) -> Entry {
        self.detail.insert(key, value.into());
        self
    }
}

/// Which records to list or export.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub instance: Option<String>,
    pub patient: Option<UserId>,
    pub kind: Option<Kind>,
    /// Only records at or after this (Unix ms).
    pub since_ms: Option<u64>,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().map_or(true, |w| have.as_ref() == Some(w))
        };
        eq(&self.tenant, &r.tenant)
            && eq(&self.instance, &r.instance)
            && eq(&self.patient.map(|p| p.to_string()), &r.patient)
            && self.kind.map_or(true, |k| k.as_str() == r.kind)
    }
}

/// `pageSize` when none is given, and its most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Records looked at per page at most: a filter that matches rarely ends
/// its page early, with fewer records and a `nextPageToken` to go on.
pub const SCAN_PER_PAGE: usize = 10_000;

/// A page of records, oldest first, and the seq the next page starts at
/// (`None`: the trail ends here, for now).
#[derive(Clone, Debug)]
pub struct Page {
    pub records: Vec<Record>,
    pub next: Option<u64>,
}

impl Core {
    /// Appends records in a job of their own and waits until they are
    /// durable: for events that write nothing else (a failed sign-in).
    pub(crate) async fn record(&self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.commit
            .run(move |tx| {
                for e in entries {
                    tx.audit(e)?;
                }
                Ok(((), vec![]))
            })
            .await
    }

    /// [`Core::record`] from a thread that may block (not the executor's).
    pub(crate) fn record_blocking(&self, entry: Entry) -> Result<()> {
        self.commit.run_blocking(move |tx| {
            tx.audit(entry)?;
            Ok(((), vec![]))
        })
    }

    /// `GET /admin/audit`: a page of records matching `filter`, oldest
    /// first, from seq `from` (else from `since_ms`, else the first). Admins
    /// only. Looks at most [`SCAN_PER_PAGE`] records, whatever the trail's
    /// length: the cost follows the page.
    pub fn audit_page(
        &self,
        _admin: &Admin<'_>,
        filter: &Filter,
        size: usize,
        from: Option<u64>,
    ) -> Result<Page> {
        let size = size.clamp(1, MAX_PAGE);
        let store = &self.store;
        let start = match (from, filter.since_ms) {
            (Some(seq), _) => seq.max(1),
            (None, Some(ms)) => store.audit_first_at(ms)?,
            (None, None) => 1,
        };
        let mut records = Vec::new();
        let mut scan = store.audit_from(start);
        let mut next = None;
        for (scanned, item) in scan.by_ref().enumerate() {
            let (seq, sealed) = item?;
            if records.len() == size || scanned == SCAN_PER_PAGE {
                next = Some(seq);
                break;
            }
            if let Some(r) = readable(seq, sealed).filter(|r| filter.matches(r)) {
                records.push(r);
            }
        }
        Ok(Page { records, next })
    }

    /// `parlor audit export`: every record matching `filter`, oldest
    /// first, one JSON line each, to `out`. Blocking: run it off the
    /// executor. Answers how many were written.
    pub fn audit_export(&self, filter: &Filter, out: &mut dyn Write) -> Result<u64> {
        let store = &self.store;
        let start = match filter.since_ms {
            Some(ms) => store.audit_first_at(ms)?,
            None => 1,
        };
        let mut n = 0;
        for item in store.audit_from(start) {
            let (seq, sealed) = item?;
            if let Some(r) = readable(seq, sealed).filter(|r| filter.matches(r)) {
                let mut line = serde_json::to_vec(&r).expect("serializing a record");
                line.push(b'\n');
                out.write_all(&line).map_err(Error::internal)?;
                n += 1;
            }
        }
        out.flush().map_err(Error::internal)?;
        Ok(n)
    }

    /// `parlor audit verify`: the whole chain recomputed. Blocking.
    pub fn audit_verify(&self) -> Result<Verdict> {
        verify_chain(self.store.audit_from(1))
    }
}

/// A stored record as shown, or — unreadable — left out (its seq's gap
/// shows; `parlor audit verify` names it).
fn readable(seq: u64, sealed: StoredAudit) -> Option<Record> {
    match sealed.and_then(|s| s.record()) {
        Ok(r) => Some(r),
        Err(why) => {
            tracing::error!(seq, why, "an audit record is unreadable; left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::Limits;
    use std::sync::Arc;

    fn login(i: u64) -> Entry {
        Entry::new(Kind::AuthLogin, Actor::User(UserId(i)))
            .workspace(&Workspace::default())
            .detail("addr", "127.0.0.1")
    }

    /// Opens a store this process just dropped (sled lets go of its lock
    /// a moment after the drop).
    fn reopen(dir: &std::path::Path) -> Arc<Core> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Core::open(dir, Limits::default()) {
                Err(crate::store::OpenError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r.unwrap_or_else(|e| panic!("reopen: {e}")),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_job_gives_its_seqs_back_and_the_chain_resumes_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        core.record(vec![login(1)]).await.unwrap();
        let failed = core
            .commit
            .run(|tx| {
                tx.audit(login(2))?;
                tx.audit(login(3))?;
                Err::<((), Vec<_>), _>(Error::conflict("refused after its records"))
            })
            .await;
        assert!(failed.is_err());
        core.record(vec![login(4), login(5)]).await.unwrap();
        let v = core.audit_verify().unwrap();
        assert_eq!((v.records, v.bad), (3, None));
        core.shutdown();
        drop(core);
        let core = reopen(dir.path());
        core.record(vec![login(6)]).await.unwrap();
        let v = core.audit_verify().unwrap();
        assert_eq!((v.records, v.bad), (4, None));
        let page = core
            .audit_page(&Admin::operator(), &Filter::default(), 10, None)
            .unwrap();
        let got: Vec<(u64, &str)> = page
            .records
            .iter()
            .map(|r| (r.seq, r.actor.as_str()))
            .collect();
        assert_eq!(got, [(1, "1"), (2, "4"), (3, "5"), (4, "6")]);
        assert_eq!(page.next, None);
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_page_looks_at_a_bounded_number_of_records_whatever_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        let n = 2 * SCAN_PER_PAGE as u64 + 500;
        core.commit
            .run(move |tx| {
                for i in 1..=n {
                    tx.audit(login(i))?;
                }
                Ok(((), vec![]))
            })
            .await
            .unwrap();
        core.record(vec![Entry::new(Kind::Backup, Actor::Cli)])
            .await
            .unwrap();
        let admin = Admin::operator();
        // Only the last record matches: the pages end early, each having
        // looked at no more than SCAN_PER_PAGE records (+1 to see there is more).
        let only = Filter {
            kind: Some(Kind::Backup),
            ..Filter::default()
        };
        let (mut from, mut pages, mut found) = (None, 0, Vec::new());
        loop {
            let before = core.items_scanned();
            let p = core.audit_page(&admin, &only, 10, from).unwrap();
            let scanned = core.items_scanned() - before;
            assert!(scanned <= SCAN_PER_PAGE as u64 + 1, "scanned {scanned}");
            pages += 1;
            found.extend(p.records);
            match p.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].seq, found[0].actor.as_str()), (n + 1, "cli"));
        // A page from the middle costs the page.
        let before = core.items_scanned();
        let p = core
            .audit_page(&admin, &Filter::default(), 5, Some(12_345))
            .unwrap();
        assert!(core.items_scanned() - before <= 6);
        let seqs: Vec<u64> = p.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [12_345, 12_346, 12_347, 12_348, 12_349]);
        assert_eq!(p.next, Some(12_350));
        core.shutdown();
    }
}
