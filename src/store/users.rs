//! Users in the store: the user records (`USER`), the index from a
//! username to its user (`USERNAME`) and the tokens (`TOKEN`, keyed by
//! the token's SHA-256). API clients' own users: `api_clients`.

use super::keys::*;
use super::{Result, Store, WriteBatch};
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
}

impl WriteBatch {
    pub fn put_user(&mut self, user: &User) {
        self.put(&one(USER, user.id.0), user);
        self.insert(
            &bytes(USERNAME, user.username.as_bytes()),
            &u64_value(user.id.0),
        );
    }

    pub fn put_token(&mut self, hash: &[u8; 32], rec: &TokenRecord) {
        self.put(&bytes(TOKEN, hash), rec);
    }

    pub fn remove_token(&mut self, hash: &[u8; 32]) {
        self.remove(&bytes(TOKEN, hash));
    }
}
