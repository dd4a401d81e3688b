//! The daemon under test: [`Server`] owns a temporary data directory, runs
//! CLI subcommands against it and starts / kills / restarts `parlor serve`
//! on it (always `--listen 127.0.0.1:0`, the port read back from its
//! `listening on` line). The daemon's stderr goes to a log file that is
//! printed when a test panics.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tempfile::TempDir;

use super::http::{get, get_as, login, post_json, post_raw, Resp};
use super::ws::Ws;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_parlor");
/// How long `parlor serve` may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI subcommand may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// One daemon data directory, plus (at most) one running `parlor serve` on it.
pub struct Server {
    root: TempDir,
    data_dir: PathBuf,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    starts: u32,
    logs: Vec<PathBuf>,
}

impl Server {
    /// A fresh, empty data directory; the daemon is not started.
    pub fn new() -> Server {
        let root = tempfile::Builder::new()
            .prefix("parlor-test-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        Server {
            root,
            data_dir,
            child: None,
            addr: None,
            starts: 0,
            logs: Vec::new(),
        }
    }

    /// A fresh data directory with the daemon already started.
    pub fn started() -> Server {
        let mut s = Server::new();
        s.start();
        s
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address the running daemon printed (`127.0.0.1:PORT`).
    /// Changes on every (re)start.
    pub fn addr(&self) -> String {
        self.addr
            .expect("daemon is not running (call start())")
            .to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("daemon is not running (call start())")
            .id()
    }

    /// What the daemon's last start has logged so far (its stderr).
    pub fn log_text(&self) -> String {
        self.logs
            .last()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    }

    fn base_command(&self) -> Command {
        let mut c = Command::new(BIN);
        for v in ["PARLOR_DATA_DIR", "PARLOR_LISTEN", "PARLOR_PUBLIC_URL"] {
            c.env_remove(v);
        }
        // Never the default ./data of the repository.
        c.current_dir(self.root.path());
        c
    }

    /// `parlor serve --listen 127.0.0.1:0 --data-dir DIR`; waits (bounded) for
    /// the single `listening on ADDR` stdout line and remembers ADDR.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Like [`Server::start`] with extra `serve` flags (e.g. `--public-url`).
    pub fn start_with(&mut self, extra: &[&str]) {
        self.start_with_env(extra, &[]);
    }

    /// Like [`Server::start_with`], with extra environment variables.
    pub fn start_with_env(&mut self, extra: &[&str], envs: &[(&str, &OsStr)]) {
        let data_dir = self.data_dir.clone();
        let mut args: Vec<&OsStr> = vec![
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| OsStr::new(*a)));
        self.spawn_serve(&args, envs);
    }

    /// Starts `parlor serve` with no flags, configured only through
    /// `PARLOR_LISTEN=127.0.0.1:0` and `PARLOR_DATA_DIR=DIR`.
    pub fn start_via_env(&mut self) {
        let data_dir = self.data_dir.clone();
        self.spawn_serve(
            &[],
            &[
                ("PARLOR_LISTEN", "127.0.0.1:0".as_ref()),
                ("PARLOR_DATA_DIR", data_dir.as_os_str()),
            ],
        );
    }

