//! The built-in web client in a real browser: headless Chromium (Debian's
//! `chromium`) driven through `chromedriver` over W3C WebDriver
//! (`tests/webdriver/`), against the real daemon on a loopback port.
//!
//! Without Chromium and chromedriver these tests print why and pass, so a
//! developer machine without a browser still runs the suite;
//! `PARLOR_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs both)
//! turns that into a failure.
//!
//! The tests run one at a time (each starts two browsers; the machines
//! have two cores). Every wait is bounded.

mod common;
mod webdriver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use common::{Clinic, Pacer, User, Ws};
use webdriver::{Browser, Driver, ENTER, NULL_KEY, SHIFT};

/// How long anything the user would wait for may take.
const WAIT: Duration = Duration::from_secs(30);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium and chromedriver, or `None` (and a note) when the test skips.
async fn start_driver(test: &str) -> Option<Driver> {
    match webdriver::installed() {
        Some((chromium, driver)) => Some(Driver::start(&chromium, &driver).await),
        None => {
            let why = "chromium and chromedriver are not installed \
                       (apt-get install chromium chromium-driver)";
            if std::env::var_os("PARLOR_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
                panic!("{test}: {why}, and PARLOR_REQUIRE_BROWSER=1");
            }
            // Straight to stderr, past the test harness's capture, so the
            // skip is seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{test}: SKIPPED — {why}");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The clinic
// ---------------------------------------------------------------------------

/// The clinic, and the DM of its two staff: `nurse` and `doc`.
async fn clinic() -> (Clinic, String) {
    let c = Clinic::new().await;
    let dm = common::create_dm(&c.addr(), &c.nurse.token, &c.doc.id).await;
    (c, dm)
}

/// Sends `texts` into `room` as the owner of `ws`, each acknowledged.
async fn say(ws: &mut Ws, me: &str, room: &str, texts: &[String]) {
    let mut pacer = Pacer::new();
    common::send_until_echoed(ws, me, room, texts, &mut pacer, Duration::from_secs(60)).await;
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i:03}")).collect()
}

// ---------------------------------------------------------------------------
// Driving the client
// ---------------------------------------------------------------------------

async fn sign_in(b: &Browser, base: &str, p: &User) {
    b.goto(&format!("{base}/")).await;
    b.wait_for(
        "the sign-in form",
        WAIT,
        "return !document.getElementById('signin').hidden",
        json!([]),
    )
    .await;
    b.type_into("#username", &p.name).await;
    b.type_into("#password", &p.password).await;
    b.click("#signin-button").await;
    wait_live(b).await;
}

async fn wait_live(b: &Browser) {
    b.wait_for(
        "the live connection",
        WAIT,
        "return document.getElementById('conn-status').dataset.state === 'live'",
        json!([]),
    )
    .await;
}

async fn open_room(b: &Browser, room: &str) {
    b.wait_for(
        "the room in the list",
        WAIT,
        "return !!document.querySelector(`#rooms button[data-room=\"${arguments[0]}\"]`)",
        json!([room]),
    )
    .await;
    b.click(&format!("#rooms button[data-room=\"{room}\"]"))
        .await;
    b.wait_for(
        "the room's history",
        WAIT,
        "return !document.getElementById('composer').hidden && \
                document.getElementById('history-loading').hidden",
        json!([]),
    )
    .await;
}

/// The messages on screen: `(id, text)` in screen order.
async fn shown(b: &Browser) -> Vec<(u64, String)> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#messages li')].map(li => \
                [Number(li.dataset.id), li.querySelector('.text').textContent])",
            json!([]),
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_str().unwrap().to_string()))
        .collect()
}

/// Waits until exactly `n` messages are on screen.
async fn wait_shown(b: &Browser, n: usize) -> Vec<(u64, String)> {
    b.wait_for(
        &format!("{n} messages on screen"),
        WAIT,
        "return document.querySelectorAll('#messages li').length === arguments[0]",
        json!([n]),
    )
    .await;
    shown(b).await
}

