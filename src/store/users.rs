//! Users in the store: the user records (`USER`), the index from a
//! username to its user (`USERNAME`) and the tokens (`TOKEN`, keyed by
//! the token's SHA-256). API clients' own users: `api_clients`.

use super::keys::*;
use super::{codec, Result, Store, StoreError, WriteBatch};
use crate::model::{User, UserId};

/// A stored token: only the SHA-256 of the token string is the key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub user: UserId,
    pub created_ms: u64,
}

impl Store {
    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get(&one(USER, id.0))
    }

    pub fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>> {
        Ok(self
            .raw_get(bytes(USERNAME, username.as_bytes()))?
            .and_then(|v| read_u64(&v))
            .map(UserId))
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        self.get(&bytes(TOKEN, hash))
    }

    /// The hashes of a user's tokens: a walk of every token (tokens are
    /// keyed by hash alone), for the rare erasure.
    pub fn tokens_of(&self, user: UserId) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::new();
        for (k, v) in self.prefix(&[TOKEN])? {
            let rec: TokenRecord = codec::decode(&v).map_err(StoreError)?;
            if let (true, Ok(hash)) = (rec.user == user, k[1..].try_into()) {
                out.push(hash);
            }
        }
        Ok(out)
    }
}

impl WriteBatch {
    /// A user, and (unless erased: their name is no one's) the index from
    /// their username.
    pub fn put_user(&mut self, user: &User) {
        self.put(&one(USER, user.id.0), user);
        if !user.is_erased() {
            self.insert(
                &bytes(USERNAME, user.username.as_bytes()),
                &u64_value(user.id.0),
            );
        }
    }

    /// Frees a username: the name no longer leads to its user (who
    /// keeps their id).
    pub fn remove_username(&mut self, username: &str) {
        self.remove(&bytes(USERNAME, username.as_bytes()));
    }

    pub fn put_token(&mut self, hash: &[u8; 32], rec: &TokenRecord) {
        self.put(&bytes(TOKEN, hash), rec);
    }

    pub fn remove_token(&mut self, hash: &[u8; 32]) {
        self.remove(&bytes(TOKEN, hash));
    }
}
