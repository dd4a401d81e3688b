//! A small W3C WebDriver client for the browser tests: it starts Debian's
//! `chromedriver` on a free loopback port and speaks the WebDriver JSON
//! protocol to it over the test harness's hyper client (no WebDriver
//! crate needed). Only what the tests use: sessions, navigation, finding
//! elements, clicks, typing, scripts, screenshots.
//!
//! Every call is bounded by a timeout (the harness's HTTP timeout), and
//! [`Browser::wait_for`] polls a script until it returns something truthy
//! or its own timeout passes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common;

/// The W3C key for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver may take to answer `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);

/// WebDriver key codes (W3C "keys" table).
pub const ENTER: &str = "\u{E007}";
pub const SHIFT: &str = "\u{E008}";
/// Releases held modifiers.
pub const NULL_KEY: &str = "\u{E000}";

/// The browser and its driver, if both are installed: `PARLOR_CHROMIUM` and
/// `PARLOR_CHROMEDRIVER` override the search of `PATH`.
pub fn installed() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    };
    let chromium = find(
        "PARLOR_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )?;
    let driver = find("PARLOR_CHROMEDRIVER", &["chromedriver"])?;
    Some((chromium, driver))
}

/// A running chromedriver. Dropping it ends its sessions and the process.
pub struct Driver {
    child: Child,
    addr: String,
    chromium: PathBuf,
    sessions: Arc<Mutex<Vec<String>>>,
}

impl Driver {
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = Driver {
            child,
            addr: format!("127.0.0.1:{port}"),
            chromium: chromium.to_owned(),
            sessions: Arc::default(),
        };
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let ready =
                common::http_inner(&driver.addr, "GET", "/status", &[], bytes::Bytes::new())
                    .await
                    .ok()
                    .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                    .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready within {DRIVER_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium with a fresh profile and this window size.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("parlor-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--disable-dev-shm-usage".into(),
            "--lang=en-US".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.chromium, "args": args},
            "timeouts": {"script": 20000, "pageLoad": 30000, "implicit": 0},
        }}});
        let v = call(&self.addr, "POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("could not start a Chromium session: {e}"));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        self.sessions.lock().unwrap().push(id.clone());
        Browser {
            addr: self.addr.clone(),
            id,
            sessions: self.sessions.clone(),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Synchronously, so Chromium does not outlive the test.
        for id in self.sessions.lock().unwrap().drain(..) {
            delete_blocking(&self.addr, &format!("/session/{id}"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bounded blocking `DELETE` (used from `Drop`, outside any runtime).
fn delete_blocking(addr: &str, path: &str) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_ok() {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// One WebDriver command; `Err` carries the driver's error message.
async fn call(addr: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let r = common::http(
        addr,
        method,
        path,
        &[("content-type", "application/json; charset=utf-8")],
        body,
    )
    .await;
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("{method} {path}: answer is not JSON ({e}): {}", r.text()))?;
    if r.status != 200 {
        return Err(format!(
            "{method} {path} → {}: {} {}",
            r.status, v["value"]["error"], v["value"]["message"]
        ));
    }
    Ok(v["value"].clone())
}

/// One browser session (one window, its own profile).
pub struct Browser {
    addr: String,
    id: String,
    sessions: Arc<Mutex<Vec<String>>>,
    _profile: TempDir,
}

impl Browser {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.id);
        call(&self.addr, method, &full, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {v}"))
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    /// Types `text` into the element (WebDriver key codes allowed).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs a synchronous script (`arguments[i]` are `args`).
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something truthy; returns that.
    pub async fn wait_for(&self, what: &str, within: Duration, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let state = self
                    .js(
                        "const s = document.getElementById('conn-status'); \
                         return (s ? s.dataset.state + ': ' + s.textContent : '') + ' | ' + \
                         document.body.innerText.slice(0, 2000)",
                        json!([]),
                    )
                    .await;
                panic!("waited {within:?} for {what}; last value {v}; page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("screenshot is base64")
    }

    pub async fn quit(self) {
        let _ = call(&self.addr, "DELETE", &format!("/session/{}", self.id), None).await;
        self.sessions.lock().unwrap().retain(|s| *s != self.id);
    }
}