/// Asserts the screen shows exactly `want`, in order, with ascending ids.
fn assert_exactly(got: &[(u64, String)], want: &[String]) {
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(texts, want, "the messages on screen");
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "ids must be unique and ascending: {got:?}"
    );
}

async fn badge(b: &Browser, room: &str) -> Value {
    b.js(
        "const e = document.querySelector(`#rooms button[data-room=\"${arguments[0]}\"] .badge`); \
         return e ? e.textContent : null",
        json!([room]),
    )
    .await
}

async fn visible(b: &Browser, css: &str) -> bool {
    b.js(
        "const e = document.querySelector(arguments[0]); \
         return !!e && getComputedStyle(e).display !== 'none' && !e.closest('[hidden]')",
        json!([css]),
    )
    .await
        == json!(true)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_messages_live_and_the_read_marker_moves() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("two_users_exchange_messages_live").await else {
        return;
    };
    let (c, dm) = clinic().await;
    let base = format!("http://{}", c.srv.addr());
    let nurse = driver.browser(1280, 800).await;
    // doc is on a phone.
    let doc = driver.browser(390, 844).await;
    sign_in(&nurse, &base, &c.nurse).await;
    sign_in(&doc, &base, &c.doc).await;

    // nurse starts the DM the way the README says: by doc's user number.
    nurse.click("#start summary").await;
    nurse.type_into("#dm-user", &c.doc.id).await;
    nurse.click("#dm-form button").await;
    nurse.wait_for(
        "the DM to open",
        WAIT,
        "return document.getElementById('room-title').textContent === 'Dr. Dana Ortiz' && \
                document.querySelector('#rooms button[aria-current=\"true\"]').dataset.room === arguments[0]",
        json!([dm]),
    )
    .await;
    let hello = "Hello Doc, are you on shift today?".to_string();
    nurse.type_into("#text", &format!("{hello}{ENTER}")).await;
    let mine = wait_shown(&nurse, 1).await;
    assert_exactly(&mine, std::slice::from_ref(&hello));
    assert_eq!(
        nurse
            .js("return document.getElementById('text').value", json!([]))
            .await,
        json!(""),
        "Enter sends and clears the box"
    );

    // doc's list shows it as unread, live; on a phone only the list shows.
    doc.wait_for(
        "an unread badge",
        WAIT,
        "const e = document.querySelector(`#rooms button[data-room=\"${arguments[0]}\"] .badge`); \
         return e && e.textContent === '1'",
        json!([dm]),
    )
    .await;
    assert!(visible(&doc, ".sidebar").await && !visible(&doc, "#room").await);
    open_room(&doc, &dm).await;
    assert!(visible(&doc, "#room").await && !visible(&doc, ".sidebar").await);
    let seen = wait_shown(&doc, 1).await;
    assert_exactly(&seen, std::slice::from_ref(&hello));
    assert_eq!(
        doc.js(
            "return document.querySelector('#messages li .who').textContent",
            json!([])
        )
        .await,
        json!("Nurse Joy")
    );

    // Reading it moved doc's marker in the core (every dialect sees it).
    let addr = c.srv.addr();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let o = common::overview(&addr, &c.doc.token).await;
        let r = common::overview_room(&o, &dm);
        if r["last_read"] == json!(seen[0].0) && r["unread"] == json!(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "doc's read marker did not move: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(badge(&doc, &dm).await, Value::Null);

    // Shift+Enter starts a new line; Enter sends.
    doc.type_into(
        "#text",
        &format!("Yes, until six.{SHIFT}{ENTER}{NULL_KEY}See you at the handover.{ENTER}"),
    )
    .await;
    let reply = "Yes, until six.\nSee you at the handover.".to_string();
    let both = wait_shown(&nurse, 2).await;
    assert_exactly(&both, &[hello.clone(), reply.clone()]);
    assert_exactly(&wait_shown(&doc, 2).await, &[hello, reply]);
    assert_eq!(
        nurse
            .js(
                "return document.querySelector('#messages li:last-child .who').textContent",
                json!([])
            )
            .await,
        json!("Dr. Dana Ortiz")
    );
    // Times carry the machine-readable instant and a locale rendering.
    let time = nurse
        .js(
            "const t = document.querySelector('#messages li time'); return [t.dateTime, t.textContent]",
            json!([]),
        )
        .await;
    assert!(time[0].as_str().unwrap().ends_with('Z'), "{time}");
    assert!(!time[1].as_str().unwrap().is_empty());

    // Back to the list on the phone.
    doc.click("#back").await;
    assert!(visible(&doc, ".sidebar").await && !visible(&doc, "#room").await);

    // doc makes a new open chat; nurse joins it by its number.
    doc.click("#start summary").await;
    doc.click("#open-form button").await;
    let detail = doc
        .wait_for(
            "the new open chat",
            WAIT,
            "const d = document.getElementById('room-detail').textContent; \
             return d.startsWith('Open chat #') && d",
            json!([]),
        )
        .await;
    let open = detail.as_str().unwrap()["Open chat #".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    nurse.click("#start summary").await;
    nurse.type_into("#open-chat", &open).await;
    nurse.click("#open-form button").await;
    nurse
        .wait_for(
            "the joined open chat",
            WAIT,
            "return document.getElementById('room-detail').textContent === \
                `Open chat #${arguments[0]} · 2 members`",
            json!([open]),
        )
        .await;
    nurse
        .type_into("#text", &format!("Anyone for coffee?{ENTER}"))
        .await;
    assert_exactly(
        &wait_shown(&doc, 1).await,
        &["Anyone for coffee?".to_string()],
    );
    nurse.quit().await;
    doc.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrolling_up_loads_all_200_messages_of_history_in_order() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("scrolling_up_loads_history").await else {
        return;
    };
    let (c, dm) = clinic().await;
    let base = format!("http://{}", c.srv.addr());
    let history = texts("history", 200);
    let mut ws = Ws::auth(&c.srv.addr(), &c.doc.token).await;
    say(&mut ws, &c.doc.id, &dm, &history).await;

    let nurse = driver.browser(1280, 800).await;
    sign_in(&nurse, &base, &c.nurse).await;
    // More unread than the overview counts: shown as 99+.
    nurse.wait_for(
        "the unread badge",
        WAIT,
        "const e = document.querySelector(`#rooms button[data-room=\"${arguments[0]}\"] .badge`); \
         return e && e.textContent",
        json!([dm]),
    )
    .await;
    assert_eq!(badge(&nurse, &dm).await, json!("99+"));
    open_room(&nurse, &dm).await;
    let first = shown(&nurse).await;
    assert_exactly(&first, &history[150..]);
    assert!(!visible(&nurse, "#history-start").await);

    let mut pages = 0;
    loop {
        let done = visible(&nurse, "#history-start").await;
        let n = shown(&nurse).await.len();
        if done {
            break;
        }
        assert!(
            pages < 10,
            "history did not end after {pages} pages ({n} shown)"
        );
        nurse
            .js(
                "document.getElementById('scroller').scrollTop = 0",
                json!([]),
            )
            .await;
        nurse
            .wait_for(
                "an older page",
                WAIT,
                "return document.querySelectorAll('#messages li').length > arguments[0] || \
                    !document.getElementById('history-start').hidden",
                json!([n]),
            )
            .await;
        pages += 1;
    }
    assert_exactly(&shown(&nurse).await, &history);
    // The page kept its place: the top of the list is on screen, not the end.
    let top = nurse
        .js(
            "return document.getElementById('scroller').scrollTop",
            json!([]),
        )
        .await;
    assert!(top.as_f64().unwrap() < 2000.0, "scrollTop {top}");
    nurse.quit().await;
}

/// A TCP relay between the browser and the daemon that the test can cut
/// (every relayed connection is dropped, new ones are refused) and point
/// at a restarted daemon — the browser keeps one origin throughout.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<String>>,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (t, o, cs) = (target.clone(), open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the browser sees the connection fail
                }
                let to = t.lock().unwrap().clone();
                let task = tokio::spawn(async move {
                    let up = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&to));
                    if let Ok(Ok(mut up)) = up.await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut list = cs.lock().unwrap();
                list.retain(|h| !h.is_finished());
                list.push(task.abort_handle());
            }
        })
        .abort_handle();
        Relay {
            addr,
            target,
            open,
            conns,
            accept,
        }
    }

    /// Drops every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Relays again, to `target`.
    fn restore(&self, target: String) {
        *self.target.lock().unwrap() = target;
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn wait_not_live(b: &Browser) {
    b.wait_for(
        "the client to notice the dropped socket",
        WAIT,
        "return document.getElementById('conn-status').dataset.state !== 'live'",
        json!([]),
    )
    .await;
}

/// Two real ways a socket drops: the network between browser and server
/// goes away (the relay cuts every connection), and the daemon dies
/// (`kill -9`) and comes back. Each time messages are committed while the
/// browser is away; when it is back it must show every one of them once,
/// in order, and then live messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_and_catches_up_without_loss_or_duplicates() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("a_dropped_socket_reconnects").await else {
        return;
    };
    let (mut c, dm) = clinic().await;
    let relay = Relay::start(c.srv.addr()).await;
    let base = format!("http://{}", relay.addr);
    let nurse = driver.browser(1280, 800).await;
    sign_in(&nurse, &base, &c.nurse).await;
    open_room(&nurse, &dm).await;

    let mut want = texts("before", 3);
    let mut ws = Ws::auth(&c.srv.addr(), &c.doc.token).await;
    say(&mut ws, &c.doc.id, &dm, &want).await;
    assert_exactly(&wait_shown(&nurse, want.len()).await, &want);

    // 1. The network goes away; doc writes meanwhile.
    relay.cut();
    wait_not_live(&nurse).await;
    let gap = texts("while cut off", 5);
    say(&mut ws, &c.doc.id, &dm, &gap).await;
    want.extend(gap);
    relay.restore(c.srv.addr());
    wait_live(&nurse).await;
    assert_exactly(&wait_shown(&nurse, want.len()).await, &want);

    // 2. The daemon is killed and restarted (on another port, behind the
    //    same relay); doc writes before the browser can reconnect.
    drop(ws);
    c.srv.kill9();
    wait_not_live(&nurse).await;
    c.srv.start();
    let mut ws = Ws::auth(&c.srv.addr(), &c.doc.token).await;
    let gap = texts("while the daemon restarted", 5);
    say(&mut ws, &c.doc.id, &dm, &gap).await;
    want.extend(gap);
    relay.restore(c.srv.addr());
    wait_live(&nurse).await;
    assert_exactly(&wait_shown(&nurse, want.len()).await, &want);

    // 3. Live again, both ways.
    let live = texts("live again", 3);
    say(&mut ws, &c.doc.id, &dm, &live).await;
    want.extend(live);
    assert_exactly(&wait_shown(&nurse, want.len()).await, &want);
    nurse
        .type_into("#text", &format!("back online{ENTER}"))
        .await;
    let pushed = ws.recv_message(WAIT).await;
    assert_eq!(pushed["message"], json!("back online"));
    want.push("back online".into());
    assert_exactly(&wait_shown(&nurse, want.len()).await, &want);
    // Nothing arrives twice later either (e.g. a late catch-up page).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly(&shown(&nurse).await, &want);
    nurse.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_messages_and_room_names_is_shown_as_text() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("markup_is_shown_as_text").await else {
        return;
    };
    let (c, _dm) = clinic().await;
    let addr = c.srv.addr();
    let base = format!("http://{addr}");
    let name = "<img src=x onerror=\"window.__pwned = 3\"> Ward";
    let r = common::post_json(
        &addr,
        "/admin/rooms",
        Some(&c.admin.token),
        &json!({"name": name, "members": [c.nurse.id, c.doc.id]}),
    )
    .await
    .expect(201);
    let group = r["room_id"].as_str().unwrap().to_string();

    let evil = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>bold</b> & done".to_string();
    let mut ws = Ws::auth(&addr, &c.doc.token).await;
    say(&mut ws, &c.doc.id, &group, std::slice::from_ref(&evil)).await;

    let nurse = driver.browser(1280, 800).await;
    sign_in(&nurse, &base, &c.nurse).await;
    open_room(&nurse, &group).await;
    nurse.type_into("#text", &format!("{evil}{ENTER}")).await;
    let got = wait_shown(&nurse, 2).await;
    assert_exactly(&got, &[evil.clone(), evil]);
    assert_eq!(
        nurse
            .js(
                "return document.getElementById('room-title').textContent",
                json!([])
            )
            .await,
        json!(name)
    );
    let injected = nurse
        .js(
            "return [window.__pwned === undefined, \
                     document.querySelectorAll('#messages script, #messages img, #messages b, \
                                                #rooms img, #room-title img').length]",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!([true, 0]));
    nurse.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_clears_the_session_and_a_revoked_token_returns_to_sign_in() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("sign_out_clears_the_session").await else {
        return;
    };
    let (c, _dm) = clinic().await;
    let addr = c.srv.addr();
    let base = format!("http://{addr}");
    let nurse = driver.browser(1280, 800).await;
    let token_js = "const s = sessionStorage.getItem('parlor.session'); \
                    return s ? JSON.parse(s).token : null";

    sign_in(&nurse, &base, &c.nurse).await;
    let token = nurse.js(token_js, json!([])).await;
    let token = token
        .as_str()
        .expect("a token in sessionStorage")
        .to_string();
    common::get_as(&addr, "/chat/rooms", &token)
        .await
        .expect(200);

    nurse.click("#signout").await;
    nurse
        .wait_for(
            "the sign-in form",
            WAIT,
            "return !document.getElementById('signin').hidden && \
                document.getElementById('app').hidden",
            json!([]),
        )
        .await;
    assert_eq!(nurse.js(token_js, json!([])).await, Value::Null);
    assert_eq!(
        nurse.js("return sessionStorage.length", json!([])).await,
        json!(0)
    );
    assert_eq!(
        nurse
            .js(
                "return document.getElementById('rooms').children.length + \
                    document.getElementById('messages').children.length",
                json!([])
            )
            .await,
        json!(0),
        "nothing of the session stays on screen"
    );
    // The token was revoked on the server, not just forgotten.
    common::get_as(&addr, "/chat/rooms", &token)
        .await
        .expect_error(401, "UNAUTHENTICATED");
    // A reload does not sign in again.
    nurse.goto(&format!("{base}/")).await;
    nurse
        .wait_for(
            "the sign-in form after a reload",
            WAIT,
            "return !document.getElementById('signin').hidden",
            json!([]),
        )
        .await;

    // A token revoked elsewhere (401) sends the user back to sign-in.
    sign_in(&nurse, &base, &c.nurse).await;
    let token = nurse.js(token_js, json!([])).await;
    let token = token.as_str().unwrap().to_string();
    let out = common::post_json(&addr, "/auth/logout", Some(&token), &json!({})).await;
    assert_eq!(out.status, 204);
    let msg = nurse
        .wait_for(
            "the sign-in form after the token was revoked",
            WAIT,
            "const e = document.getElementById('signin-error'); \
             return !document.getElementById('signin').hidden && !e.hidden && e.textContent",
            json!([]),
        )
        .await;
    assert!(msg.as_str().unwrap().contains("session has ended"), "{msg}");
    assert_eq!(nurse.js(token_js, json!([])).await, Value::Null);
    nurse.quit().await;
}

