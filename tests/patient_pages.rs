//! The patient dialect's history pages (API.md §5): the default page,
//! walks both ways by token while messages arrive, and tokens that must
//! not work (forged, altered, another patient's) or must keep working
//! (across a restart).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::timeout;

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn history_default_page_is_20_and_an_empty_chat_has_no_tokens() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let base = chat_path(&c.pat, "");
    let empty = page(&addr, &c.pat, &base, false).await;
    assert!(empty.content.is_empty() && empty.next.is_none() && empty.prev.is_none());
    assert_eq!(empty.page_size, 20);
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(eid(&send(
            &addr,
            &c.pat,
            &c.pat,
            "inbound",
            &format!("m{i}"),
        )
        .await));
    }
    let first = page(&addr, &c.nurse, &base, false).await;
    assert_eq!(first.page_size, 20);
    assert_eq!(
        ids(&first),
        sent[5..].iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(first.prev.is_none(), "the first page has no prevPageToken");
    let t = first.next.clone().expect("a nextPageToken");
    let second = page_at(&addr, &c.nurse, &base, &t, false).await;
    assert_eq!(second.page_size, 20, "the token carries the page size");
    assert_eq!(
        ids(&second),
        sent[..5].iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(second.next.is_none(), "the last page has no nextPageToken");
    // The token works for anyone allowed in the chat: the patient too.
    let again = page_at(&addr, &c.pat, &base, &t, false).await;
    assert_eq!(ids(&again), ids(&second));
    // A token is opaque URL-safe base64.
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
        "{t}"
    );
    // An empty pageToken counts as none.
    let p = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken=&pageSize=3"),
        false,
    )
    .await;
    assert_eq!(
        ids(&p),
        sent[22..].iter().rev().copied().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_walk_visits_every_message_once_each_way_while_messages_arrive() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let base = chat_path(&c.pat, "");
    // 250 messages, patient and staff interleaved, posted concurrently.
    let mut sent = Vec::new();
    for chunk in 0..5 {
        let posts = (0..50).map(|i| {
            let n = chunk * 50 + i;
            let (who, way) = if n % 3 == 0 {
                (&c.nurse, "outbound")
            } else {
                (&c.pat, "inbound")
            };
            let (addr, pat) = (addr.clone(), &c.pat);
            async move { eid(&send(&addr, who, pat, way, &format!("msg {n}")).await) }
        });
        sent.extend(futures_util::future::join_all(posts).await);
    }
    sent.sort_unstable();
    assert_eq!(sent.len(), 250);
    // Down from the newest page: exactly the 250, newest first, each
    // once — while messages keep arriving (during both walks).
    let first = page(&addr, &c.nurse, &format!("{base}?pageSize=7"), false).await;
    assert!(first.prev.is_none());
    let stop = Arc::new(AtomicBool::new(false));
    let (posted_tx, mut posted) = tokio::sync::watch::channel(0usize);
    let arrivals = {
        let (stop, addr, pat) = (stop.clone(), addr.clone(), c.pat.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            // Bounded, so that the walk up surely reaches the newest.
            while !stop.load(Ordering::SeqCst) && ids.len() < 300 {
                let m = send(&addr, &pat, &pat, "inbound", &format!("late {}", ids.len())).await;
                ids.push(eid(&m));
                let _ = posted_tx.send(ids.len());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        })
    };
    timeout(WS_TIMEOUT, posted.wait_for(|n| *n > 0))
        .await
        .expect("the first arrival")
        .unwrap();
    let (down, last) = walk_down(&addr, &c.nurse, &base, first, false).await;
    let want: Vec<u64> = sent.iter().rev().copied().collect();
    assert_eq!(
        down, want,
        "the walk down visits each message once, in order"
    );
    assert!(last.next.is_none());
    // Up from the oldest page: every message once, ascending, including
    // arrivals, until the walk reaches the newest.
    let up = walk_up(&addr, &c.pat, &base, last, false).await;
    stop.store(true, Ordering::SeqCst);
    let late = timeout(Duration::from_secs(30), arrivals)
        .await
        .unwrap()
        .unwrap();
    assert!(
        late.len() >= 5,
        "messages arrived during the walk: {}",
        late.len()
    );
    assert!(
        up.windows(2).all(|w| w[0] < w[1]),
        "strictly ascending, no repeats"
    );
    let mut all: Vec<u64> = sent.iter().chain(&late).copied().collect();
    all.sort_unstable();
    // What the walk up saw is exactly a prefix of everything, in order:
    // no message skipped, none seen twice.
    assert!(up.len() >= 250);
    assert_eq!(up[..], all[..up.len()]);
}

