//! The worker's tests: a loopback receiver, a real core.

use super::*;
use crate::core::limits::Limits;
use crate::core::Admin;
use crate::model::{Role, User, Webhook};
use crate::webhooks::{dead, pending};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

type Seen = Arc<Mutex<Vec<(String, u16)>>>;

/// A loopback receiver: answers each POST with `answer(text)` and
/// records `(message text, status)` in arrival order.
async fn receiver(answer: Arc<dyn Fn(&str) -> u16 + Send + Sync>) -> (String, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (answer, log) = (answer.clone(), log.clone());
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let text = v["message"].as_str().unwrap().to_owned();
                        let status = answer(&text);
                        log.lock().unwrap().push((text, status));
                        let mut r = Response::new(Full::new(bytes::Bytes::new()));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

/// The staff's workspace's webhook: a receiver that fails the message
/// `a1` until the flag is set, and answers the rest.
async fn failing_a1_until_released(core: &Core, staff: &User) -> (Arc<AtomicBool>, Seen) {
    let release = Arc::new(AtomicBool::new(false));
    let gate = release.clone();
    let answer = Arc::new(move |text: &str| {
        if text == "a1" && !gate.load(Ordering::Acquire) {
            500
        } else {
            204
        }
    });
    let (url, seen) = receiver(answer).await;
    let hook = Webhook {
        url,
        api_key: "k".into(),
        api_secret: "s".into(),
    };
    core.set_webhook(&Admin::operator(), staff.workspace.clone(), hook)
        .await
        .unwrap();
    (release, seen)
}

async fn user(core: &Core, name: &str, role: Role) -> User {
    crate::core::testing::user(core, name, role, "a").await
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patients_later_delivery_waits_for_the_earlier_one_and_other_patients_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        msg_burst: 1000,
        msg_rate: 1000,
        ..Limits::default()
    };
    let core = Core::open(dir.path(), limits).unwrap();
    let staff = user(&core, "nurse", Role::Staff).await;
    let (pa, pb) = (
        user(&core, "pa", Role::Patient).await,
        user(&core, "pb", Role::Patient).await,
    );
    let (release, seen) = failing_a1_until_released(&core, &staff).await;
    let monitor = Monitor::new();
    let settings = Settings {
        max_backoff: Duration::from_secs(1),
        ..Settings::new("http://parlor.test")
    };
    let worker = Worker::start(core.clone(), settings, monitor.clone());
    let chat = |p: &User| {
        let id = p.id.to_string();
        let core = core.clone();
        let staff = staff.clone();
        async move { core.patient_chat(&staff, "a", "main", &id).await.unwrap() }
    };
    let (ca, cb) = (chat(&pa).await, chat(&pb).await);
    for (c, t) in [(&ca, "a1"), (&ca, "a2"), (&cb, "b1")] {
        core.outbound(&staff, c, t.into()).await.unwrap();
    }
    let accepted = |t: &str| seen.lock().unwrap().iter().any(|(x, s)| x == t && *s < 300);
    // b1 goes through while a1 keeps failing; a2 is not tried meanwhile.
    until("b1 accepted and a1 failed twice", || {
        accepted("b1")
            && seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(x, _)| x == "a1")
                .count()
                >= 2
    })
    .await;
    assert!(!seen.lock().unwrap().iter().any(|(x, _)| x == "a2"));
    let list = pending(&core, &Admin::operator(), Some(&monitor), None, 10).unwrap();
    let states: Vec<_> = list.pending.iter().map(|p| p.state.unwrap()).collect();
    assert!(
        matches!(states[..], ["retrying" | "sending", "queued"]),
        "{states:?}"
    );
    let a1 = &list.pending[0];
    assert!(a1.failed_attempts.unwrap() >= 1);
    assert!(
        a1.last_error.as_deref().unwrap_or("").contains("500"),
        "{a1:?}"
    );
    // Released: a1 then a2, in that order, and the outbox empties.
    release.store(true, Ordering::Release);
    until("a1 and a2 accepted", || accepted("a1") && accepted("a2")).await;
    let order: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| *s < 300)
        .map(|(x, _)| x.clone())
        .collect();
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
    assert!(pos("a1") < pos("a2"), "{order:?}");
    until("an empty outbox", || {
        core.pending_deliveries(MsgId(0), 10).unwrap().is_empty()
    })
    .await;
    assert!(pending(&core, &Admin::operator(), Some(&monitor), None, 10)
        .unwrap()
        .pending
        .is_empty());
    worker.stop().await;
    core.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_delivery_no_longer_holds_back_its_lane_and_a_retry_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::open(dir.path(), Limits::default()).unwrap();
    let staff = user(&core, "nurse", Role::Staff).await;
    let pa = user(&core, "pa", Role::Patient).await;
    let (release, seen) = failing_a1_until_released(&core, &staff).await;
    let monitor = Monitor::new();
    let settings = Settings {
        max_backoff: Duration::from_secs(1),
        give_up: Duration::from_millis(300),
        ..Settings::new("http://parlor.test")
    };
    let worker = Worker::start(core.clone(), settings, monitor.clone());
    let ca = core
        .patient_chat(&staff, "a", "main", &pa.id.to_string())
        .await
        .unwrap();
    let a1 = core.outbound(&staff, &ca, "a1".into()).await.unwrap();
    core.outbound(&staff, &ca, "a2".into()).await.unwrap();
    let accepted = |t: &str| seen.lock().unwrap().iter().any(|(x, s)| x == t && *s < 300);
    // a1 fails until it is old enough to be given up; then a2 goes.
    until("a2 accepted", || accepted("a2")).await;
    assert!(!accepted("a1"));
    let list = dead(&core, &Admin::operator(), None, 10).unwrap();
    assert_eq!(list.dead.len(), 1, "{list:?}");
    let d = &list.dead[0];
    assert_eq!(d.external_id, external_id(a1.id));
    assert!(d.failed_attempts >= 1, "{d:?}");
    assert!(d.last_error.contains("500"), "{d:?}");
    until("an empty outbox", || {
        core.pending_deliveries(MsgId(0), 10).unwrap().is_empty()
    })
    .await;
    assert_eq!(core.metrics.webhook_dead.load(Ordering::Relaxed), 1);

    // The receiver is fixed; the operator retries: a1 is sent again.
    release.store(true, Ordering::Release);
    let moved = core.retry_dead(None).await.unwrap();
    assert_eq!(moved, [(a1.id, pa.id)]);
    monitor.requeue(&moved);
    until("a1 accepted", || accepted("a1")).await;
    until("an empty outbox", || {
        core.pending_deliveries(MsgId(0), 10).unwrap().is_empty()
    })
    .await;
    assert!(dead(&core, &Admin::operator(), None, 10)
        .unwrap()
        .dead
        .is_empty());
    worker.stop().await;
    core.shutdown();
}

