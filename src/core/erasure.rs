//! Erasing a person (API.md §8): `POST /admin/users/{id}/erase` and
//! `parlor user erase`.
//!
//! One job takes away what named them and let them in: their name (shown
//! as "erased user" from then on, `User::erase`), their password, their
//! username (free again); `authenticate` refuses an erased user's tokens
//! at once. A patient's care-team chat is marked to be emptied, and
//! emptied there and then, a chunk per job (`retention`); a purge run
//! finishes what a crash interrupted, and empties it again should staff
//! write there later. The tokens go in a second job (finding them is a
//! walk of every token, kept off the writer), and sockets opened with them
//! close. Then the store is compacted, so the erased text is in no file
//! when the answer comes. A hold on the workspace, or on a patient's chat,
//! refuses the erasure (`CONFLICT`) before anything changes. Ids are never
//! reused; the audit trail keeps its records (they hold ids, not text).

use std::sync::Arc;

use super::accounts::no_such_user;
use super::audit::{self, Entry};
use super::retention::{under_hold, Emptied};
use super::{Admin, Core};
use crate::error::{Error, Result};
use crate::model::{Role, UserId};

impl Core {
    /// Erases a user (see the module's doc); answers how many messages
    /// were deleted. Unknown users, and API clients' own users, are
    /// `NOT_FOUND`; erasing an erased user again deletes what staff wrote
    /// since, and is otherwise a no-op.
    pub async fn erase_user(self: &Arc<Self>, admin: &Admin<'_>, id: UserId) -> Result<u64> {
        let by = admin.actor().recorded();
        let erased = self
            .commit
            .run(move |tx| {
                let Some(mut user) = tx.store.user(id)? else {
                    return Err(no_such_user());
                };
                if tx.store.api_client_of(id)?.is_some() {
                    return Err(no_such_user());
                }
                let patient = (user.role == Role::Patient).then_some(id);
                if tx.store.held(&user.workspace, patient)? {
                    return Err(under_hold());
                }
                let chat = match patient {
                    Some(p) => tx.store.patient_chat(p)?,
                    None => None,
                };
                if user.is_erased() {
                    return Ok((chat, vec![]));
                }
                let mut entry = Entry::new(audit::Kind::UserErase, by)
                    .workspace(&user.workspace)
                    .detail("user", id.to_string());
                if let Some(p) = patient {
                    entry = entry.patient(p);
                }
                tx.batch.remove_username(&user.username);
                user.erase();
                tx.batch.put_user(&user);
                if let Some(room) = chat {
                    tx.batch.put_erased_chat(room);
                }
                tx.audit(entry)?;
                Ok((chat, vec![]))
            })
            .await?;
        self.drop_tokens(id).await?;
        let mut deleted = 0;
        let started = std::time::Instant::now();
        if let Some(room) = erased {
            let room = self.store.room(room)?.ok_or_else(no_such_user)?;
            match self.empty_room(&room, u64::MAX).await? {
                Emptied::Deleted(n) => deleted = n,
                // A hold set since the first job: the rest waits for it.
                Emptied::Held => return Err(under_hold()),
            }
        }
        tracing::info!(
            user = %id,
            deleted,
            took_ms = started.elapsed().as_millis() as u64,
            "erased a user's messages; compacting the store"
        );
        // Their old name and messages leave every file before the answer.
        self.compact().await?;
        Ok(deleted)
    }

