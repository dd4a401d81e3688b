//! `parlor backup` / `parlor restore`: the store as JSON lines, one record
//! each (`store::Record`), between a header and a footer that carries the
//! record count and a SHA-256 of the record lines.
//!
//! ```text
//! {"kind":"parlor_backup","format":1,"created_ms":…,"last_message":N}
//! {"kind":"user","user":{…}}
//! …
//! {"kind":"end","records":1234,"sha256":"…"}
//! ```
//!
//! A backup taken while the daemon serves is a consistent cut of the
//! message log (every message up to the visible id at its start, nothing
//! after); the other records are read as they are while it runs. Restore
//! checks the footer before writing anything, writes into a fresh store
//! the records and what follows from them (`derived::Rebuild`: the same
//! rules the writer's jobs follow), and `verify` exports the restored
//! store again and compares checksums.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::{self, Actor, Entry, Head};
use super::commit::unix_ms;
use super::derived::Rebuild;
use super::Core;
use crate::error::{Error, Result};
use crate::model::{hex, MsgId};
use crate::store::{Record, Store, StoreError};

const FORMAT: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    kind: String,
    format: u64,
    created_ms: u64,
    last_message: u64,
}

#[derive(Serialize, Deserialize)]
struct Footer {
    kind: String,
    records: u64,
    sha256: String,
}

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub sha256: String,
    pub last_message: u64,
}

fn line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut l = serde_json::to_vec(v).expect("serializing a record");
    l.push(b'\n');
    l
}

/// Writes every record of `store` (messages up to `upto`) to `out`;
/// `seal` sees what was written before the footer is, and may refuse it
/// (then the backup has no footer: it is not valid).
fn write_backup(
    store: &Store,
    upto: u64,
    out: &mut dyn Write,
    seal: &mut dyn FnMut(&Summary) -> Result<()>,
) -> Result<Summary> {
    let header = Header {
        kind: "parlor_backup".into(),
        format: FORMAT,
        created_ms: unix_ms(),
        last_message: upto,
    };
    out.write_all(&line(&header)).map_err(Error::internal)?;
    let mut sha = Sha256::new();
    let mut records = 0u64;
    store.export(crate::model::MsgId(upto), &mut |r| {
        let l = line(&r);
        sha.update(&l);
        records += 1;
        out.write_all(&l).map_err(|e| StoreError(e.to_string()))
    })?;
    let summary = Summary {
        records,
        sha256: hex(&sha.finalize()),
        last_message: upto,
    };
    seal(&summary)?;
    let footer = Footer {
        kind: "end".into(),
        records,
        sha256: summary.sha256.clone(),
    };
    out.write_all(&line(&footer)).map_err(Error::internal)?;
    out.flush().map_err(Error::internal)?;
    Ok(summary)
}

/// The `backup` or `restore` record of `s`.
fn entry(kind: audit::Kind, s: &Summary) -> Entry {
    Entry::new(kind, Actor::Cli)
        .detail("records", s.records)
        .detail("last_message", s.last_message.to_string())
        .detail("sha256", s.sha256.clone())
}

impl Core {
    /// Writes a backup of the running store to `out`, and its `backup`
    /// audit record before the footer (the backup holds the trail up to
    /// it): a backup whose record cannot be written — a full disk — gets
    /// no footer, so it is not valid. Blocking: run it on the blocking
    /// pool (or outside any async runtime).
    pub fn backup(&self, out: &mut dyn Write) -> Result<Summary> {
        write_backup(&self.store, self.commit.visible().0, out, &mut |s| {
            self.record_blocking(entry(audit::Kind::Backup, s))
        })
    }
}

