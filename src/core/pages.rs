//! Pages of a patient chat (API.md §5): its history and its search hits,
//! newest first, bordered by message ids rather than offsets, so a walk
//! visits every message once even while new ones arrive; where the pages
//! beyond a page start; the border nearest a time (`find?date=`); and the
//! key page tokens are signed with. The page-token wire format is the
//! patient dialect's (`dialects::patient::tokens`). Each page is handed
//! out as a `ToShow`, so its read is recorded before it is shown.

use super::audit::ToShow;
use super::patients::PatientChat;
use super::Core;
use crate::error::Result;
use crate::model::{Message, MsgId};

/// Where a page starts. Pages are newest first; ids, not offsets, so a walk
/// visits every message once even while new ones arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    Newest,
    /// Messages with ids below this one (exclusive)…
    Below(MsgId),
    /// …or at or below it (a hit opened with its own `nextPageToken`).
    AtOrBelow(MsgId),
    /// Messages with ids above this one (exclusive)…
    Above(MsgId),
    /// …or at or above it.
    AtOrAbove(MsgId),
}

/// A page, newest first, and whether there is more on either side.
#[derive(Clone, Debug)]
pub struct Page {
    pub messages: Vec<Message>,
    pub older: bool,
    pub newer: bool,
}

pub const MAX_PAGE: usize = 100;

impl Page {
    /// Where the pages beyond this one start: older (`Below`) and newer
    /// (`Above`) than its messages — or, for an empty page, than the border
    /// it was read from.
    pub fn cuts(&self, border: Border) -> (Border, Border) {
        if let (Some(oldest), Some(newest)) = (self.messages.last(), self.messages.first()) {
            return (Border::Below(oldest.id), Border::Above(newest.id));
        }
        let (below, above) = match border {
            Border::Newest => (u64::MAX, u64::MAX),
            Border::Below(x) | Border::AtOrAbove(x) => (x.0, x.0.saturating_sub(1)),
            Border::AtOrBelow(x) | Border::Above(x) => (x.0.saturating_add(1), x.0),
        };
        (Border::Below(MsgId(below)), Border::Above(MsgId(above)))
    }
}

impl Core {
    /// A page of the chat's history, newest first, from `border`, to show
    /// once its read is recorded (`Core::show`). Archived messages are
    /// skipped unless `include_archived`.
    pub fn history_page(
        &self,
        chat: &PatientChat,
        border: Border,
        size: usize,
        include_archived: bool,
    ) -> Result<ToShow<Page>> {
        Ok(shown(
            chat,
            self.page(chat, border, size, include_archived)?,
        ))
    }

    fn page(
        &self,
        chat: &PatientChat,
        border: Border,
        size: usize,
        include_archived: bool,
    ) -> Result<Page> {
        let size = size.clamp(1, MAX_PAGE);
        let visible = self.commit.visible();
        let keep = |m: &std::result::Result<Message, crate::store::StoreError>| {
            m.as_ref().map_or(true, |m| include_archived || !m.archived)
        };
        let room = chat.room;
        let (mut messages, more, walking_down) = match border {
            Border::Newest | Border::Below(_) | Border::AtOrBelow(_) => {
                let upper = match border {
                    Border::Below(x) => MsgId(x.0.saturating_sub(1)),
                    Border::AtOrBelow(x) => x,
                    _ => visible,
                }
                .min(visible);
                let mut v: Vec<Message> = self
                    .store
                    .room_messages(room, MsgId(0), upper)
                    .rev()
                    .filter(keep)
                    .take(size + 1)
                    .collect::<std::result::Result<_, _>>()?;
                let more = v.len() > size;
                v.truncate(size);
                (v, more, true)
            }
            Border::Above(x) | Border::AtOrAbove(x) => {
                let lower = if border == Border::Above(x) {
                    x
                } else {
                    MsgId(x.0.saturating_sub(1))
                };
                let mut v: Vec<Message> = self
                    .store
                    .room_messages(room, lower, visible)
                    .filter(keep)
                    .take(size + 1)
                    .collect::<std::result::Result<_, _>>()?;
                let more = v.len() > size;
                v.truncate(size);
                v.reverse();
                (v, more, false)
            }
        };
        // The other side: is there anything beyond the page's far edge?
        let beyond = |newer: bool, edge: MsgId| -> Result<bool> {
            let mut scan: Box<dyn Iterator<Item = _>> = if newer {
                Box::new(self.store.room_messages(room, edge, visible))
            } else {
                Box::new(
                    self.store
                        .room_messages(room, MsgId(0), MsgId(edge.0.saturating_sub(1)))
                        .rev(),
                )
            };
            Ok(scan.find(|m| keep(m)).transpose()?.is_some())
        };
        let (older, newer) = if walking_down {
            let top = match (messages.first(), border) {
                (Some(m), _) => m.id,
                (None, Border::Below(x)) => MsgId(x.0.saturating_sub(1)),
                (None, Border::AtOrBelow(x)) => x,
                (None, _) => visible,
            };
            (more, border != Border::Newest && beyond(true, top)?)
        } else {
            let bottom = match (messages.last(), border) {
                (Some(m), _) => m.id,
                (None, Border::Above(x)) => MsgId(x.0 + 1),
                (None, _) => border_id(border),
            };
            (beyond(false, bottom)?, more)
        };
        messages.shrink_to_fit();
        Ok(Page {
            messages,
            older,
            newer,
        })
    }

