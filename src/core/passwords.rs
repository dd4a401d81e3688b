//! Password hashing: argon2id on a small fixed pool of OS threads, so a
//! burst of logins neither stalls chat nor grows memory.
//!
//! - `--argon2-threads` threads (default: the core count), each at the
//!   lowest CPU priority (`SCHED_IDLE`, or nice 19 where that is refused):
//!   the event loop and the sequencer preempt them, so under load logins
//!   take longer and chat does not.
//! - Each thread owns one argon2 memory block (19 MiB), made at its first
//!   hash and reused for every hash and verification after it: the pool's
//!   memory is `threads × 19 MiB` at most, and stays that after a burst
//!   (the allocator has nothing to keep).
//! - Requests wait in one bounded queue ([`QUEUE_PER_THREAD`] per thread);
//!   a request that finds it full is refused at once with `RATE_LIMITED`
//!   and a `Retry-After`, and one whose caller has gone is skipped.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) as
//! the argon2 crate writes and reads them: verification takes the stored
//! string's algorithm, version, parameters and salt, computes in the
//! thread's block and compares in constant time. Nothing here touches the
//! store.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use argon2::password_hash::{self, rand_core::OsRng, Output, ParamsString, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Requests that may wait, per thread: at ~70 ms a hash, a login waits a
/// few seconds at most before its turn.
pub const QUEUE_PER_THREAD: usize = 64;

/// What a refused request is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane. Every new hash has
/// these; a stored hash with other parameters is verified with its own,
/// within the thread's block.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

/// The salt of the verification made for an unknown username: it costs
/// what a real one costs, and matches nothing.
const UNKNOWN_USER_SALT: &[u8] = b"parlor-no-such-user";

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// The pool. Dropping it stops the threads once the queue is empty.
pub struct Passwords {
    jobs: SyncSender<Job>,
    #[cfg(test)]
    counts: Arc<Counts>,
}

/// Counted by the threads, read by the tests (no lock, no allocation).
#[derive(Default)]
struct Counts {
    /// argon2 computations made, of any kind.
    computed: AtomicU64,
    /// Jobs running now, and the most ever running at once.
    busy: AtomicUsize,
    peak: AtomicUsize,
}

impl Passwords {
    /// Starts `threads` (at least 1) hashing threads.
    pub fn start(threads: usize) -> std::io::Result<Passwords> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads * QUEUE_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        let counts = Arc::new(Counts::default());
        for i in 0..threads {
            let (queue, counts) = (queue.clone(), counts.clone());
            std::thread::Builder::new()
                .name(format!("parlor-argon2-{i}"))
                .spawn(move || work(&queue, counts))?;
        }
        Ok(Passwords {
            jobs,
            #[cfg(test)]
            counts,
        })
    }

    /// A new PHC string for `password`, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move |m| {
            let salt = SaltString::generate(&mut OsRng);
            hash_with_salt(m, &password, &salt).map_err(Error::internal)
        })
        .await?
    }

    /// Checks `password` against a stored PHC string; with none (an
    /// unknown user) it spends the same work and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        self.run(move |m| match hash {
            Some(hash) => verify_with(m, &password, &hash),
            None => {
                unknown_user(m, &password);
                false
            }
        })
        .await
    }

    /// Queues `f` for a thread, or refuses at once if the queue is full.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Memory) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |m| {
            // Whoever asked has gone (a client hung up): no work for it.
            if !tx.is_closed() {
                let _ = tx.send(f(m));
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Error::rate_limited(RETRY_AFTER)
                    .with_message("too many logins at once; try again shortly"))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::internal("the password threads have stopped"))
            }
        }
        rx.await
            .map_err(|_| Error::internal("a password job failed without an answer"))
    }
}

/// One thread's argon2 memory: made at its first use, then reused.
pub struct Memory {
    blocks: Vec<Block>,
    counts: Arc<Counts>,
}

impl Memory {
    fn blocks(&mut self) -> &mut [Block] {
        if self.blocks.is_empty() {
            self.blocks = vec![Block::new(); params().block_count()];
        }
        self.counts.computed.fetch_add(1, Relaxed);
        &mut self.blocks
    }
}

/// A thread's life: lower its priority, then run jobs until the pool is
/// dropped. A job that panics loses its answer (its caller gets
/// `INTERNAL`), not the thread.
fn work(queue: &Mutex<Receiver<Job>>, counts: Arc<Counts>) {
    lower_priority();
    let mut memory = Memory {
        blocks: Vec::new(),
        counts: counts.clone(),
    };
    loop {
        let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let now = counts.busy.fetch_add(1, Relaxed) + 1;
        counts.peak.fetch_max(now, Relaxed);
        let _ = catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
        counts.busy.fetch_sub(1, Relaxed);
    }
}

