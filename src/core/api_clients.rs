//! API clients (API.md §6): bridges (an EHR, a reminder service, Welkin's
//! SDK) that exchange a client name and secret for bearer tokens, as
//! Welkin's API does.
//!
//! A client acts through a user of its own: staff of its workspace (so
//! every rule about staff holds for it — the care team of every patient
//! chat there, nothing of any other workspace), shown by its display name,
//! with no password and a username no person can have (it holds control
//! characters), which `/auth/login` and `parlor token issue` refuse. It is
//! not a person: participant lists leave it out, and no one can reach it
//! by id (a DM, a group room).
//!
//! The secret is 256 bits from the OS's random source, and the store keeps
//! only its SHA-256. A slow password hash (argon2) protects guessable
//! secrets; nothing can be guessed here, so a plain hash loses nothing and
//! keeps the exchange cheap (the exchange is throttled like logins all
//! the same). Neither the secret nor its hash is ever logged.
//!
//! Rotation replaces the secret and revokes every token issued with the old
//! one in the same commit; the sockets opened with them are closed after
//! it. The exchange checks the secret again inside its commit, so a token
//! is never issued against a secret a rotation already replaced.

use std::net::IpAddr;
use std::time::Instant;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::accounts::sign_in_failed;
use super::audit::{self, Actor, Entry};
use super::tokens::new_token;
use super::{Admin, Core};
use crate::error::{Error, Kind, Result};
use crate::model::{check_name, ApiClient, Participant, Role, User, UserId, Workspace};
use crate::store::TokenRecord;

/// What `add_api_client` needs (`POST /admin/api_clients`, `parlor
/// api-client add`).
#[derive(Clone, Debug)]
pub struct NewApiClient {
    pub workspace: Workspace,
    pub name: String,
    pub display_name: Option<String>,
    /// Replace the secret of an existing client (and revoke its tokens)
    /// instead of refusing the name; creates the client if there is none.
    pub rotate: bool,
}

/// How a client signs in, as its `auth.login` / `auth.fail` records say.
const METHOD: &str = "api_client_secret";

/// Longest client name, in characters (all ASCII).
pub const MAX_CLIENT_NAME: usize = 64;

/// A client name: 1..=64 of `A-Z a-z 0-9 . _ -`.
pub fn check_client_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "an API client name is 1 to {MAX_CLIENT_NAME} of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// The username of a client's own user: with control characters (which
/// no person's username may hold), so no person can take it or log in as it.
fn client_username(ws: &Workspace, name: &str) -> String {
    format!("\u{1f}api-client\u{1f}{}\u{1f}{name}", ws.tenant)
}

/// The login throttle's key for a client: no username can be equal to it.
fn throttle_key(tenant: &str, name: &str) -> String {
    format!("\u{0}api-client\u{0}{tenant}\u{0}{name}")
}

fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes in time that does not depend on where they differ.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn invalid_credentials() -> Error {
    Error::new(Kind::InvalidCredentials, "wrong API client name or secret")
}