    /// A page of search hits from `border`, newest first, shaped like a
    /// history page, to show once its read is recorded (`Core::show`).
    pub fn search_page(
        &self,
        chat: &PatientChat,
        words: &[String],
        border: Border,
        size: usize,
    ) -> Result<ToShow<Page>> {
        const ALL: MsgId = MsgId(u64::MAX);
        let size = size.clamp(1, MAX_PAGE);
        let down = |below: MsgId, first: bool| -> Result<Page> {
            let mut messages = self.search_chat(chat, words, (MsgId(0), below), size + 1, false)?;
            let older = messages.len() > size;
            messages.truncate(size);
            let top = messages
                .first()
                .map_or(MsgId(below.0.saturating_sub(1)), |m| m.id);
            let newer = !first
                && !self
                    .search_chat(chat, words, (top, ALL), 1, true)?
                    .is_empty();
            Ok(Page {
                messages,
                older,
                newer,
            })
        };
        let up = |after: MsgId| -> Result<Page> {
            let mut messages = self.search_chat(chat, words, (after, ALL), size + 1, true)?;
            let newer = messages.len() > size;
            messages.truncate(size);
            messages.reverse();
            let bottom = messages
                .last()
                .map_or(MsgId(after.0.saturating_add(1)), |m| m.id);
            let older = !self
                .search_chat(chat, words, (MsgId(0), bottom), 1, false)?
                .is_empty();
            Ok(Page {
                messages,
                older,
                newer,
            })
        };
        let page = match border {
            Border::Newest => down(ALL, true),
            Border::Below(x) => down(x, false),
            Border::AtOrBelow(x) => down(MsgId(x.0.saturating_add(1)), false),
            Border::Above(x) => up(x),
            Border::AtOrAbove(x) => up(MsgId(x.0.saturating_sub(1))),
        }?;
        Ok(shown(chat, page))
    }

