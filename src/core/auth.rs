//! Passwords (argon2id, on the blocking pool, with a concurrency cap so a
//! burst of logins cannot starve live chat) and tokens (random, stored only
//! as a SHA-256).

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::error::{Error, Result};

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when the username is unknown, so that costs the
    /// same time as a wrong password.
    dummy: Arc<OnceLock<String>>,
}

impl Passwords {
    pub fn new(concurrency: usize) -> Passwords {
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: Arc::new(OnceLock::new()),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(Error::internal)?
    }

    /// Checks `password` against `hash`; with no hash (unknown user) it
    /// spends the same work and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        let dummy = self.dummy.clone();
        tokio::task::spawn_blocking(move || {
            let known = hash.is_some();
            let hash = match hash {
                Some(h) => h,
                None => dummy
                    .get_or_init(|| hash_blocking("parlor-dummy").unwrap_or_default())
                    .clone(),
            };
            let ok = PasswordHash::new(&hash)
                .map(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false);
            known && ok
        })
        .await
        .map_err(Error::internal)
    }
}

fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

/// A fresh token (256 random bits, base64url) and the hash to store.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verify_accepts_the_password_and_nothing_else() {
        let p = Passwords::new(2);
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(p
            .verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("parlor-dummy".into(), None).await.unwrap());
    }

    /// An unknown user (no hash) costs an argon2 verification like a known
    /// one: the dummy hash is made and checked, not skipped.
    #[tokio::test]
    async fn an_unknown_user_is_verified_against_a_real_hash() {
        let p = Passwords::new(1);
        assert!(!p.verify("anything".into(), None).await.unwrap());
        let dummy = p.dummy.get().expect("the dummy hash was made");
        assert!(
            dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{dummy}"
        );
        // And it is the dummy's own password that matches, still false.
        assert!(!p.verify("parlor-dummy".into(), None).await.unwrap());
    }

    #[test]
    fn tokens_are_distinct_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(token_hash(&a), ha);
        assert_eq!(a.len(), 43);
    }
}