/// A clinic's day, for the README's screenshot: a patient chat, a DM and a
/// ward team with unread messages. `PARLOR_SCREENSHOT=docs/screenshot.png`
/// saves it; the test checks the page is styled (its stylesheet passed the
/// CSP) and that the PNG is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_looks_like_a_chat_client() {
    let _one = SERIAL.lock().await;
    let Some(driver) = start_driver("the_client_looks_like_a_chat_client").await else {
        return;
    };
    let (c, dm) = clinic().await;
    let addr = c.srv.addr();
    let base = format!("http://{addr}");
    let ward = common::post_json(
        &addr,
        "/admin/rooms",
        Some(&c.admin.token),
        &json!({"name": "Ward 3 team", "members": [c.nurse.id, c.doc.id]}),
    )
    .await
    .expect(201)["room_id"]
        .as_str()
        .unwrap()
        .to_string();
    let chat = common::chat_path(&c.pat, "");
    let post = |token: String, path: String, text: &'static str| {
        let addr = addr.clone();
        async move {
            common::post_json(&addr, &path, Some(&token), &json!({ "message": text }))
                .await
                .expect(200);
        }
    };
    post(
        c.pat.token.clone(),
        format!("{chat}/inbound"),
        "Good morning! My knee is still swollen after yesterday's session.",
    )
    .await;
    post(
        c.doc.token.clone(),
        format!("{chat}/outbound"),
        "Thanks, Pat. Keep it raised and use the ice pack 20 minutes at a time.",
    )
    .await;
    post(
        c.pat.token.clone(),
        format!("{chat}/inbound"),
        "Will do. Should I still come in on Thursday?",
    )
    .await;
    let mut ws = Ws::auth(&addr, &c.doc.token).await;
    say(
        &mut ws,
        &c.doc.id,
        &dm,
        &["Can you cover my 3 pm round?".to_string()],
    )
    .await;
    say(
        &mut ws,
        &c.doc.id,
        &ward,
        &[
            "Bed 12 is free again.".to_string(),
            "Handover at 6 in the staff room.".to_string(),
        ],
    )
    .await;

    let nurse = driver.browser(1280, 760).await;
    sign_in(&nurse, &base, &c.nurse).await;
    let patient_room = nurse
        .wait_for(
            "the patient chat",
            WAIT,
            "const b = [...document.querySelectorAll('#rooms button')] \
                 .find(b => b.textContent.includes('Pat Kim')); return b && b.dataset.room",
            json!([]),
        )
        .await;
    open_room(&nurse, patient_room.as_str().unwrap()).await;
    wait_shown(&nurse, 3).await;
    nurse
        .type_into(
            "#text",
            &format!("Yes, Thursday at 10 as planned. Bring your exercise sheet.{ENTER}"),
        )
        .await;
    wait_shown(&nurse, 4).await;
    assert_eq!(
        nurse
            .js(
                "return getComputedStyle(document.getElementById('app')).display",
                json!([])
            )
            .await,
        json!("grid"),
        "app.css applies"
    );
    assert_eq!(badge(&nurse, &ward).await, json!("2"));
    assert_eq!(badge(&nurse, &dm).await, json!("1"));
    // Park the pointer off the list (no hover highlight), let the status
    // corner settle, then take the picture.
    nurse.click("#room-title").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = nurse.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if let Some(path) = std::env::var_os("PARLOR_SCREENSHOT") {
        std::fs::write(&path, &png).expect("write the screenshot");
        eprintln!("screenshot saved to {}", path.to_string_lossy());
    }
    nurse.quit().await;
}