    fn spawn_serve(&mut self, args: &[&OsStr], envs: &[(&str, &OsStr)]) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let log = self.root.path().join(format!("serve-{}.log", self.starts));
        let log_file = File::create(&log).expect("create log file");
        self.logs.push(log.clone());
        let mut cmd = self.base_command();
        cmd.arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawn parlor serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on (or dies of) a full
            // or closed stdout pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "parlor serve printed no `listening on` line within {:?} (exit: {:?})\n--- stderr ---\n{}",
                    START_TIMEOUT,
                    status,
                    tail(&log, 80)
                );
            }
        };
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let rest = trimmed.strip_prefix("listening on ").unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("first stdout line is not `listening on ADDR`: {trimmed:?}")
        });
        let addr: SocketAddr = rest
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {trimmed:?}: {e}"));
        assert!(
            addr.ip().is_loopback(),
            "daemon bound {addr}, expected 127.0.0.1"
        );
        assert_ne!(addr.port(), 0, "daemon printed port 0: {trimmed:?}");
        self.child = Some(child);
        self.addr = Some(addr);
    }

    /// SIGKILL the daemon (std's `Child::kill`) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.addr = None;
    }

    /// kill -9, then start again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// SIGTERM the daemon and wait (bounded) for it to exit; returns its exit
    /// code (`None` if killed by a signal). Panics if it does not exit.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take().expect("daemon is not running");
        self.addr = None;
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `parlor ARGS… --data-dir DIR` with `stdin` as its standard input;
    /// bounded by [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cli_command(args, stdin, |cmd| {
            cmd.arg("--data-dir").arg(&self.data_dir);
        })
    }

    /// Runs `parlor ARGS…` (no `--data-dir` added) after `adjust` has had
    /// the command (more arguments, the environment); like [`Server::cli`]
    /// otherwise.
    pub fn cli_command(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut cmd = self.base_command();
        cmd.args(args);
        adjust(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn parlor CLI");
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(s) = stdin {
            // A CLI that exits early closes its stdin; ignore EPIPE.
            let _ = input.write_all(s.as_bytes());
        }
        drop(input);
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(out) => out.expect("wait for parlor CLI"),
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!(
                    "`parlor {}` did not finish within {:?}",
                    args.join(" "),
                    CLI_TIMEOUT
                );
            }
        }
    }

    /// `parlor user add NAME --role ROLE [EXTRA…]` with `password` on stdin.
    pub fn try_user_add(&self, name: &str, role: &str, password: &str, extra: &[&str]) -> Output {
        let mut args = vec!["user", "add", name, "--role", role];
        args.extend_from_slice(extra);
        self.cli(&args, Some(&format!("{password}\n")))
    }

    /// Adds a user in the default workspace; returns its id (decimal string).
    pub fn user_add(&self, name: &str, role: &str, password: &str) -> String {
        let out = self.try_user_add(name, role, password, &[]);
        parse_id_output(&out, &format!("user add {name}"))
    }

    /// Adds a user in workspace (tenant, instance); returns its id.
    pub fn user_add_in(
        &self,
        name: &str,
        role: &str,
        password: &str,
        tenant: &str,
        instance: &str,
    ) -> String {
        let out = self.try_user_add(
            name,
            role,
            password,
            &["--tenant", tenant, "--instance", instance],
        );
        parse_id_output(&out, &format!("user add {name} --tenant {tenant}"))
    }

    /// `parlor token issue NAME`; returns the token.
    pub fn token_issue(&self, name: &str) -> String {
        let out = self.cli(&["token", "issue", name], None);
        assert!(
            out.status.success(),
            "`parlor token issue {name}` failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tok = String::from_utf8(out.stdout)
            .expect("utf-8 token")
            .trim()
            .to_string();
        assert!(!tok.is_empty(), "`parlor token issue` printed nothing");
        assert!(
            !tok.contains(char::is_whitespace),
            "token has whitespace: {tok:?}"
        );
        tok
    }

    // -- HTTP / WS conveniences bound to this server's address --------------

    pub async fn get(&self, path: &str) -> Resp {
        get(&self.addr(), path).await
    }

    /// GET with `Authorization: Bearer TOKEN`.
    pub async fn get_as(&self, path: &str, token: &str) -> Resp {
        get_as(&self.addr(), path, token).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        post_json(&self.addr(), path, token, body).await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: impl Into<Bytes>) -> Resp {
        post_raw(&self.addr(), path, token, body).await
    }

    /// POST /auth/login; asserts 200 and returns (token, user_id).
    pub async fn login(&self, username: &str, password: &str) -> (String, String) {
        login(&self.addr(), username, password).await
    }

    pub async fn ws(&self, token: &str) -> Ws {
        Ws::auth(&self.addr(), token).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                eprintln!(
                    "--- daemon stderr ({}) ---\n{}",
                    log.display(),
                    tail(log, 60)
                );
            }
        }
    }
}

fn parse_id_output(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "`parlor {what}` failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.parse::<u64>()
        .unwrap_or_else(|_| panic!("`parlor {what}` printed {s:?}, expected a decimal id"));
    s
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