impl Core {
    /// `POST /admin/api_clients` and `parlor api-client add`: a new client, or with `rotate` a new secret for an existing
    /// one, whose old tokens stop working at once (their sockets close).
    /// Answers the secret, which is shown this once.
    pub async fn add_api_client(&self, admin: &Admin<'_>, new: NewApiClient) -> Result<String> {
        check_client_name(&new.name)?;
        if let Some(d) = &new.display_name {
            check_name("display name", d)?;
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let hash = secret_hash(&secret);
        let by = admin.actor().recorded();
        let (user, revoked) = self
            .commit
            .run(move |tx| {
                let ws = new.workspace;
                match tx.store.api_client(&ws.tenant, &new.name)? {
                    Some(_) if !new.rotate => Err(Error::conflict(
                        "an API client of that name exists in this tenant; rotate its secret with \"rotate\": true",
                    )),
                    Some(c) if c.workspace != ws => Err(Error::conflict(
                        "that API client belongs to another instance of this tenant",
                    )),
                    Some(mut c) => {
                        c.secret_hash = hash;
                        c.rotated_ms = tx.now_ms;
                        let revoked = tx.store.client_tokens(c.user)?;
                        for t in &revoked {
                            tx.batch.remove_client_token(c.user, t);
                        }
                        if let Some(d) = new.display_name {
                            if let Some(mut u) = tx.store.user(c.user)? {
                                u.display_name = d;
                                tx.batch.put_user(&u);
                            }
                        }
                        tx.batch.put_api_client(&c);
                        tx.audit(
                            Entry::new(audit::Kind::ApiClientRotate, by)
                                .workspace(&c.workspace)
                                .detail("name", c.name.clone())
                                .detail("user", c.user.to_string())
                                .detail("revoked_tokens", revoked.len()),
                        )?;
                        Ok(((c.user, revoked), vec![]))
                    }
                    None => {
                        let username = client_username(&ws, &new.name);
                        if tx.store.user_id_by_name(&username)?.is_some() {
                            return Err(Error::internal(
                                "an API client's user exists without its client",
                            ));
                        }
                        let id = tx.next_user_id();
                        let user = User {
                            id,
                            username,
                            display_name: new.display_name.unwrap_or_else(|| new.name.clone()),
                            role: Role::Staff,
                            workspace: ws.clone(),
                            password_hash: String::new(),
                            created_ms: tx.now_ms,
                        };
                        super::patients::on_new_user(tx.store, &mut tx.batch, &user, tx.now_ms)?;
                        tx.batch.put_user(&user);
                        tx.audit(
                            Entry::new(audit::Kind::ApiClientAdd, by)
                                .workspace(&ws)
                                .detail("name", new.name.clone())
                                .detail("user", id.to_string()),
                        )?;
                        tx.batch.put_api_client(&ApiClient {
                            name: new.name,
                            workspace: ws,
                            user: id,
                            secret_hash: hash,
                            created_ms: tx.now_ms,
                            rotated_ms: tx.now_ms,
                        });
                        Ok(((id, Vec::new()), vec![]))
                    }
                }
            })
            .await?;
        for t in &revoked {
            self.hub.revoke(user, t);
        }
        Ok(secret)
    }

    /// `POST /{tenant}/admin/api_clients/{name}` `{"secret"}`: a fresh
    /// token for the client. An unknown client and a wrong secret are the
    /// same `INVALID_CREDENTIALS`; failures are throttled as logins are
    /// (per client and per address), successes never.
    pub async fn exchange_api_client(
        &self,
        tenant: &str,
        name: &str,
        secret: &str,
        addr: IpAddr,
    ) -> Result<String> {
        check_client_name(name)?;
        let key = throttle_key(tenant, name);
        if let Err(wait) = self.login_throttle.check(&key, addr, Instant::now()) {
            self.metrics
                .logins_rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::rate_limited(wait));
        }
        let given = secret_hash(secret);
        let client = self.store.api_client(tenant, name)?;
        // An unknown client is compared against a hash no secret has, so
        // it costs what a wrong secret costs.
        let known = client.as_ref().map_or([0u8; 32], |c| c.secret_hash);
        if !(same_hash(&given, &known) && client.is_some()) {
            self.login_throttle.failed(&key, addr, Instant::now());
            let who = match &client {
                Some(c) => self.store.user(c.user)?,
                None => None,
            };
            self.record(vec![sign_in_failed(who.as_ref(), addr, METHOD)])
                .await?;
            return Err(invalid_credentials());
        }
        let (token, hash) = new_token();
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        let issued = self
            .commit
            .run(move |tx| {
                // Again in the writer: a rotation committed since the check
                // above has replaced this secret.
                let client = tx.store.api_client(&tenant, &name)?;
                let actor = client.as_ref().map(|c| Actor::User(c.user));
                let entry = |kind| {
                    let e = Entry::new(kind, actor.clone().unwrap_or(Actor::Unknown));
                    let e = match &client {
                        Some(c) => e.workspace(&c.workspace),
                        None => e,
                    };
                    e.detail("addr", addr.to_string()).detail("method", METHOD)
                };
                match &client {
                    Some(c) if same_hash(&given, &c.secret_hash) => {
                        tx.batch.put_token(
                            &hash,
                            &TokenRecord {
                                user: c.user,
                                created_ms: tx.now_ms,
                            },
                        );
                        tx.batch.put_client_token(c.user, &hash);
                        tx.audit(entry(audit::Kind::AuthLogin))?;
                        Ok((true, vec![]))
                    }
                    _ => {
                        tx.audit(entry(audit::Kind::AuthFail))?;
                        Ok((false, vec![]))
                    }
                }
            })
            .await?;
        if !issued {
            self.login_throttle.failed(&key, addr, Instant::now());
            return Err(invalid_credentials());
        }
        self.login_throttle.succeeded(&key);
        Ok(token)
    }

    /// Whether `user` is an API client's own user, not a person.
    pub fn is_api_client(&self, user: UserId) -> Result<bool> {
        Ok(self.store.is_api_client(user)?)
    }

