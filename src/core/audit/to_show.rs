//! [`ToShow`]: messages read for an answer, held until the `chat.read`
//! record of every patient chat among them is durable (`Core::show`).

use std::collections::BTreeMap;

use super::{Actor, Entry, Kind};
use crate::core::Core;
use crate::error::Result;
use crate::model::{MsgId, Room, RoomId, RoomKind, UserId, Workspace};

/// Messages read for an answer, held until the read of every patient chat
/// among them is recorded: the only way an answer gets them is
/// [`Core::show`]. Core's message reads return one.
#[must_use = "messages read for an answer are shown only through `Core::show`"]
pub struct ToShow<T> {
    value: T,
    reader: Option<UserId>,
    chats: BTreeMap<RoomId, ChatRead>,
}

/// One patient chat's messages shown in an answer.
#[derive(Clone, Debug)]
struct ChatRead {
    patient: UserId,
    workspace: Workspace,
    count: u64,
    first: MsgId,
    last: MsgId,
}

impl<T> ToShow<T> {
    pub(crate) fn new(value: T, reader: UserId) -> ToShow<T> {
        ToShow {
            value,
            reader: Some(reader),
            chats: BTreeMap::new(),
        }
    }

    /// Notes messages of `room` shown; only a patient chat's are recorded.
    pub(crate) fn noting(mut self, room: &Room, shown: impl IntoIterator<Item = MsgId>) -> Self {
        if let (RoomKind::Patient, Some(patient)) = (room.kind, room.patient) {
            self.note(room.id, patient, &room.workspace, shown);
        }
        self
    }

    /// Notes messages shown of the patient chat `room` of `patient`.
    pub(crate) fn note(
        &mut self,
        room: RoomId,
        patient: UserId,
        workspace: &Workspace,
        shown: impl IntoIterator<Item = MsgId>,
    ) {
        for id in shown {
            let c = self.chats.entry(room).or_insert_with(|| ChatRead {
                patient,
                workspace: workspace.clone(),
                count: 0,
                first: id,
                last: id,
            });
            c.count += 1;
            c.first = c.first.min(id);
            c.last = c.last.max(id);
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ToShow<U> {
        ToShow {
            value: f(self.value),
            reader: self.reader,
            chats: self.chats,
        }
    }

    pub fn try_map<U, E>(
        self,
        f: impl FnOnce(T) -> std::result::Result<U, E>,
    ) -> std::result::Result<ToShow<U>, E> {
        Ok(ToShow {
            value: f(self.value)?,
            reader: self.reader,
            chats: self.chats,
        })
    }

    /// Several reads of one answer as one.
    pub fn join(all: Vec<ToShow<T>>) -> ToShow<Vec<T>> {
        let mut out = ToShow {
            value: Vec::with_capacity(all.len()),
            reader: None,
            chats: BTreeMap::new(),
        };
        for s in all {
            out.reader = out.reader.or(s.reader);
            for (room, c) in s.chats {
                match out.chats.entry(room) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(c);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        let m = o.get_mut();
                        m.count += c.count;
                        m.first = m.first.min(c.first);
                        m.last = m.last.max(c.last);
                    }
                }
            }
            out.value.push(s.value);
        }
        out
    }

    /// The `chat.read` records this read makes: one per patient chat.
    fn entries(&self) -> Vec<Entry> {
        let Some(reader) = self.reader else {
            return Vec::new();
        };
        self.chats
            .iter()
            .map(|(room, c)| {
                Entry::new(Kind::ChatRead, Actor::User(reader))
                    .workspace(&c.workspace)
                    .patient(c.patient)
                    .detail("room", room.to_string())
                    .detail("count", c.count)
                    .detail("first", c.first.to_string())
                    .detail("last", c.last.to_string())
            })
            .collect()
    }
}

impl Core {
    /// What an answer may show, once the `chat.read` record of every
    /// patient chat it shows messages of is durable.
    pub async fn show<T>(&self, read: ToShow<T>) -> Result<T> {
        self.record(read.entries()).await?;
        Ok(read.value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Head;
    use super::*;

    #[test]
    fn to_show_counts_patient_chats_only_and_joins_reads() {
        let ws = Workspace::default();
        let room = |id, kind, patient| Room {
            id: RoomId(id),
            kind,
            name: None,
            workspace: ws.clone(),
            created_ms: 0,
            patient,
        };
        let a = ToShow::new((), UserId(1)).noting(
            &room(1, RoomKind::Patient, Some(UserId(5))),
            [MsgId(7), MsgId(3)],
        );
        let b = ToShow::new((), UserId(1))
            .noting(&room(2, RoomKind::Dm, None), [MsgId(4)])
            .noting(&room(1, RoomKind::Patient, Some(UserId(5))), [MsgId(9)]);
        let none = ToShow::new((), UserId(1)).noting(&room(3, RoomKind::Group, None), [MsgId(1)]);
        assert!(none.entries().is_empty());
        let mut joined = ToShow::join(vec![a, b]);
        joined.note(RoomId(6), UserId(8), &ws, []);
        let e = joined.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].patient, Some(UserId(5)));
        assert_eq!(e[0].detail["count"], 3);
        let (_, sealed) = Head::default().seal(0, "1".into(), e[0].clone());
        assert!(
            sealed.json.contains(r#""first":"3","last":"9""#),
            "{}",
            sealed.json
        );
    }
}
