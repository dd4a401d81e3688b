//! The one endpoint the built-in web client needs beyond the other
//! dialects: `GET /chat/rooms`, the caller's room list with unread counts,
//! the people those rooms name, and who the caller is. Any client may use
//! it. Translation only: the rules and the bounded count are
//! `core::overview`'s.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;

use super::{caller, Ctx};
use crate::core::overview::{Overview, Person, RoomSummary};
use crate::error::Result;
use crate::model::{RoomKind, User};
use crate::net::http::{self, Resp};

#[derive(Serialize)]
struct Me<'a> {
    id: String,
    username: &'a str,
    display_name: &'a str,
    role: &'static str,
    tenant: &'a str,
    instance: &'a str,
}

#[derive(Serialize)]
struct RoomWire<'a> {
    id: String,
    kind: &'static str,
    name: Option<&'a str>,
    /// The patient whose care-team chat this is (`kind` `"patient"`).
    patient: Option<String>,
    members: Vec<String>,
    last_message_id: Option<u64>,
    /// Unix ms of the newest message, or of the room's creation.
    updated_at: u64,
    last_read: u64,
    unread: usize,
    unread_more: bool,
}

#[derive(Serialize)]
struct PersonWire<'a> {
    username: &'a str,
    display_name: &'a str,
    role: &'static str,
}

#[derive(Serialize)]
struct Reply<'a> {
    me: Me<'a>,
    rooms: Vec<RoomWire<'a>>,
    people: std::collections::BTreeMap<String, PersonWire<'a>>,
}

fn kind(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Dm => "dm",
        RoomKind::Group => "group",
        RoomKind::Open => "open",
        RoomKind::Patient => "patient",
    }
}

fn room(r: &RoomSummary) -> RoomWire<'_> {
    RoomWire {
        id: r.room.id.to_string(),
        kind: kind(r.room.kind),
        name: r.room.name.as_deref(),
        patient: r.room.patient.map(|p| p.to_string()),
        members: r.members.iter().map(|u| u.to_string()).collect(),
        last_message_id: r.last_message.map(|m| m.0),
        updated_at: r.updated_ms,
        last_read: r.last_read.0,
        unread: r.unread,
        unread_more: r.unread_more,
    }
}

fn person(p: &Person) -> PersonWire<'_> {
    PersonWire {
        username: &p.username,
        display_name: &p.display_name,
        role: p.role.as_str(),
    }
}

fn render(user: &User, o: &Overview) -> Resp {
    let reply = Reply {
        me: Me {
            id: user.id.to_string(),
            username: &user.username,
            display_name: &user.display_name,
            role: user.role.as_str(),
            tenant: &user.workspace.tenant,
            instance: &user.workspace.instance,
        },
        rooms: o.rooms.iter().map(room).collect(),
        people: o
            .people
            .iter()
            .map(|(id, p)| (id.to_string(), person(p)))
            .collect(),
    };
    http::json(StatusCode::OK, &reply)
}

/// `GET /chat/rooms` → `{"me","rooms":[…],"people":{…}}`: the caller's
/// rooms, newest activity first, each with its read marker and a bounded
/// count of others' messages after it.
pub async fn rooms(ctx: Ctx, req: Request<Incoming>) -> Result<Resp> {
    let caller = caller(&ctx.core, &req)?;
    let core = ctx.core.clone();
    crate::core::blocking(move || {
        let o = core.overview(&caller.user)?;
        Ok(render(&caller.user, &o))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MsgId, Role, Room, RoomId, UserId, Workspace};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_ids_as_strings_and_kinds_in_lower_case() {
        let user = User {
            id: UserId(2),
            username: "ann".into(),
            display_name: "Ann".into(),
            role: Role::Staff,
            workspace: Workspace::default(),
            password_hash: "secret-hash".into(),
            created_ms: 1,
        };
        let mut people = std::collections::BTreeMap::new();
        people.insert(
            UserId(7),
            Person {
                id: UserId(7),
                username: "pat".into(),
                display_name: "Pat".into(),
                role: Role::Patient,
            },
        );
        let o = Overview {
            rooms: vec![RoomSummary {
                room: Room {
                    id: RoomId(5),
                    kind: RoomKind::Patient,
                    name: None,
                    workspace: Workspace::default(),
                    created_ms: 10,
                    patient: Some(UserId(7)),
                },
                members: vec![UserId(2), UserId(7)],
                last_message: Some(MsgId(40)),
                updated_ms: 99,
                last_read: MsgId(38),
                unread: 2,
                unread_more: false,
            }],
            people,
        };
        let r = render(&user, &o);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "me": {"id": "2", "username": "ann", "display_name": "Ann", "role": "staff",
                       "tenant": "default", "instance": "default"},
                "rooms": [{"id": "5", "kind": "patient", "name": null, "patient": "7",
                           "members": ["2", "7"], "last_message_id": 40, "updated_at": 99,
                           "last_read": 38, "unread": 2, "unread_more": false}],
                "people": {"7": {"username": "pat", "display_name": "Pat", "role": "patient"}}
            })
        );
        assert!(!String::from_utf8_lossy(&body).contains("secret-hash"));
    }
}