    /// A room's participants as they are listed: without API clients.
    pub(crate) fn without_api_clients(
        &self,
        participants: Vec<(UserId, Participant)>,
    ) -> Result<Vec<(UserId, Participant)>> {
        let mut out = Vec::with_capacity(participants.len());
        for (u, p) in participants {
            if !self.is_api_client(u)? {
                out.push((u, p));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::Limits;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn names_are_1_to_64_of_the_allowed_characters() {
        for good in ["a", "EHR.bridge_1-x", &"x".repeat(64)] {
            assert!(check_client_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a\u{0}", &"x".repeat(65), "a:b"] {
            assert_eq!(
                check_client_name(bad).unwrap_err().kind,
                Kind::BadRequest,
                "{bad:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_client_is_care_team_staff_that_cannot_log_in_and_rotation_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        let ws = Workspace::new("gh", "sb").unwrap();
        let new = |rotate| NewApiClient {
            workspace: ws.clone(),
            name: "ehr".into(),
            display_name: None,
            rotate,
        };
        let secret = core
            .add_api_client(&Admin::operator(), new(false))
            .await
            .unwrap();
        assert_eq!(secret.len(), 43);
        let e = core
            .add_api_client(&Admin::operator(), new(false))
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        let token = core
            .exchange_api_client("gh", "ehr", &secret, LOCAL)
            .await
            .unwrap();
        let caller = core.authenticate(&token).unwrap();
        assert_eq!(
            (caller.user.role, caller.user.display_name.as_str()),
            (Role::Staff, "ehr")
        );
        assert!(core.is_api_client(caller.user.id).unwrap());
        // Only its hash is stored.
        let stored = core.store.api_client("gh", "ehr").unwrap().unwrap();
        assert_eq!(stored.secret_hash, secret_hash(&secret));
        // Wrong secret and unknown client: the same answer.
        for (name, s) in [("ehr", "nope"), ("other", secret.as_str())] {
            let e = core
                .exchange_api_client("gh", name, s, LOCAL)
                .await
                .unwrap_err();
            assert_eq!(
                (e.kind, e.message.as_str()),
                (Kind::InvalidCredentials, "wrong API client name or secret")
            );
        }
        // Another tenant's path does not reach it.
        let e = core
            .exchange_api_client("acme", "ehr", &secret, LOCAL)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::InvalidCredentials);
        // It cannot log in, and `token issue` does not know it.
        let e = core
            .login(&caller.user.username, String::new(), LOCAL)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::InvalidCredentials);
        assert_eq!(
            core.issue_token(&caller.user.username)
                .await
                .unwrap_err()
                .kind,
            Kind::NotFound
        );
        // A patient's chat made later has it in its care team, unlisted.
        let pat =
            crate::core::testing::user_in(&core, "pat", Role::Patient, ws.clone(), None).await;
        let chat = core
            .patient_chat(&caller.user, "gh", "sb", &pat.id.to_string())
            .await
            .unwrap();
        let m = core
            .outbound(&caller.user, &chat, "from the bridge".into())
            .await
            .unwrap();
        assert_eq!(m.sender, caller.user.id);
        let info = core.room_info(&pat, chat.room).unwrap();
        assert_eq!(
            info.participants
                .iter()
                .map(|(u, _)| *u)
                .collect::<Vec<_>>(),
            [pat.id]
        );
        assert_eq!(
            core.visible_user(&pat, caller.user.id).unwrap_err().kind,
            Kind::NotFound
        );
        // Rotation: the old token and the old secret stop at once.
        let fresh = core
            .add_api_client(&Admin::operator(), new(true))
            .await
            .unwrap();
        assert_ne!(fresh, secret);
        assert_eq!(
            core.authenticate(&token).unwrap_err().kind,
            Kind::Unauthenticated
        );
        assert!(core
            .exchange_api_client("gh", "ehr", &secret, LOCAL)
            .await
            .is_err());
        let again = core
            .exchange_api_client("gh", "ehr", &fresh, LOCAL)
            .await
            .unwrap();
        assert_eq!(core.authenticate(&again).unwrap().user.id, caller.user.id);
        // A client is never an admin (its caller knows it is a client's),
        // and a rotation names the same instance.
        assert!(matches!(
            caller.actor(),
            crate::core::actor::Actor::Client(_)
        ));
        let e = caller.actor().admin("manage API clients").unwrap_err();
        assert_eq!(e.kind, Kind::Forbidden);
        let elsewhere = NewApiClient {
            workspace: Workspace::new("gh", "other").unwrap(),
            ..new(true)
        };
        let e = core
            .add_api_client(&Admin::operator(), elsewhere)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        core.shutdown();
    }
}