/// Puts the calling thread at the lowest CPU priority: `SCHED_IDLE` on
/// Linux, else (or if refused) nice 19. Says so once if neither works.
/// Also the compaction's thread (`retention`): background work that
/// must take only the CPU chat leaves idle.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // Zeroed, not a struct literal: musl's `sched_param` has more
        // fields than glibc's (its static build failed on the literal).
        // SAFETY: `sched_param` is plain integers; all zeros is valid, and
        // priority 0 is what SCHED_IDLE requires.
        let param: libc::sched_param = unsafe { std::mem::zeroed() };
        // SAFETY: plain system call on the calling thread (pid 0) with a
        // valid parameter; lowering needs no privilege.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
    }
    // SAFETY: as above; on Linux `PRIO_PROCESS` with 0 is this thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0 {
        return;
    }
    let cause = std::io::Error::last_os_error();
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!(%cause, "could not lower a background thread's CPU priority (password hashing, compaction); it competes with chat");
    });
}

/// The PHC string of `password` with `salt`, at [`params`], computed in
/// the thread's block.
fn hash_with_salt(
    m: &mut Memory,
    password: &str,
    salt: &SaltString,
) -> password_hash::Result<String> {
    let params = params();
    let mut raw = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut raw)?;
    let out_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(out_len, |out| {
        Ok(argon.hash_password_into_with_memory(
            password.as_bytes(),
            salt_bytes,
            out,
            m.blocks(),
        )?)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string. A string that cannot
/// be verified (unparsable, or needing more memory than the block) is
/// logged and matches nothing.
fn verify_with(m: &mut Memory, password: &str, stored: &str) -> bool {
    check(m, password, stored).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a stored password hash cannot be verified");
        false
    })
}

fn check(m: &mut Memory, password: &str, stored: &str) -> password_hash::Result<bool> {
    let phc = PasswordHash::new(stored)?;
    let algorithm = Algorithm::try_from(phc.algorithm)?;
    let version = phc
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&phc)?;
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return Err(password_hash::Error::PhcStringField);
    };
    let mut raw = [0u8; 64];
    let salt = salt.decode_b64(&mut raw)?;
    let argon = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        Ok(argon.hash_password_into_with_memory(password.as_bytes(), salt, out, m.blocks())?)
    })?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// The verification for a username that does not exist: a full hash at
