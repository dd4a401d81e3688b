//! What every mode sets up: the target (or a baseline server started for
//! the run), the admin token, users (created through `/admin/users`, then
//! logged in through `/auth/login`), group rooms (`/admin/rooms`) and
//! authenticated sockets — with bounded concurrency and progress lines.
//! (Patient chats, their workspaces and the erase fixture: `patients`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use rand::RngCore;
use serde_json::json;

use super::client::{self, Http, Target, Ws};
use super::report;
use super::stats::Clock;
use super::BenchArgs;

/// A bench user, logged in.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub id: String,
    pub token: String,
}

/// What a bench user is, and where.
#[derive(Clone, Debug)]
pub struct Account {
    /// `staff`, `patient`, … as `POST /admin/users` takes it.
    pub role: &'static str,
    /// `(tenant, instance)`; `None`: the default workspace.
    pub workspace: Option<(String, String)>,
}

impl Account {
    pub fn staff() -> Account {
        Account {
            role: "staff",
            workspace: None,
        }
    }
}

/// A room and the indices of its members.
#[derive(Clone, Debug)]
pub struct Room {
    pub id: String,
    pub members: Vec<usize>,
}

/// One run's context.
pub struct Env {
    pub args: BenchArgs,
    pub target: Target,
    /// "parlor" or "baseline": which server this is.
    pub server: &'static str,
    pub run_id: String,
    reuse: bool,
    pub admin: String,
    pub clock: Clock,
    pub server_pid: Option<u32>,
    _child: Option<BaselineChild>,
}

impl Env {
    /// The target of `--url`, or with `baseline` a baseline server
    /// started (and later stopped) for this run.
    pub async fn open(args: &BenchArgs, baseline: bool) -> Result<Env> {
        let timeout = args.net_timeout();
        let (target, child, server_pid, server) = if baseline {
            let child = BaselineChild::spawn(args)?;
            let target = Target::parse(&format!("ws://{}", child.addr), false, timeout)?;
            let pid = child.child.id();
            (target, Some(child), Some(pid), "baseline")
        } else {
            let target = Target::parse(&args.url, args.allow_remote, timeout)?;
            (target, None, args.server_pid, "parlor")
        };
        let admin = admin_token(args, &target, baseline).await?;
        let (run_id, reuse) = match &args.run_id {
            Some(r) => (r.clone(), true),
            None => {
                let mut b = [0u8; 4];
                rand::thread_rng().fill_bytes(&mut b);
                (b.iter().map(|x| format!("{x:02x}")).collect(), false)
            }
        };
        Ok(Env {
            args: args.clone(),
            target,
            server,
            run_id,
            reuse,
            admin,
            clock: Clock::new(),
            server_pid,
            _child: child,
        })
    }

    pub fn progress(&self, line: &str) {
        if !self.args.quiet {
            report::progress(line);
        }
    }