#[tokio::test]
async fn a_requeued_delivery_goes_back_by_id_but_never_ahead_of_one_being_sent() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::open(dir.path(), Limits::default()).unwrap();
    let mut run = Run::new(core.clone(), Settings::new("http://x"), Monitor::new());
    let (p, q) = (UserId(1), UserId(2));
    run.cursor = MsgId(100);
    run.lanes.insert(
        p,
        Lane {
            queue: [5, 9].map(MsgId).into(),
            busy: true,
        },
    );
    run.tracked = 2;
    let m = |i: u64, u: UserId| (MsgId(i), u);
    // 9 is already in its lane; 150 is past the cursor (`load` reads it).
    run.requeue(vec![m(3, p), m(7, p), m(9, p), m(150, p), m(4, q)]);
    let ids = |l: &Lane| l.queue.iter().map(|m| m.0).collect::<Vec<_>>();
    assert_eq!(ids(&run.lanes[&p]), [5, 3, 7, 9]);
    assert_eq!(ids(&run.lanes[&q]), [4]);
    assert_eq!(run.tracked, 5);
    // The new lane is due; the busy one is not queued twice.
    let due: Vec<UserId> = run.due.iter().map(|Reverse((_, u))| *u).collect();
    assert_eq!(due, [q]);
    // An idle lane takes an older delivery at its head.
    run.lanes.get_mut(&p).unwrap().busy = false;
    run.requeue(vec![m(1, p)]);
    assert_eq!(ids(&run.lanes[&p]), [1, 5, 3, 7, 9]);
    drop(run);
    core.shutdown();
}
