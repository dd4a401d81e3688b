//! Accounts: users, logins, tokens.

use std::net::IpAddr;
use std::time::Instant;

use super::audit::{self, Actor, Entry};
use super::tokens::{new_token, token_hash};
use super::{Admin, Caller, Core};
use crate::error::{Error, Kind, Result};
use crate::model::{check_name, Role, User, UserId, Workspace};
use crate::store::TokenRecord;

/// What `create_user` needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub workspace: Workspace,
    pub display_name: Option<String>,
}

const MAX_PASSWORD_BYTES: usize = 1024;

impl Core {
    /// The caller behind a bearer token, or `UNAUTHENTICATED`.
    pub fn authenticate(&self, token: &str) -> Result<Caller> {
        if token.is_empty() || token.len() > 256 {
            return Err(Error::unauthenticated());
        }
        let hash = token_hash(token);
        let rec = self
            .store
            .token(&hash)?
            .ok_or_else(Error::unauthenticated)?;
        let user = self
            .store
            .user(rec.user)?
            .filter(|u| !u.is_erased())
            .ok_or_else(Error::unauthenticated)?;
        let client = self.store.is_api_client(user.id)?;
        Ok(Caller {
            user,
            token: hash,
            client,
        })
    }

    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.store.user(id)?)
    }

    /// A user the caller may see: same workspace. Anything else looks
    /// exactly like a user that does not exist.
    /// An API client is not a person to reach: hidden the same way.
    pub fn visible_user(&self, caller: &User, id: UserId) -> Result<User> {
        match self.store.user(id)? {
            Some(u) if u.workspace == caller.workspace && !self.is_api_client(u.id)? => Ok(u),
            _ => Err(no_such_user()),
        }
    }

    /// `POST /admin/users` and `parlor user add`: a new user, and its
    /// `user.add` record.
    pub async fn create_user(&self, admin: &Admin<'_>, new: NewUser) -> Result<UserId> {
        let by = admin.actor().recorded();
        check_name("username", &new.username)?;
        if let Some(d) = &new.display_name {
            check_name("display name", d)?;
        }
        if new.password.is_empty() || new.password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::bad_request(format!(
                "password must be 1 to {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        if self.store.user_id_by_name(&new.username)?.is_some() {
            return Err(username_taken());
        }
        let password_hash = self.passwords.hash(new.password).await?;
        self.commit
            .run(move |tx| {
                // Checked again here: the writer is the only place where
                // check-then-insert cannot race.
                if tx.store.user_id_by_name(&new.username)?.is_some() {
                    return Err(username_taken());
                }
                let id = tx.next_user_id();
                let user = User {
                    id,
                    display_name: new.display_name.unwrap_or_else(|| new.username.clone()),
                    username: new.username,
                    role: new.role,
                    workspace: new.workspace,
                    password_hash,
                    created_ms: tx.now_ms,
                };
                super::patients::on_new_user(tx.store, &mut tx.batch, &user, tx.now_ms)?;
                tx.batch.put_user(&user);
                let mut entry = Entry::new(audit::Kind::UserAdd, by)
                    .workspace(&user.workspace)
                    .detail("user", id.to_string())
                    .detail("role", user.role.as_str());
                if user.role == Role::Patient {
                    entry = entry.patient(id);
                }
                tx.audit(entry)?;
                Ok((id, vec![]))
            })
            .await
    }

    /// `POST /auth/login`. Throttled on failures only (see `limits`), and
    /// refused while the password queue is full (see `passwords`).
    pub async fn login(
        &self,
        username: &str,
        password: String,
        addr: IpAddr,
    ) -> Result<(String, UserId)> {
        if let Err(wait) = self.login_throttle.check(username, addr, Instant::now()) {
            self.metrics
                .logins_rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::rate_limited(wait));
        }
        // An API client's user has no password: as unknown as no user.
        let user = match self.store.user_id_by_name(username)? {
            Some(id) if !self.is_api_client(id)? => self.store.user(id)?,
            _ => None,
        };
        // A full password queue refuses the attempt (RATE_LIMITED) before
        // any work: not a failure, so the throttle does not count it.
        let ok = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await
            .inspect_err(|e| {
                if e.kind == Kind::RateLimited {
                    self.metrics
                        .logins_rate_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })?;
        match user {
            Some(user) if ok => {
                self.login_throttle.succeeded(username);
                let entry = Entry::new(audit::Kind::AuthLogin, Actor::User(user.id))
                    .workspace(&user.workspace)
                    .detail("addr", addr.to_string())
                    .detail("method", "password");
                let token = self.issue_token_for(user.id, entry).await?;
                Ok((token, user.id))
            }
            _ => {
                self.login_throttle.failed(username, addr, Instant::now());
                self.record(vec![sign_in_failed(user.as_ref(), addr, "password")])
                    .await?;
                Err(Error::new(
                    Kind::InvalidCredentials,
                    "wrong username or password",
                ))
            }
        }
    }

    /// A fresh token for a user named by the operator (`parlor token issue`).
    pub async fn issue_token(&self, username: &str) -> Result<String> {
        // An API client's tokens come from its secret only (a rotation
        // must find them all).
        let user = match self.store.user_id_by_name(username)? {
            Some(id) if !self.is_api_client(id)? => self.store.user(id)?,
            _ => None,
        }
        .ok_or_else(|| Error::not_found(format!("no user named {username:?}")))?;
        let entry = Entry::new(audit::Kind::TokenIssue, Actor::Cli)
            .workspace(&user.workspace)
            .detail("user", user.id.to_string());
        self.issue_token_for(user.id, entry).await
    }

    /// A fresh token for `user`, recorded by `entry` in the same commit.
    async fn issue_token_for(&self, user: UserId, entry: Entry) -> Result<String> {
        let (token, hash) = new_token();
        self.commit
            .run(move |tx| {
                let rec = TokenRecord {
                    user,
                    created_ms: tx.now_ms,
                };
                tx.batch.put_token(&hash, &rec);
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await?;
        Ok(token)
    }

    /// `POST /auth/logout`: the token stops working at once, and the
    /// sockets opened with it are closed.
    pub async fn logout(&self, caller: &Caller) -> Result<()> {
        let hash = caller.token;
        let entry = Entry::new(audit::Kind::AuthLogout, Actor::User(caller.user.id))
            .workspace(&caller.user.workspace);
        self.commit
            .run(move |tx| {
                tx.batch.remove_token(&hash);
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await?;
        self.hub.revoke(caller.user.id, &caller.token);
        Ok(())
    }
}

/// The `auth.fail` record of a sign-in refused: the account's, when the
/// name was one (`who`); else `unknown`, keeping nothing of what was typed.
pub(crate) fn sign_in_failed(who: Option<&User>, addr: IpAddr, method: &str) -> Entry {
    let e = match who {
        Some(u) => Entry::new(audit::Kind::AuthFail, Actor::User(u.id)).workspace(&u.workspace),
        None => Entry::new(audit::Kind::AuthFail, Actor::Unknown),
    };
    e.detail("addr", addr.to_string()).detail("method", method)
}

/// How a user the caller may not see or reach is answered: like one that
/// does not exist.
pub(super) fn no_such_user() -> Error {
    Error::not_found("no such user")
}

/// A user id as a client sent it: what is not one is "no such user", as
/// an id no one has (from outside, the two look the same).
pub fn parse_user_id(s: &str) -> Result<UserId> {
    UserId::parse(s).ok_or_else(no_such_user)
}

fn username_taken() -> Error {
    Error::conflict("that username is taken")
}