/// [`params`], thrown away. Returns what it computed (for tests).
fn unknown_user(m: &mut Memory, password: &str) -> Option<String> {
    let salt = SaltString::encode_b64(UNKNOWN_USER_SALT).ok()?;
    hash_with_salt(m, password, &salt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    use tokio::task::JoinHandle;

    fn plain() -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
    }

    const PHC_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

    #[tokio::test]
    async fn verify_accepts_the_password_and_nothing_else() {
        let p = Passwords::start(2).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with(PHC_PREFIX), "{h}");
        assert!(p
            .verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!p.verify("wrong".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("".into(), Some(h)).await.unwrap());
        assert!(!p.verify("correct horse".into(), None).await.unwrap());
        assert!(!p
            .verify("correct horse".into(), Some("not a hash".into()))
            .await
            .unwrap());
    }

    /// Hashes stored before the pool (the argon2 crate's own
    /// `hash_password`) verify in the pool, and the pool's hashes verify
    /// with the crate's `verify_password`: the stored format is unchanged.
    #[tokio::test]
    async fn hashes_are_compatible_with_the_argon2_crate_both_ways() {
        let p = Passwords::start(1).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let stored = plain().hash_password(b"pw-ann", &salt).unwrap().to_string();
        assert!(p
            .verify("pw-ann".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!p.verify("pw-bob".into(), Some(stored)).await.unwrap());

        let made = p.hash("pw-bob".into()).await.unwrap();
        let parsed = PasswordHash::new(&made).unwrap();
        assert!(plain().verify_password(b"pw-bob", &parsed).is_ok());
        assert!(plain().verify_password(b"pw-ann", &parsed).is_err());
        // Same salt, same password: the same string as the crate writes.
        let mut m = Memory {
            blocks: Vec::new(),
            counts: Arc::default(),
        };
        let salt = SaltString::generate(&mut OsRng);
        assert_eq!(
            hash_with_salt(&mut m, "pw-cy", &salt).unwrap(),
            plain().hash_password(b"pw-cy", &salt).unwrap().to_string()
        );
    }

    /// A stored hash with other (cheaper) parameters, or of another argon2
    /// variant, verifies with its own parameters in the same block.
    #[tokio::test]
    async fn stored_hashes_with_other_parameters_verify_with_theirs() {
        let p = Passwords::start(1).unwrap();
        let cheap = Params::new(1024, 1, 1, None).unwrap();
        for alg in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
            let salt = SaltString::generate(&mut OsRng);
            let stored = Argon2::new(alg, Version::V0x13, cheap.clone())
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(p.verify("pw".into(), Some(stored.clone())).await.unwrap());
            assert!(!p.verify("pw!".into(), Some(stored)).await.unwrap());
        }
        // One that needs more than the block matches nothing (and says so
        // in the log) rather than growing the thread's memory.
        let big = Params::new(64 * 1024, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, big)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(!p.verify("pw".into(), Some(stored)).await.unwrap());
    }

    /// An unknown user costs a full argon2 computation at the real
    /// parameters, like a known one.
    #[tokio::test]
    async fn an_unknown_user_costs_a_real_verification() {
        let mut m = Memory {
            blocks: Vec::new(),
            counts: Arc::default(),
        };
        let spent = unknown_user(&mut m, "anything").expect("the dummy hash was made");
        assert!(spent.starts_with(PHC_PREFIX), "{spent}");
        let parsed = PasswordHash::new(&spent).unwrap();
        assert!(plain().verify_password(b"anything", &parsed).is_ok());

        let p = Passwords::start(1).unwrap();
        let known = p.hash("pw".into()).await.unwrap();
        let before = p.counts.computed.load(Relaxed);
        assert!(!p.verify("pw".into(), None).await.unwrap());
        assert_eq!(p.counts.computed.load(Relaxed), before + 1);
        assert!(!p.verify("nope".into(), Some(known)).await.unwrap());
        assert_eq!(p.counts.computed.load(Relaxed), before + 2);
    }

    /// Queues a job that holds its thread until released; `started`
    /// says when a thread took it.
    fn hold(p: &Arc<Passwords>) -> (mpsc::Receiver<()>, mpsc::Sender<()>, JoinHandle<Result<()>>) {
        let (started_tx, started) = mpsc::channel();
        let (release, wait) = mpsc::channel::<()>();
        let p = p.clone();
        let held = tokio::spawn(async move {
            p.run(move |_| {
                let _ = started_tx.send(());
                let _ = wait.recv_timeout(Duration::from_secs(30));
            })
            .await
        });
        (started, release, held)
    }

    /// With N threads no more than N jobs ever run at once, and every
    /// queued one is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_n_hashes_at_once() {
        let p = Passwords::start(2).unwrap();
        let hashes =
            futures_util::future::join_all((0..12).map(|i| p.hash(format!("pw{i}")))).await;
        for (i, h) in hashes.into_iter().enumerate() {
            let h = h.unwrap();
            assert!(p.verify(format!("pw{i}"), Some(h)).await.unwrap());
        }
        let peak = p.counts.peak.load(Relaxed);
        assert!((1..=2).contains(&peak), "peak {peak} with 2 threads");
    }

    /// A full queue refuses at once with RATE_LIMITED and a Retry-After;
    /// once it drains, requests are taken again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_with_retry_after() {
        let p = Arc::new(Passwords::start(1).unwrap());
        let (started, release, held) = hold(&p);
        tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the thread took the holding job");
        // The one thread is held: fill its queue.
        let queued: Vec<_> = (0..QUEUE_PER_THREAD)
            .map(|i| {
                let (tx, rx) = oneshot::channel();
                let job: Job = Box::new(move |_| {
                    let _ = tx.send(i);
                });
                p.jobs
                    .try_send(job)
                    .map_err(|_| "queue full too early")
                    .unwrap();
                rx
            })
            .collect();
        let refused = p.hash("pw".into()).await.unwrap_err();
        assert_eq!(refused.kind, Kind::RateLimited);
        assert_eq!(refused.retry_after, Some(RETRY_AFTER));
        release.send(()).unwrap();
        for (i, rx) in queued.into_iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(30), rx).await;
            assert_eq!(got.unwrap().unwrap(), i);
        }
        held.await.unwrap().unwrap();
        let h = p.hash("pw".into()).await.unwrap();
        assert!(p.verify("pw".into(), Some(h)).await.unwrap());
    }

    /// The threads run at the lowest priority (read back from the kernel
    /// on the thread itself); the caller's thread is left as it was.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_at_the_lowest_priority() {
        fn mine() -> (i32, i32) {
            // SAFETY: plain queries of the calling thread.
            unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            }
        }
        let caller = mine();
        let p = Passwords::start(2).unwrap();
        let (policy, nice) = p.run(|_| mine()).await.unwrap();
        assert!(
            policy == libc::SCHED_IDLE || nice == 19,
            "policy {policy}, nice {nice}"
        );
        assert_eq!(mine(), caller, "the caller's thread changed");
        assert_ne!(caller.0, libc::SCHED_IDLE);
    }
}
