//! [`Clinic`]: the one patient-care fixture of the black-box tests (the
//! patient dialect, Welkin's clients, webhooks, the web client): a started
//! daemon with a clinic workspace, a second workspace, and the operator,
//! every user made over `/admin/users` and logged in.

use serde_json::json;

use super::daemon::Server;
use super::http::{login, post_json};
use super::world::User;

/// The clinic's workspace.
pub const TENANT: &str = "gh";
pub const INSTANCE: &str = "sb-demo";

/// The send-rate flags every clinic starts with: its tests post hundreds
/// of messages as one user.
const RAISED_RATES: [&str; 4] = ["--msg-burst", "100000", "--msg-rate", "100000"];

/// A clinic ([`TENANT`]/[`INSTANCE`]: patients `pat` "Pat Kim" and `pat2`,
/// staff `nurse` "Nurse Joy" and `doc` "Dr. Dana Ortiz") and another workspace
/// (`acme/north`: staff `mallory` "Mallory", patient `epat`), plus the
/// default workspace's `admin`. Passwords are `pw-NAME-secret`.
pub struct Clinic {
    pub srv: Server,
    pub admin: User,
    pub pat: User,
    pub pat2: User,
    pub nurse: User,
    pub doc: User,
    pub mallory: User,
    pub epat: User,
}

impl Clinic {
    pub async fn new() -> Clinic {
        Clinic::with_flags(&[]).await
    }

    /// Like [`Clinic::new`], the daemon started with extra `serve` flags.
    pub async fn with_flags(flags: &[&str]) -> Clinic {
        let mut srv = Server::new();
        let admin_pw = "pw-admin-secret";
        srv.user_add("admin", "admin", admin_pw);
        let mut all = RAISED_RATES.to_vec();
        all.extend_from_slice(flags);
        srv.start_with(&all);
        let addr = srv.addr();
        let (token, id) = login(&addr, "admin", admin_pw).await;
        let admin = User {
            name: "admin".into(),
            password: admin_pw.into(),
            id,
            token,
        };
        let clinic = (TENANT, INSTANCE);
        let acme = ("acme", "north");
        let add = |name, role, ws, display| add_user(&addr, &admin.token, name, role, ws, display);
        Clinic {
            pat: add("pat", "patient", clinic, Some("Pat Kim")).await,
            pat2: add("pat2", "patient", clinic, Some("Second Patient")).await,
            nurse: add("nurse", "staff", clinic, Some("Nurse Joy")).await,
            doc: add("doc", "staff", clinic, Some("Dr. Dana Ortiz")).await,
            mallory: add("mallory", "staff", acme, Some("Mallory")).await,
            epat: add("epat", "patient", acme, Some("Acme Patient")).await,
            admin,
            srv,
        }
    }

    pub fn addr(&self) -> String {
        self.srv.addr()
    }
}

/// `POST /admin/users` as the admin (asserts 201) for `name` in workspace
/// `(tenant, instance)` with password `pw-NAME-secret`, then logs in as
/// them; the ids must agree.
pub async fn add_user(
    addr: &str,
    admin_token: &str,
    name: &str,
    role: &str,
    (tenant, instance): (&str, &str),
    display_name: Option<&str>,
) -> User {
    let password = format!("pw-{name}-secret");
    let mut body = json!({"username": name, "password": password, "role": role,
        "tenant": tenant, "instance": instance});
    if let Some(d) = display_name {
        body["display_name"] = json!(d);
    }
    let id = post_json(addr, "/admin/users", Some(admin_token), &body)
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id for {name}"))
        .to_string();
    let (token, uid) = login(addr, name, &password).await;
    assert_eq!(uid, id, "login user_id of {name} differs from /admin/users");
    User {
        name: name.into(),
        password,
        id,
        token,
    }
}
