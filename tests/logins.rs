//! Black-box tests of logins under load: the password threads
//! (`--argon2-threads`) answer a burst of concurrent logins, each
//! correctly, and run at the lowest CPU priority.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_concurrent_logins_on_one_password_thread_is_answered_correctly() {
    let mut srv = Server::new();
    let names = ["ann", "bob", "cy", "dee", "eve", "fay"];
    let ids: HashMap<&str, String> = names
        .iter()
        .map(|&n| (n, srv.user_add(n, "staff", &format!("pw-{n}"))))
        .collect();
    srv.start_with(&["--argon2-threads", "1"]);
    let addr = srv.addr();

    // Each user twice with the right password and twice with a wrong one,
    // and four unknown users: 28 logins at once, queued on one thread.
    let mut attempts: Vec<(String, String, bool)> = Vec::new();
    for n in names {
        for k in 0..2 {
            attempts.push((n.into(), format!("pw-{n}"), true));
            attempts.push((n.into(), format!("pw-{n}-{k}"), false));
        }
    }
    for k in 0..4 {
        attempts.push((format!("nobody{k}"), "pw-ann".into(), false));
    }
    let answers = futures_util::future::join_all(attempts.iter().map(|(user, pw, _)| {
        let body = json!({"username": user, "password": pw});
        let addr = &addr;
        async move { post_json(addr, "/auth/login", None, &body).await }
    }))
    .await;

    let mut tokens = Vec::new();
    for ((user, pw, right), r) in attempts.iter().zip(answers) {
        if *right {
            let v = r.expect(200);
            assert_eq!(v["user_id"], json!(ids[user.as_str()]), "{user}: {v}");
            tokens.push(v["token"].as_str().expect("a token").to_string());
        } else {
            assert_eq!(r.status, 401, "{user} / {pw}: {:?}", r.text());
            assert_error_body(&r.json(), "INVALID_CREDENTIALS");
        }
    }
    assert_eq!(tokens.len(), 2 * names.len());
    for t in &tokens {
        srv.post_json("/chat/retrieve", Some(t), &json!({"after": 0}))
            .await
            .expect(200);
    }

    // The daemon hashes on exactly the one thread asked for, and that
    // thread runs at the lowest priority (SCHED_IDLE, or nice 19).
    #[cfg(target_os = "linux")]
    {
        let hashing = argon2_threads(srv.pid());
        assert_eq!(hashing.len(), 1, "argon2 threads: {hashing:?}");
        let (nice, policy) = hashing[0];
        assert!(policy == 5 || nice == 19, "policy {policy}, nice {nice}");
    }
}

/// (nice, scheduling policy) of each of the daemon's `parlor-argon2-*`
/// threads, from `/proc/PID/task/TID/stat`.
#[cfg(target_os = "linux")]
fn argon2_threads(pid: u32) -> Vec<(i64, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task") {
        let dir = task.expect("a task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("parlor-argon2") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).expect("stat");
        // Fields after the command's closing parenthesis start at the
        // third (state): nice is the 19th, policy the 41st.
        let rest: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
            .split(' ')
            .collect();
        let field = |n: usize| rest[n - 3].parse::<i64>().expect("a number");
        found.push((field(19), field(41)));
    }
    found
}
