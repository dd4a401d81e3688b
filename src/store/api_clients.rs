//! API clients (API.md §6) in the store: the client records, the index
//! from a client's own user back to its record, and the index of the
//! tokens issued to each client (so that a rotation revokes them all).
//! Key layouts: `keys::api_client`, `keys::client_token`, `CLIENT_USER`.

use super::keys::*;
use super::{Result, Store, WriteBatch};
use crate::model::{ApiClient, UserId};

impl Store {
    /// The API client `name` of `tenant`.
    pub fn api_client(&self, tenant: &str, name: &str) -> Result<Option<ApiClient>> {
        self.get(&api_client(tenant, name))
    }

    /// The API client whose own user is `user`; `None` for a person.
    pub fn api_client_of(&self, user: UserId) -> Result<Option<ApiClient>> {
        match self.raw_get(one(CLIENT_USER, user.0))? {
            Some(key) => self.get(&key),
            None => Ok(None),
        }
    }

    /// Whether `user` is an API client's own user (one point read).
    pub fn is_api_client(&self, user: UserId) -> Result<bool> {
        Ok(self.raw_get(one(CLIENT_USER, user.0))?.is_some())
    }

    /// The hashes of the tokens issued to the API client whose user is
    /// `user` (and not yet revoked or logged out).
    pub fn client_tokens(&self, user: UserId) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&one(CLIENT_TOKEN, user.0))? {
            if let Ok(hash) = <[u8; 32]>::try_from(&k[9..]) {
                out.push(hash);
            }
        }
        Ok(out)
    }
}

impl WriteBatch {
    /// Adds or replaces an API client, with its user's back-reference.
    pub fn put_api_client(&mut self, client: &ApiClient) {
        let key = api_client(&client.workspace.tenant, &client.name);
        self.put(&key, client);
        self.insert(&one(CLIENT_USER, client.user.0), &key);
    }

    /// Notes that the token `hash` was issued to the client whose user is
    /// `user` (the token itself is `put_token`'s).
    pub fn put_client_token(&mut self, user: UserId, hash: &[u8; 32]) {
        self.insert(&client_token(user.0, hash), &[]);
    }

    /// Revokes a client's token: the token and its index entry.
    pub fn remove_client_token(&mut self, user: UserId, hash: &[u8; 32]) {
        self.remove_token(hash);
        self.remove(&client_token(user.0, hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Workspace;

    #[test]
    fn a_client_is_found_by_name_and_by_its_user_and_lists_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let c = ApiClient {
            name: "ehr.bridge-1".into(),
            workspace: Workspace::new("gh", "sb").unwrap(),
            user: UserId(9),
            secret_hash: [3; 32],
            created_ms: 1,
            rotated_ms: 1,
        };
        let mut b = WriteBatch::default();
        b.put_api_client(&c);
        b.put_client_token(c.user, &[1; 32]);
        b.put_client_token(c.user, &[2; 32]);
        b.put_client_token(UserId(10), &[4; 32]);
        s.write_through(b).unwrap();
        assert_eq!(s.api_client("gh", "ehr.bridge-1").unwrap(), Some(c.clone()));
        assert_eq!(s.api_client("gh", "ehr.bridge-").unwrap(), None);
        assert_eq!(s.api_client("g", "hehr.bridge-1").unwrap(), None);
        assert_eq!(s.api_client_of(UserId(9)).unwrap(), Some(c.clone()));
        assert!(s.is_api_client(UserId(9)).unwrap());
        assert!(!s.is_api_client(UserId(10)).unwrap());
        assert_eq!(s.client_tokens(c.user).unwrap(), [[1; 32], [2; 32]]);
        let mut b = WriteBatch::default();
        b.remove_client_token(c.user, &[1; 32]);
        s.write_through(b).unwrap();
        assert_eq!(s.client_tokens(c.user).unwrap(), [[2; 32]]);
    }
}
