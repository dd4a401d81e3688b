//! The checkpoint thread: makes sled's copy durable every few seconds (or
//! after so many bytes of log), so the replay at the next open stays
//! short, keeps the next log segment preallocated ahead of need (and the
//! ballast, `space`), lets writes resume once there is room again, and
//! between checkpoints starts writing sled's recent writes out, so a
//! checkpoint's `fsync` is never a burst the log's `fdatasync` waits behind.
//! (The log's old segments go only by a compaction, `compact`.)
//! Nothing here is on the commit path: the sequencer never waits for it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Store;

/// When to checkpoint.
#[derive(Clone, Debug)]
pub struct Every {
    pub interval: Duration,
    /// …or after this many bytes of log since the last one.
    pub bytes: u64,
}

impl Default for Every {
    fn default() -> Self {
        Every {
            interval: Duration::from_secs(5),
            bytes: 64 << 20,
        }
    }
}

/// How often the thread looks at the log's size and the spare.
const TICK: Duration = Duration::from_millis(50);

pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Checkpointer {
    pub fn start(store: Arc<Store>, every: Every) -> std::io::Result<Checkpointer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = std::thread::Builder::new()
            .name("parlor-checkpoint".into())
            .spawn({
                let stop = stop.clone();
                move || run(&store, &every, &stop)
            })?;
        Ok(Checkpointer {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread after one last checkpoint (call after the writer
    /// has stopped, so the log needs no replay at the next open).
    pub fn shutdown(&self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A checkpointer dropped without `shutdown` (a core dropped in a test,
/// say) stops its thread the same way, so no thread is left checkpointing
/// a store nobody holds — into a directory that may be gone.
impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(store: &Store, every: &Every, stop: &(Mutex<bool>, Condvar)) {
    let mut last = Instant::now();
    let mut bytes_at_last = 0u64;
    let mut spare_failing = false;
    loop {
        let stopping = {
            let (flag, cv) = stop;
            let g = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (g, _) = cv
                .wait_timeout_while(g, TICK, |s| !*s)
                .unwrap_or_else(|p| p.into_inner());
            *g
        };
        // The spare first (writes need it), then the ballast. No room for
        // them is the space check's to say; a failure to make one is
        // logged here, once.
        let prepared = store.wal().prepare_spare().and_then(|spare| {
            store.space().keep_ballast()?;
            Ok(spare)
        });
        let spare_ready = match prepared {
            Ok(ready) => {
                if spare_failing {
                    spare_failing = false;
                    tracing::info!("the next write-ahead log segment can be preallocated again");
                }
                ready
            }
            Err(e) => {
                if !spare_failing {
                    spare_failing = true;
                    tracing::warn!(
                        error = %e,
                        "cannot preallocate the next write-ahead log segment or the ballast"
                    );
                }
                false
            }
        };
        store.space().check(spare_ready);
        let bytes = store
            .wal()
            .appended
            .load(std::sync::atomic::Ordering::Relaxed);
        let (committed, checkpointed) = store.log_position();
        let due = last.elapsed() >= every.interval || bytes - bytes_at_last >= every.bytes;
        // Once sled failed to write, it fails every flush until reopened.
        if (stopping || (due && committed > checkpointed)) && !store.space().until_restart() {
            match store.checkpoint() {
                Ok(_) => {}
                // The disk filled past the reserve (something else wrote):
                // the log stays the truth; writes wait for a restart.
                Err(e) if super::space::is_no_space(&e) => store.space().refuse_until_restart(&e),
                Err(e) => {
                    // A failed fsync may have dropped sled's dirty pages; a
                    // later "successful" one would not cover them, so the
                    // log must not be trimmed on its word. Stop: at the next
                    // open the log is replayed and nothing acknowledged is
                    // lost.
                    tracing::error!(error = %e, "the checkpoint could not sync the store; stopping");
                    std::process::abort();
                }
            }
            last = Instant::now();
            bytes_at_last = bytes;
        } else if let Err(e) = store.start_writeback() {
            // Only a help to the next checkpoint, which reports failures.
            tracing::debug!(error = %e, "could not start writing sled's data out");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread does its two jobs on its own: a spare segment appears,
    /// and a commit is checkpointed (recorded where open looks) within
    /// its interval.
    #[test]
    fn the_thread_preallocates_and_checkpoints_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let every = Every {
            interval: Duration::from_millis(100),
            bytes: u64::MAX,
        };
        let cp = Checkpointer::start(store.clone(), every).unwrap();
        let mut b = super::super::WriteBatch::default();
        b.put_dm(
            crate::model::UserId(1),
            crate::model::UserId(2),
            crate::model::RoomId(3),
        );
        let mut record = Vec::new();
        b.encode_into(&mut record);
        store.stage(b);
        let seq = store.commit(&record).unwrap();
        let wal = super::super::wal_dir(dir.path());
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.log_position().1 < seq || !wal.join("spare.tmp").exists() {
            assert!(
                Instant::now() < deadline,
                "no checkpoint or spare within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(super::super::wal::read_checkpoint(&wal).unwrap(), Some(seq));
        cp.shutdown();
    }

    /// Writing sled's data out between checkpoints works on the index in
    /// use, also once a compaction swapped it, and changes nothing a
    /// reopen sees.
    #[test]
    fn writeback_between_checkpoints_follows_the_index_in_use() {
        use crate::store::testing::{commit, msg, reopen};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let mut b = super::super::WriteBatch::default();
        b.put_message(&msg(1, 1));
        commit(&store, vec![b]);
        store.start_writeback().unwrap();
        let before = store.db().dir.clone();
        store.compact().unwrap();
        assert_ne!(store.db().dir, before, "the compaction swapped no index");
        let mut b = super::super::WriteBatch::default();
        b.put_message(&msg(2, 1));
        commit(&store, vec![b]);
        store.start_writeback().unwrap();
        drop(store);
        let (store, _) = reopen(dir.path());
        for id in [1, 2] {
            assert!(store.message(crate::model::MsgId(id)).unwrap().is_some());
        }
    }
}