/// Reads a backup, checking its header, every record and the footer.
/// With `sink`, each record is handed on as it is read.
fn read_backup(
    input: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record) -> Result<()>,
) -> Result<Summary> {
    let bad = |why: String| Error::bad_request(format!("not a valid parlor backup: {why}"));
    let mut buf = Vec::new();
    let mut next = |buf: &mut Vec<u8>| -> Result<bool> {
        buf.clear();
        Ok(input.read_until(b'\n', buf).map_err(Error::internal)? > 0)
    };
    if !next(&mut buf)? {
        return Err(bad("empty file".into()));
    }
    let header: Header = serde_json::from_slice(&buf).map_err(|e| bad(format!("header: {e}")))?;
    if header.kind != "parlor_backup" || header.format != FORMAT {
        return Err(bad(format!(
            "format {} of {:?}",
            header.format, header.kind
        )));
    }
    let mut sha = Sha256::new();
    let mut records = 0u64;
    while next(&mut buf)? {
        if let Ok(footer) = serde_json::from_slice::<Footer>(&buf) {
            if footer.kind == "end" {
                let sha256 = hex(&sha.finalize());
                if footer.records != records || footer.sha256 != sha256 {
                    return Err(bad(format!(
                        "footer says {} records / {}, the file holds {records} / {sha256}",
                        footer.records, footer.sha256
                    )));
                }
                if next(&mut buf)? {
                    return Err(bad("data after the footer".into()));
                }
                return Ok(Summary {
                    records,
                    sha256,
                    last_message: header.last_message,
                });
            }
        }
        let record: Record = serde_json::from_slice(&buf)
            .map_err(|e| bad(format!("record {}: {e}", records + 1)))?;
        sha.update(&buf);
        records += 1;
        sink(record)?;
    }
    Err(bad("no footer: the file is cut short".into()))
}

/// Checks a backup file without restoring it.
pub fn check(input: &mut dyn BufRead) -> Result<Summary> {
    read_backup(input, &mut |_| Ok(()))
}