    fn password(&self, i: usize) -> String {
        if self.reuse {
            // Derivable from the run id, so a later run can log in again.
            format!("bench-{}-{i}-pw", self.run_id)
        } else {
            let mut b = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
    }

    /// Creates `n` staff users named `bench-RUN-TAG-I` and logs each in.
    pub async fn users(&self, tag: &str, n: usize) -> Result<Vec<User>> {
        self.users_as(tag, n, |_| Account::staff()).await
    }

    /// Creates `n` users named `bench-RUN-TAG-I`, user `i` as `who(i)`
    /// says, and logs each in.
    pub async fn users_as<W>(&self, tag: &str, n: usize, who: W) -> Result<Vec<User>>
    where
        W: Fn(usize) -> Account,
    {
        let label = format!("users ({tag}): created and logged in");
        let started = Instant::now();
        let who = &who;
        let out = parallel(self, n, &label, |i| async move {
            let name = format!("bench-{}-{tag}-{i}", self.run_id);
            let password = self.password(i);
            let account = who(i);
            let mut body = json!({"username": name, "password": password, "role": account.role});
            if let Some((tenant, instance)) = account.workspace {
                body["tenant"] = json!(tenant);
                body["instance"] = json!(instance);
            }
            let mut http = Http::new(&self.target);
            let r = http.post("/admin/users", Some(&self.admin), &body).await?;
            if !(r.status == 201 || (r.status == 409 && self.reuse)) {
                r.expect(201, &format!("creating user {name}"))?;
            }
            let (token, id) = client::login(&mut http, &name, &password).await?;
            Ok(User {
                name,
                password,
                id,
                token,
            })
        })
        .await?;
        self.progress(&format!(
            "{n} users ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(out)
    }

    /// Group rooms of consecutive users, `size` each (the last may be
    /// smaller).
    pub async fn rooms(&self, users: &[User], size: usize) -> Result<Vec<Room>> {
        let groups: Vec<Vec<usize>> = (0..users.len())
            .collect::<Vec<_>>()
            .chunks(size)
            .map(<[usize]>::to_vec)
            .collect();
        let groups = &groups;
        let ids = parallel(self, groups.len(), "rooms created", |k| async move {
            let members: Vec<&str> = groups[k].iter().map(|&i| users[i].id.as_str()).collect();
            let name = format!("bench-{}-{k}", self.run_id);
            let mut http = Http::new(&self.target);
            http.post(
                "/admin/rooms",
                Some(&self.admin),
                &json!({"name": name, "members": members}),
            )
            .await?
            .field(201, &format!("creating room {name}"), "room_id")
        })
        .await?;
        Ok(ids
            .into_iter()
            .zip(groups.iter().cloned())
            .map(|(id, members)| Room { id, members })
            .collect())
    }

    /// Opens and authenticates one socket per token.
    pub async fn sockets(&self, tokens: &[&str]) -> Result<Vec<Ws>> {
        let started = Instant::now();
        let out = parallel(self, tokens.len(), "sockets connected", |i| async move {
            client::ws_connect(&self.target, tokens[i])
                .await
                .with_context(|| format!("socket {i}"))
        })
        .await?;
        self.progress(&format!(
            "{} sockets connected in {:.1} s",
            tokens.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(out)
    }
}

/// Runs `op(0..n)` with `--setup-concurrency` in flight, in order of
/// index, printing progress about once a second; the first error stops it.
pub async fn parallel<'a, T, F, Fut>(env: &'a Env, n: usize, label: &str, op: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut + 'a,
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut done = 0usize;
    let mut last = Instant::now();
    let mut results = futures_util::stream::iter(0..n)
        .map(|i| {
            let f = op(i);
            async move { (i, f.await) }
        })
        .buffer_unordered(env.args.setup_concurrency.max(1));
    while let Some((i, r)) = results.next().await {
        slots[i] = Some(r?);
        done += 1;
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            env.progress(&format!("{label}: {done}/{n}"));
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect())
}

async fn admin_token(args: &BenchArgs, target: &Target, baseline: bool) -> Result<String> {
    if let Some(t) = &args.admin_token {
        return Ok(t.clone());
    }
    let (user, password) = match (&args.admin_user, &args.admin_password) {
        (Some(u), Some(p)) => (u.clone(), p.clone()),
        _ if baseline => BaselineChild::default_admin(),
        _ => bail!(
            "the bench creates its users through the admin API: give --admin-user and \
             --admin-password, or --admin-token (or PARLOR_BENCH_ADMIN_*)"
        ),
    };
    let mut http = Http::new(target);
    let (token, _) = client::login(&mut http, &user, &password)
        .await
        .context("admin login")?;
    Ok(token)
}

/// A baseline server started as a child process for one run; stopped
/// when dropped (and it stops by itself when this process goes away: it
/// exits when its stdin closes).
struct BaselineChild {
    child: Child,
    addr: String,
}

impl BaselineChild {
    fn default_admin() -> (String, String) {
        ("admin".into(), "admin".into())
    }

    fn spawn(args: &BenchArgs) -> Result<BaselineChild> {
        let exe = std::env::current_exe().context("finding the parlor binary")?;
        let mut cmd = match &args.baseline_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["bench", "baseline-server", "--listen", "127.0.0.1:0"])
            .args(["--duration", "86400", "--stdin-lifeline"]);
        match (&args.admin_token, &args.admin_user, &args.admin_password) {
            (Some(t), _, _) => {
                cmd.env("PARLOR_BENCH_ADMIN_TOKEN", t);
            }
            (None, Some(u), Some(p)) => {
                cmd.env("PARLOR_BENCH_ADMIN_USER", u)
                    .env("PARLOR_BENCH_ADMIN_PASSWORD", p);
            }
            _ => {
                let (u, p) = Self::default_admin();
                cmd.env("PARLOR_BENCH_ADMIN_USER", u)
                    .env("PARLOR_BENCH_ADMIN_PASSWORD", p);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting the baseline server")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = String::new();
            while r.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let mut me = BaselineChild {
            child,
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the baseline server did not start within 10 s"))?;
        me.addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("the baseline server printed {line:?}"))?
            .to_string();
        Ok(me)
    }
}

impl Drop for BaselineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
