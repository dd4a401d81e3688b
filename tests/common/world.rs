//! [`World`]: a small populated daemon shared by several test files, and
//! [`User`], one logged-in account.

use super::daemon::Server;
use super::http::login;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub id: String,
    pub token: String,
}

/// A started daemon with: `admin` (admin), `alice`, `bob`, `carol`
/// (patient/staff, default workspace) and `eve` (workspace acme/north),
/// each logged in over HTTP.
pub struct World {
    pub srv: Server,
    pub admin: User,
    pub alice: User,
    pub bob: User,
    pub carol: User,
    pub eve: User,
}

impl World {
    pub async fn new() -> World {
        World::with_flags(&[]).await
    }

    /// Like [`World::new`], the daemon started with extra `serve` flags.
    pub async fn with_flags(flags: &[&str]) -> World {
        let mut srv = Server::new();
        type Spec<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let spec: [Spec; 5] = [
            ("admin", "admin", None),
            ("alice", "patient", None),
            ("bob", "staff", None),
            ("carol", "patient", None),
            ("eve@acme", "patient", Some(("acme", "north"))),
        ];
        let mut ids = Vec::new();
        for (name, role, ws) in spec {
            let pw = format!("pw-{name}-secret");
            let id = match ws {
                None => srv.user_add(name, role, &pw),
                Some((t, i)) => srv.user_add_in(name, role, &pw, t, i),
            };
            ids.push((name.to_string(), pw, id));
        }
        srv.start_with(flags);
        let addr = srv.addr();
        let logins = futures_util::future::join_all(ids.iter().map(|(n, pw, _)| {
            let addr = addr.clone();
            async move { login(&addr, n, pw).await }
        }))
        .await;
        let mut users: Vec<User> = ids
            .into_iter()
            .zip(logins)
            .map(|((name, password, id), (token, uid))| {
                assert_eq!(
                    uid, id,
                    "login user_id of {name} differs from `user add` output"
                );
                User {
                    name,
                    password,
                    id,
                    token,
                }
            })
            .collect();
        let eve = users.pop().unwrap();
        let carol = users.pop().unwrap();
        let bob = users.pop().unwrap();
        let alice = users.pop().unwrap();
        let admin = users.pop().unwrap();
        World {
            srv,
            admin,
            alice,
            bob,
            carol,
            eve,
        }
    }

    pub fn addr(&self) -> String {
        self.srv.addr()
    }
}