/// Restores the backup at `path` into a fresh store in `dir`, after
/// checking the whole file. With `verify`, exports the restored store and
/// checks it gives the same records and checksum.
pub fn restore(path: &Path, dir: &Path, verify: bool) -> Result<Summary> {
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| Error::bad_request(format!("cannot read {}: {e}", path.display())),
        )?))
    };
    let summary = check(&mut open()?)?;
    let (store, _) = Store::open(dir).map_err(|e| match e {
        crate::store::OpenError::Locked => Error::conflict(format!(
            "{} is in use by another process (a running daemon?); restore needs it stopped",
            dir.display()
        )),
        e => Error::bad_request(format!("cannot open {}: {e}", dir.display())),
    })?;
    if !store.is_fresh()? {
        return Err(Error::conflict(format!(
            "{} already holds a store; restore needs an empty one",
            dir.display()
        )));
    }
    let mut input = open()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(1024);
    let imported = std::thread::scope(|s| -> Result<u64> {
        let reader =
            s.spawn(move || read_backup(&mut input, &mut |r| tx.send(r).map_err(Error::internal)));
        let mut records = rx.into_iter().map(Ok);
        let mut derived = Rebuild::default();
        let n = store.import(&mut records, &mut |r, batch| derived.record(r, batch))?;
        reader
            .join()
            .map_err(|_| Error::internal("backup reader panicked"))??;
        Ok(n)
    })?;
    if imported != summary.records {
        return Err(Error::internal(format!(
            "restored {imported} of {} records",
            summary.records
        )));
    }
    // Ids up to the backup's cut were given, even those of messages
    // deleted (purged, erased) before it was taken: never again.
    store.reserve_ids(MsgId(summary.last_message))?;
    if verify {
        let again = write_backup(
            &store,
            summary.last_message,
            &mut std::io::sink(),
            &mut |_| Ok(()),
        )?;
        if (again.records, &again.sha256) != (summary.records, &summary.sha256) {
            return Err(Error::internal(format!(
                "verification failed: the restored store exports {} records / {}, the backup has {} / {}",
                again.records, again.sha256, summary.records, summary.sha256
            )));
        }
    }
    // The restored trail goes on with the restore itself (no writer runs
    // yet: the chain's head is read back from the store).
    let head = Head::resume(store.audit_last()?);
    let (head, record) = head.seal(
        unix_ms().max(head.at_ms),
        Actor::Cli.resolve(&store)?,
        entry(audit::Kind::Restore, &summary),
    );
    store.append_audit(head.seq, &record)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accounts::NewUser;
    use crate::core::limits::Limits;
    use crate::core::messages::PostAs;
    use crate::core::Admin;
    use crate::model::{Role, Webhook, Workspace};

    #[tokio::test(flavor = "multi_thread")]
    async fn backup_restore_verify_round_trips_everything() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(&dir.path().join("a"), Limits::default()).unwrap();
        let ws = Workspace::new("clinic", "main").unwrap();
        let mut ids = Vec::new();
        for (name, role) in [
            ("nurse", Role::Staff),
            ("pat", Role::Patient),
            ("ann", Role::Staff),
        ] {
            ids.push(
                core.create_user(
                    &Admin::operator(),
                    NewUser {
                        username: name.into(),
                        password: "pw".into(),
                        role,
                        workspace: ws.clone(),
                        display_name: None,
                    },
                )
                .await
                .unwrap(),
            );
        }
        let nurse = core.user(ids[0]).unwrap().unwrap();
        let pat = core.user(ids[1]).unwrap().unwrap();
        core.issue_token("nurse").await.unwrap();
        let bridge = crate::core::api_clients::NewApiClient {
            workspace: ws.clone(),
            name: "ehr".into(),
            display_name: Some("EHR".into()),
            rotate: false,
        };
        let secret = core
            .add_api_client(&Admin::operator(), bridge.clone())
            .await
            .unwrap();
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let bridge_token = core
            .exchange_api_client("clinic", "ehr", &secret, local)
            .await
            .unwrap();
        let hook = Webhook {
            url: "http://127.0.0.1:9/h".into(),
            api_key: "k".into(),
            api_secret: "s".into(),
        };
        core.set_webhook(&Admin::operator(), ws.clone(), hook)
            .await
            .unwrap();
        let chat = core
            .patient_chat(&nurse, "clinic", "main", &pat.id.to_string())
            .await
            .unwrap();
        core.inbound(&pat, &chat, "hello nurse".into())
            .await
            .unwrap();
        let answer = core
            .outbound(&nurse, &chat, "hello patient".into())
            .await
            .unwrap();
        let aside = core
            .outbound(&nurse, &chat, "set aside".into())
            .await
            .unwrap();
        assert!(core.give_up(aside.id, 3, "500".into()).await.unwrap());
        let dm = core.create_dm(&nurse, ids[2]).await.unwrap();
        core.post(&nurse, dm, "a dm".into(), PostAs::default())
            .await
            .unwrap();
        core.mark_read(&nurse, dm, None).await.unwrap();
        // Retention, a hold, and an erased patient's chat (API.md §8).
        let op = Admin::operator();
        core.set_retention(&op, ws.clone(), Some(3650))
            .await
            .unwrap();
        core.set_hold(&op, ws.clone(), Some(pat.id), true, "case".into())
            .await
            .unwrap();
        let gone = crate::core::testing::user(&core, "gone", Role::Patient, "clinic").await;
        let gone_chat = core
            .patient_chat(&nurse, "clinic", "main", &gone.id.to_string())
            .await
            .unwrap();
        // The newest message, erased: its id is still never given again.
        core.inbound(&gone, &gone_chat, "erased".into())
            .await
            .unwrap();
        assert_eq!(core.erase_user(&op, gone.id).await.unwrap(), 1);
        let key = core.page_token_key().unwrap();

        let (s, file) = tokio::task::spawn_blocking({
            let core = core.clone();
            move || {
                let mut file = Vec::new();
                (core.backup(&mut file).unwrap(), file)
            }
        })
        .await
        .unwrap();
        assert_eq!(s.last_message, 5);
        core.shutdown();
        let path = dir.path().join("backup.jsonl");
        std::fs::write(&path, &file).unwrap();

        let restored = restore(&path, &dir.path().join("b"), true).unwrap();
        assert_eq!(restored, s);
        // The restored store serves: indexes rebuilt, ids resume.
        let core = crate::core::testing::open_restored(&dir.path().join("b"));
        let nurse = core.user(nurse.id).unwrap().unwrap();
        assert_eq!(core.page_token_key().unwrap(), key);
        assert_eq!(core.store.retention(&ws).unwrap(), Some(3650));
        assert!(core.store.held(&ws, Some(pat.id)).unwrap());
        assert_eq!(core.store.erased_chats().unwrap(), [gone_chat.room]);
        assert!(core.user(gone.id).unwrap().unwrap().is_erased());
        let chat = core
            .patient_chat(&nurse, "clinic", "main", &pat.id.to_string())
            .await
            .unwrap();
        let hits = core
            .search_chat(
                &chat,
                &crate::model::words("hello"),
                (crate::model::MsgId(0), crate::model::MsgId(u64::MAX)),
                10,
                false,
            )
            .unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(
            core.pending_deliveries(crate::model::MsgId(0), 10).unwrap()[0].message,
            answer.id
        );
        let dead = core.dead_deliveries(crate::model::MsgId(0), 10).unwrap();
        assert_eq!(
            (
                dead.len(),
                dead[0].delivery.message,
                dead[0].failed_attempts
            ),
            (1, aside.id, 3)
        );
        assert_eq!(
            core.metrics
                .webhook_dead
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(core.create_dm(&nurse, ids[2]).await.unwrap(), dm);
        let next = core
            .post(&nurse, dm, "after".into(), PostAs::default())
            .await
            .unwrap();
        assert_eq!(next.id.0, 6);
        assert!(core.authenticate("not a token").is_err());
        // The API client: its secret, its token, and a rotation that finds
        // that token to revoke.
        let caller = core.authenticate(&bridge_token).unwrap();
        assert!(core.is_api_client(caller.user.id).unwrap());
        core.exchange_api_client("clinic", "ehr", &secret, local)
            .await
            .unwrap();
        let rotate = crate::core::api_clients::NewApiClient {
            rotate: true,
            ..bridge
        };
        core.add_api_client(&Admin::operator(), rotate)
            .await
            .unwrap();
        assert!(core.authenticate(&bridge_token).is_err());
        core.shutdown();
        drop(core);
        // Not into a store that has data. (sled lets go of the dropped
        // core's lock a moment later: until then the answer is "in use".)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            let e = restore(&path, &dir.path().join("b"), false).unwrap_err();
            if !e.to_string().contains("in use") || std::time::Instant::now() > deadline {
                break e;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(err.kind, crate::error::Kind::Conflict);
        assert!(err.to_string().contains("already holds a store"), "{err}");
    }

    #[test]
    fn damaged_or_cut_backups_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("s")).unwrap();
        let mut file = Vec::new();
        write_backup(&store, 0, &mut file, &mut |_| Ok(())).unwrap();
        drop(store);
        let good = String::from_utf8(file).unwrap();
        assert!(check(&mut good.as_bytes()).is_ok());
        let cut = &good[..good.len() - 3];
        assert!(check(&mut cut.as_bytes()).is_err());
        let forged = good
            .replace("\"records\":", "\"records\":1")
            .replace(":10,", ":1,");
        assert!(check(&mut forged.as_bytes()).is_err());
        let extra = good.clone() + "{\"kind\":\"user\"}\n";
        assert!(check(&mut extra.as_bytes()).is_err());
        assert!(check(&mut "".as_bytes()).is_err());
        assert!(check(&mut "garbage\n".as_bytes()).is_err());
    }
}
