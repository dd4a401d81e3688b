//! Patient chats for the bench (API.md §5): `--patient-chats` makes each
//! room of the fleet a patient's care-team chat, so every message the
//! fleet sends is a patient-chat post with its `chat.post` audit record
//! (group rooms write none) — what "W1 with the audit trail on" measures.
//!
//! A care-team chat is the patient plus every staff member and admin of
//! the patient's workspace, so each room gets a workspace of its own
//! (tenant `bench-RUN-K`, instance `main`): member 0 the patient, the
//! others staff. Then the room's audience is exactly its members, as the
//! engine's delivery accounting assumes — and that is checked: the chat's
//! members, as the patient's room list (`GET /chat/rooms`) shows them, must
//! be the room's users. The chat is made on first use, by a staff member's
//! `GET …/chat`; sockets then post to it like to any room (rooms dialect).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::client::Http;
use super::setup::{parallel, Account, Env, Room, User};

/// The instance of every bench workspace.
pub const INSTANCE: &str = "main";

/// The path of a patient's chat (`rest`: `""`, `"/outbound"`, …).
pub fn chat_path(tenant: &str, patient: &User, rest: &str) -> String {
    format!("/{tenant}/{INSTANCE}/patient/{}/chat{rest}", patient.id)
}

/// Users in workspaces of `size` (the last may be smaller), each
/// workspace's first user a patient and the others staff; and each
/// patient's chat, as a room of that workspace's users.
pub async fn fleet(env: &Env, n: usize, size: usize) -> Result<(Vec<User>, Vec<Room>)> {
    let tenant = |k: usize| format!("bench-{}-{k}", env.run_id);
    let users = env
        .users_as("p", n, |i| Account {
            role: if i % size == 0 { "patient" } else { "staff" },
            workspace: Some((tenant(i / size), INSTANCE.to_string())),
        })
        .await?;
    let groups: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(size)
        .map(<[usize]>::to_vec)
        .collect();
    let (users_ref, groups_ref, tenant) = (&users, &groups, &tenant);
    let ids = parallel(env, groups.len(), "patient chats made", |k| async move {
        let members: Vec<&User> = groups_ref[k].iter().map(|&i| &users_ref[i]).collect();
        chat_of(env, &tenant(k), &members).await
    })
    .await?;
    let rooms = ids
        .into_iter()
        .zip(groups)
        .map(|(id, members)| Room { id, members })
        .collect();
    Ok((users, rooms))
}

/// Makes the chat of `members[0]` (a patient; the others its workspace's
/// staff) and answers its room id, once its members are checked to be
/// exactly `members`.
pub async fn chat_of(env: &Env, tenant: &str, members: &[&User]) -> Result<String> {
    let patient = members[0];
    // A staff member opens the chat (the patient alone, if it has none).
    let opener = members.get(1).copied().unwrap_or(patient);
    let mut http = Http::new(&env.target);
    http.get(
        &format!("{}?pageSize=1", chat_path(tenant, patient, "")),
        Some(&opener.token),
    )
    .await?
    .expect(
        200,
        &format!("opening the chat of patient {}", patient.name),
    )?;
    let what = format!("the room list of patient {}", patient.name);
    let list = http
        .get("/chat/rooms", Some(&patient.token))
        .await?
        .expect(200, &what)?;
    let chat = list["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "patient" && r["patient"].as_str() == Some(patient.id.as_str()))
        .with_context(|| format!("{what}: no patient chat in {list}"))?;
    let id = chat["id"]
        .as_str()
        .with_context(|| format!("{what}: a room without an id: {chat}"))?;
    let got: BTreeSet<&str> = chat["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    let want: BTreeSet<&str> = members.iter().map(|u| u.id.as_str()).collect();
    if got != want {
        bail!(
            "the chat of patient {} has members {got:?}, not its workspace's bench users \
             {want:?}: deliveries would not be counted right (was tenant {tenant} used before?)",
            patient.name
        );
    }
    Ok(id.to_string())
}