// ---------------------------------------------------------------------------
// Tokens that must not work
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn forged_altered_and_cross_patient_tokens_are_invalid_page_token() {
    let c = Clinic::new().await;
    let addr = c.addr();
    for i in 0..5 {
        send(
            &addr,
            &c.pat,
            &c.pat,
            "inbound",
            &format!("secret of pat {i}"),
        )
        .await;
        send(
            &addr,
            &c.pat2,
            &c.pat2,
            "inbound",
            &format!("secret of pat2 {i}"),
        )
        .await;
    }
    let mine = chat_path(&c.pat, "");
    let theirs = chat_path(&c.pat2, "");
    let good = page(&addr, &c.nurse, &format!("{mine}?pageSize=2"), false)
        .await
        .next
        .unwrap();
    let other_chat = page(&addr, &c.nurse, &format!("{theirs}?pageSize=2"), false)
        .await
        .next
        .unwrap();
    let other_search = page(
        &addr,
        &c.nurse,
        &chat_path(&c.pat2, "/search?query=secret&pageSize=2"),
        true,
    )
    .await;
    let mut bad: Vec<String> = vec![
        "garbage".into(),
        "!!!!".into(),
        "eyJ0eXBlIjoiUFJPVklERVIifQ==".into(), // the seed's kind of token
        good[..good.len() - 1].to_string(),    // truncated
        format!("{good}A"),                    // extended
        other_chat.clone(),                    // another patient's chat
        "A".repeat(5000),
    ];
    // Altered: every position changed once.
    for i in (0..good.len()).step_by(3) {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(b).unwrap());
    }
    for t in &bad {
        let r = get_as(
            &addr,
            &format!("{mine}?pageToken={}", enc(t)),
            &c.nurse.token,
        )
        .await;
        r.expect_error(400, "INVALID_PAGE_TOKEN");
        assert!(!r.text().contains("secret"), "no data with a bad token");
    }
    // Another patient's search and find tokens on this patient's URLs.
    let t = other_search.next.unwrap();
    get_as(
        &addr,
        &chat_path(&c.pat, &format!("/search?pageToken={}", enc(&t))),
        &c.nurse.token,
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    let t = other_search.content[0]["meta"]["nextPageToken"]
        .as_str()
        .unwrap();
    for ep in ["/find", ""] {
        get_as(
            &addr,
            &chat_path(&c.pat, &format!("{ep}?pageToken={}", enc(t))),
            &c.nurse.token,
        )
        .await
        .expect_error(400, "INVALID_PAGE_TOKEN");
    }
    // The right token still works, for the patient too.
    page_at(&addr, &c.pat, &mine, &good, false).await;
    // A patient with the other chat's token on the other chat's URL: no
    // access, so 404 before any token is read.
    get_as(
        &addr,
        &format!("{theirs}?pageToken={}", enc(&other_chat)),
        &c.pat.token,
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_tokens_survive_a_restart() {
    let mut c = Clinic::new().await;
    let addr = c.addr();
    for i in 0..3 {
        send(&addr, &c.pat, &c.pat, "inbound", &format!("m{i}")).await;
    }
    let base = chat_path(&c.pat, "");
    let first = page(&addr, &c.pat, &format!("{base}?pageSize=1"), false).await;
    let t = first.next.unwrap();
    let before = page_at(&addr, &c.pat, &base, &t, false).await;
    c.srv.kill9();
    c.srv.start();
    let addr = c.addr();
    let after = page_at(&addr, &c.pat, &base, &t, false).await;
    assert_eq!(after.content, before.content);
}