    /// Search hits of the chat, `after < id < below`, newest first (or the
    /// `limit` nearest above `after`, with `ascending`), archived excluded.
    pub(crate) fn search_chat(
        &self,
        chat: &PatientChat,
        query: &[String],
        range: (MsgId, MsgId),
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<Message>> {
        // A word too long to be indexed is in no message's postings: the
        // query matches nothing (rather than matching without that word).
        if query.iter().any(|w| w.len() > crate::store::keys::MAX_WORD) {
            return Ok(Vec::new());
        }
        let below = range.1.min(MsgId(self.commit.visible().0 + 1));
        let ids = self
            .store
            .search(chat.room, query, (range.0, below), limit, ascending)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.store.message(id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The border for `find?date=`: the newest message at or before `ms`
    /// (`before`), or the oldest at or after it.
    pub fn border_at(&self, ms: u64, before: bool) -> Result<Border> {
        let visible = self.commit.visible();
        Ok(if before {
            let first_after = self.store.first_id_at(ms.saturating_add(1), visible)?;
            Border::AtOrBelow(MsgId(first_after.0 - 1))
        } else {
            Border::AtOrAbove(self.store.first_id_at(ms, visible)?)
        })
    }

    /// The key that authenticates page tokens.
    pub fn page_token_key(&self) -> Result<[u8; 32]> {
        Ok(self.store.page_token_key()?)
    }
}

/// A page of `chat`, held until its read is recorded.
fn shown(chat: &PatientChat, page: Page) -> ToShow<Page> {
    let ids: Vec<MsgId> = page.messages.iter().map(|m| m.id).collect();
    let mut read = ToShow::new(page, chat.reader);
    read.note(chat.room, chat.patient.id, &chat.patient.workspace, ids);
    read
}

fn border_id(b: Border) -> MsgId {
    match b {
        Border::Newest => MsgId(u64::MAX),
        Border::Below(x) | Border::AtOrBelow(x) | Border::Above(x) | Border::AtOrAbove(x) => x,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::testing::{clinic_and_chat, Clinic};
    use crate::model::{RoomId, UserId};

    /// A history page, shown (its read recorded).
    pub(crate) async fn page(
        c: &Clinic,
        ch: &PatientChat,
        border: Border,
        size: usize,
        archived: bool,
    ) -> Page {
        let read = c.core.history_page(ch, border, size, archived).unwrap();
        c.core.show(read).await.unwrap()
    }

    pub(crate) fn ids(p: &Page) -> Vec<u64> {
        p.messages.iter().map(|m| m.id.0).collect()
    }

    /// `n` messages from the patient, `m0` to `m{n-1}`, `gap_ms` apart.
    async fn sent(c: &Clinic, ch: &PatientChat, n: usize, gap_ms: u64) -> Vec<Message> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(c.core.inbound(&c.pat, ch, format!("m{i}")).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(gap_ms)).await;
        }
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pages_walk_both_ways_once_each_while_messages_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let all: Vec<u64> = sent(&c, &ch, 25, 0).await.iter().map(|m| m.id.0).collect();
        // Down (older) from the newest, with arrivals between pages.
        let mut seen = Vec::new();
        let mut page = page(&c, &ch, Border::Newest, 7, false).await;
        assert!(!page.newer && page.older);
        loop {
            seen.extend(ids(&page));
            c.core.inbound(&c.pat, &ch, "late".into()).await.unwrap();
            if !page.older {
                break;
            }
            let last = page.messages.last().unwrap().id;
            page = self::page(&c, &ch, Border::Below(last), 7, false).await;
            assert!(page.newer);
        }
        let mut want = all.clone();
        want.reverse();
        assert_eq!(seen, want);
        // Up (newer) from the oldest: every message once, arrivals included.
        let oldest = MsgId(all[0]);
        let mut up = Vec::new();
        let mut page = self::page(&c, &ch, Border::AtOrAbove(oldest), 6, false).await;
        assert!(!page.older);
        loop {
            let mut p = ids(&page);
            p.reverse();
            up.extend(p);
            if !page.newer {
                break;
            }
            let first = page.messages.first().unwrap().id;
            page = self::page(&c, &ch, Border::Above(first), 6, false).await;
        }
        assert_eq!(up.len(), 25 + 4);
        assert!(up.windows(2).all(|w| w[0] < w[1]));
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn border_at_a_time_includes_an_exact_match_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let ms = sent(&c, &ch, 3, 3).await;
        let at = ms[1].at_ms;
        assert_eq!(
            c.core.border_at(at, true).unwrap(),
            Border::AtOrBelow(ms[1].id)
        );
        assert_eq!(
            c.core.border_at(at, false).unwrap(),
            Border::AtOrAbove(ms[1].id)
        );
        assert_eq!(
            c.core.border_at(at + 1, false).unwrap(),
            Border::AtOrAbove(ms[2].id)
        );
        c.core.shutdown();
    }

    fn msg(id: u64) -> Message {
        Message {
            id: MsgId(id),
            room: RoomId(1),
            sender: UserId(1),
            text: "x".into(),
            at_ms: 0,
            author: None,
            is_read: false,
            archived: false,
        }
    }

    #[test]
    fn cuts_follow_the_page_or_else_its_border() {
        let page = |ids: &[u64]| Page {
            messages: ids.iter().map(|&i| msg(i)).collect(),
            older: true,
            newer: true,
        };
        let b = |x| MsgId(x);
        assert_eq!(
            page(&[9, 7, 4]).cuts(Border::Below(b(10))),
            (Border::Below(b(4)), Border::Above(b(9)))
        );
        let empty = page(&[]);
        for (border, below, above) in [
            (Border::Below(b(5)), 5, 4),
            (Border::AtOrBelow(b(5)), 6, 5),
            (Border::Above(b(5)), 6, 5),
            (Border::AtOrAbove(b(5)), 5, 4),
        ] {
            let cuts = (Border::Below(b(below)), Border::Above(b(above)));
            assert_eq!(empty.cuts(border), cuts, "{border:?}");
        }
    }
}
