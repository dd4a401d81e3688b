//! The patient dialect's search and find (API.md §5): whole-word matching,
//! search pages walked both ways, find around a hit and by date.

mod common;

use std::time::Duration;

use common::*;

async fn search_texts(c: &Clinic, query: &str) -> Vec<String> {
    let path = chat_path(&c.pat, &format!("/search?query={}", enc(query)));
    texts(&page(&c.addr(), &c.pat, &path, true).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn search_matches_whole_words_in_any_case_and_needs_every_word() {
    let c = Clinic::new().await;
    let addr = c.addr();
    for t in [
        "Hello, world!",
        "hello there",
        "say helloworld",
        "WORLD HELLO again",
        "worldly greetings",
        "Grüße aus Köln",
    ] {
        send(&addr, &c.pat, &c.pat, "inbound", t).await;
    }
    send(
        &addr,
        &c.pat2,
        &c.pat2,
        "inbound",
        "hello from another chat",
    )
    .await;
    assert_eq!(
        search_texts(&c, "hello").await,
        ["WORLD HELLO again", "hello there", "Hello, world!"]
    );
    assert_eq!(
        search_texts(&c, "HeLLo").await,
        search_texts(&c, "hello").await
    );
    assert_eq!(
        search_texts(&c, "world hello").await,
        ["WORLD HELLO again", "Hello, world!"]
    );
    assert_eq!(
        search_texts(&c, "hello, WORLD!!").await,
        search_texts(&c, "world hello").await
    );
    assert_eq!(search_texts(&c, "helloworld").await, ["say helloworld"]);
    assert_eq!(search_texts(&c, "KÖLN grüße").await, ["Grüße aus Köln"]);
    for none in [
        "goodbye",
        "hello goodbye",
        "worl",
        "from",
        &"x".repeat(100),
        &format!("hello {}", "y".repeat(100)),
    ] {
        let path = chat_path(&c.pat, &format!("/search?query={}", enc(none)));
        let env = page(&addr, &c.pat, &path, true).await;
        assert!(env.content.is_empty(), "{none}: {:?}", texts(&env));
        assert!(env.next.is_none() && env.prev.is_none());
        assert_eq!(env.page_size, 20);
    }
    // `+` in a query string is a space.
    let path = chat_path(&c.pat, "/search?query=world+hello");
    assert_eq!(texts(&page(&addr, &c.nurse, &path, true).await).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_pages_walk_both_ways_and_a_token_carries_its_query() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut hits = Vec::new();
    for i in 0..40 {
        let text = if i % 3 == 0 {
            format!("Needle number {i}")
        } else {
            format!("hay {i}")
        };
        let m = send(&addr, &c.pat, &c.pat, "inbound", &text).await;
        if i % 3 == 0 {
            hits.push(eid(&m));
        }
    }
    let endpoint = chat_path(&c.pat, "/search");
    let first = page(
        &addr,
        &c.nurse,
        &format!("{endpoint}?query=NEEDLE&pageSize=4"),
        true,
    )
    .await;
    assert!(first.prev.is_none());
    assert_eq!(first.page_size, 4);
    let t = first.next.clone().unwrap();
    // With the token the query may be left out, or repeated (any case).
    let a = page_at(&addr, &c.nurse, &endpoint, &t, true).await;
    let b = page(
        &addr,
        &c.nurse,
        &format!("{endpoint}?pageToken={}&query=needle", enc(&t)),
        true,
    )
    .await;
    assert_eq!(ids(&a), ids(&b));
    get_as(
        &addr,
        &format!("{endpoint}?pageToken={}&query=hay", enc(&t)),
        &c.nurse.token,
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    let (down, last) = walk_down(&addr, &c.nurse, &endpoint, first, true).await;
    let want: Vec<u64> = hits.iter().rev().copied().collect();
    assert_eq!(down, want);
    assert!(last.next.is_none());
    let up = walk_up(&addr, &c.nurse, &endpoint, last, true).await;
    assert_eq!(up, hits);
}

#[tokio::test(flavor = "multi_thread")]
async fn find_from_a_hit_opens_the_page_around_it_hit_included() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut all = Vec::new();
    for i in 0..30 {
        let text = if i == 15 {
            "the unique zebra".to_string()
        } else {
            format!("plain {i}")
        };
        all.push(eid(&send(&addr, &c.pat, &c.pat, "inbound", &text).await));
    }
    let s = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=zebra&pageSize=5&contentPageSize=5"),
        true,
    )
    .await;
    assert_eq!(ids(&s), [all[15]]);
    let hit = &s.content[0]["meta"];
    let find = chat_path(&c.pat, "/find");
    // Older: the hit, then the four before it.
    let t = hit["nextPageToken"].as_str().unwrap();
    let older = page_at(&addr, &c.pat, &find, t, true).await;
    assert_eq!(older.page_size, 5);
    assert_eq!(ids(&older), [all[15], all[14], all[13], all[12], all[11]]);
    // Newer: the four after it, then the hit (still newest first).
    let t = hit["prevPageToken"].as_str().unwrap();
    let newer = page_at(&addr, &c.pat, &find, t, true).await;
    assert_eq!(ids(&newer), [all[19], all[18], all[17], all[16], all[15]]);
    // The find pages lead on, with find tokens, without repeating.
    let on = page_at(&addr, &c.pat, &find, older.next.as_ref().unwrap(), true).await;
    assert_eq!(ids(&on), [all[10], all[9], all[8], all[7], all[6]]);
    let back = page_at(&addr, &c.pat, &find, older.prev.as_ref().unwrap(), true).await;
    assert_eq!(ids(&back), [all[20], all[19], all[18], all[17], all[16]]);
    let (down, _) = walk_down(&addr, &c.pat, &find, older, true).await;
    assert_eq!(down, all[..16].iter().rev().copied().collect::<Vec<_>>());
    let up = walk_up(&addr, &c.pat, &find, newer, true).await;
    assert_eq!(up, all[15..]);
    // Each item of a find page opens its own surroundings too.
    let item = &on.content[2]["meta"]["nextPageToken"];
    let around = page_at(&addr, &c.pat, &find, item.as_str().unwrap(), true).await;
    assert_eq!(ids(&around)[0], all[8]);
    // Find tokens are for find (and history, API.md §5a: tests/welkin.rs),
    // not for search; search tokens are not for find.
    let t = hit["nextPageToken"].as_str().unwrap();
    get_as(
        &addr,
        &chat_path(&c.pat, &format!("/search?pageToken={}", enc(t))),
        &c.pat.token,
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    let search_token = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=plain&pageSize=2"),
        true,
    )
    .await
    .next
    .unwrap();
    get_as(
        &addr,
        &format!("{find}?pageToken={}", enc(&search_token)),
        &c.pat.token,
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    // pageSize or a date together with a token → 400.
    for extra in ["&pageSize=3", "&date=2021-03-05T16:09:52.655Z"] {
        get_as(
            &addr,
            &format!("{find}?pageToken={}{extra}", enc(t)),
            &c.pat.token,
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn find_by_date_includes_a_message_at_that_exact_millisecond_both_ways() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut msgs = Vec::new();
    for i in 0..9 {
        msgs.push(send(&addr, &c.pat, &c.pat, "inbound", &format!("at {i}")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let find = chat_path(&c.pat, "/find");
    let at = msgs[4]["createdAt"].as_str().unwrap();
    let id = |i: usize| eid(&msgs[i]);
    let before = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=true&pageSize=3", enc(at)),
        true,
    )
    .await;
    assert_eq!(ids(&before), [id(4), id(3), id(2)]);
    assert_eq!(before.page_size, 3);
    let after = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=false&pageSize=3", enc(at)),
        true,
    )
    .await;
    assert_eq!(ids(&after), [id(6), id(5), id(4)]);
    // `before` defaults to true, pageSize to 20.
    let dflt = page(&addr, &c.pat, &format!("{find}?date={}", enc(at)), true).await;
    assert_eq!(ids(&dflt), (0..=4).rev().map(id).collect::<Vec<_>>());
    assert_eq!(dflt.page_size, 20);
    // One millisecond off moves the border past the message.
    let ms_later = {
        let (head, tail) = at.split_at(20);
        let ms: u32 = tail[..3].parse().unwrap();
        // Not near a second boundary in practice; fall back if it is.
        if ms < 999 {
            Some(format!("{head}{:03}Z", ms + 1))
        } else {
            None
        }
    };
    if let Some(later) = ms_later {
        let p = page(
            &addr,
            &c.pat,
            &format!("{find}?date={}&before=false&pageSize=3", enc(&later)),
            true,
        )
        .await;
        assert_eq!(ids(&p), [id(7), id(6), id(5)]);
    }
    // The same instant with an offset, and with extra fraction digits.
    let day = &at[..10];
    let t = &at[11..23];
    let (h, rest) = t.split_at(2);
    let h: u32 = h.parse().unwrap();
    if h < 22 {
        let shifted = format!("{day}T{:02}{rest}+02:00", h + 2);
        let p = page(
            &addr,
            &c.pat,
            &format!("{find}?date={}&before=true&pageSize=3", enc(&shifted)),
            true,
        )
        .await;
        assert_eq!(ids(&p), [id(4), id(3), id(2)]);
    }
    let precise = format!("{}999Z", &at[..23]);
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=true&pageSize=3", enc(&precise)),
        true,
    )
    .await;
    assert_eq!(ids(&p)[0], id(4));
    // Before everything, after everything.
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2000-01-01T00:00:00.000Z&before=true"),
        true,
    )
    .await;
    assert!(p.content.is_empty() && p.next.is_none());
    assert!(p.prev.is_some(), "newer messages exist");
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2000-01-01T00:00:00.000Z&before=false&pageSize=2"),
        true,
    )
    .await;
    assert_eq!(ids(&p), [id(1), id(0)]);
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2999-01-01T00:00:00.000Z&before=false"),
        true,
    )
    .await;
    assert!(p.content.is_empty() && p.prev.is_none());
    // A find page's tokens lead on like history's.
    let more = page_at(&addr, &c.pat, &find, before.next.as_ref().unwrap(), true).await;
    assert_eq!(ids(&more), [id(1), id(0)]);
    assert!(more.next.is_none());
}