    /// Removes every token of `user` and closes the sockets opened with
    /// them.
    async fn drop_tokens(self: &Arc<Self>, user: UserId) -> Result<()> {
        let tokens = {
            let store = self.store.clone();
            super::blocking(move || Ok::<_, Error>(store.tokens_of(user)?)).await?
        };
        if tokens.is_empty() {
            return Ok(());
        }
        let gone = tokens.clone();
        self.commit
            .run(move |tx| {
                for t in &gone {
                    tx.batch.remove_token(t);
                }
                Ok(((), vec![]))
            })
            .await?;
        for t in &tokens {
            self.hub.revoke(user, t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{clinic_and_chat, open_restored};
    use crate::error::Kind;
    use crate::model::{Workspace, ERASED_NAME};

    #[tokio::test(flavor = "multi_thread")]
    async fn erasing_a_patient_takes_their_name_login_tokens_and_chat() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let op = Admin::operator();
        let other = c.other_chat().await;
        let mut sent = Vec::new();
        for i in 0..3 {
            sent.push(
                c.core
                    .inbound(&c.pat, &ch, format!("mine {i}"))
                    .await
                    .unwrap(),
            );
        }
        sent.push(
            c.core
                .outbound(&c.staff, &ch, "reply".into())
                .await
                .unwrap(),
        );
        let kept = c
            .core
            .outbound(&c.staff, &other, "other".into())
            .await
            .unwrap();
        let token = c.core.issue_token("pat").await.unwrap();
        assert!(c.core.authenticate(&token).is_ok());

        assert_eq!(c.core.erase_user(&op, c.pat.id).await.unwrap(), 4);
        let gone = c.core.user(c.pat.id).unwrap().unwrap();
        assert!(gone.is_erased());
        assert_eq!(
            (gone.username.as_str(), gone.display_name.as_str()),
            (ERASED_NAME, ERASED_NAME)
        );
        assert_eq!(
            c.core.authenticate(&token).unwrap_err().kind,
            Kind::Unauthenticated
        );
        let login = c
            .core
            .login("pat", "pw".into(), "127.0.0.1".parse().unwrap())
            .await;
        assert_eq!(login.unwrap_err().kind, Kind::InvalidCredentials);
        for m in &sent {
            assert_eq!(c.core.store.message(m.id).unwrap(), None);
        }
        assert!(c.core.store.message(kept.id).unwrap().is_some());
        // The name is free again; the id is not.
        let again = crate::core::testing::user(&c.core, "pat", Role::Patient, "a").await;
        assert!(again.id > c.pat.id);
        // Again: nothing more to delete.
        assert_eq!(c.core.erase_user(&op, c.pat.id).await.unwrap(), 0);

        // The newest message was erased: after a restart, ids go on above it.
        let newest = sent.last().unwrap().id.max(kept.id);
        c.core.shutdown();
        drop(c);
        let core = open_restored(dir.path());
        let staff = core.user(UserId(1)).unwrap().unwrap();
        let other = core
            .patient_chat(&staff, "a", "main", &other.patient.id.to_string())
            .await
            .unwrap();
        let next = core.outbound(&staff, &other, "after".into()).await.unwrap();
        assert!(next.id > newest, "{:?} reused", next.id);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_hold_or_an_unknown_user_refuses_erasure_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let op = Admin::operator();
        let m = c.core.inbound(&c.pat, &ch, "keep".into()).await.unwrap();
        let ws = Workspace::new("a", "main").unwrap();
        c.core
            .set_hold(&op, ws.clone(), Some(c.pat.id), true, "case".into())
            .await
            .unwrap();
        let e = c.core.erase_user(&op, c.pat.id).await.unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        assert!(!c.core.user(c.pat.id).unwrap().unwrap().is_erased());
        assert!(c.core.store.message(m.id).unwrap().is_some());
        // A patient's hold does not hold staff; a workspace's does.
        c.core
            .set_hold(&op, ws.clone(), None, true, "all".into())
            .await
            .unwrap();
        let e = c.core.erase_user(&op, c.staff.id).await.unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        c.core
            .set_hold(&op, ws, None, false, String::new())
            .await
            .unwrap();
        c.core.erase_user(&op, c.staff.id).await.unwrap();
        let e = c.core.erase_user(&op, UserId(999)).await.unwrap_err();
        assert_eq!(e.kind, Kind::NotFound);
    }
}
