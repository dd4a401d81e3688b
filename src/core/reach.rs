//! Who a user can reach (API.md §8, last item): a patient reaches only
//! their care team — the staff and admins of their own workspace — and
//! never another patient. Every operation that takes a user or an open
//! chat named by a client asks here; no dialect decides it.
//!
//! - [`Core::reachable_user`]: a user the caller may open a chat with
//!   (`create_dm`, actions' `create_chat`, the web client's "DM by
//!   number"). Anyone else looks exactly like a user that does not exist,
//!   so a patient cannot learn from the answer who else is a patient.
//! - [`may_use_open_rooms`]: open chats (typed's `createEmptyChat`,
//!   `joinChat`, `getChatDetails`) are a workspace's staff room: anyone
//!   of the workspace may find and join one, so they are closed to
//!   patients (`FORBIDDEN`).
//!
//! Staff and admins reach everyone visible to them, patients included;
//! a chat they make with several patients is their choice.

use super::Core;
use crate::error::{Error, Result};
use crate::model::{Role, User, UserId};

impl Core {
    /// A user `caller` may open a chat with: visible to them (see
    /// [`Core::visible_user`]) and, for a patient, themself or staff or an
    /// admin. Anything else is the very `NOT_FOUND` of a missing user.
    pub fn reachable_user(&self, caller: &User, id: UserId) -> Result<User> {
        let user = self.visible_user(caller, id)?;
        if reaches(caller, &user) {
            Ok(user)
        } else {
            Err(super::accounts::no_such_user())
        }
    }
}

/// The rule itself, for two users of one workspace.
fn reaches(caller: &User, other: &User) -> bool {
    caller.role != Role::Patient || other.role != Role::Patient || caller.id == other.id
}

/// Whether `user` may create, join or look into open chats.
pub fn may_use_open_rooms(user: &User) -> Result<()> {
    if user.role == Role::Patient {
        return Err(Error::forbidden(
            "open chats are for staff: a patient reaches only their care team",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Workspace;

    fn user(id: u64, role: Role) -> User {
        User {
            id: UserId(id),
            username: format!("u{id}"),
            display_name: format!("u{id}"),
            role,
            workspace: Workspace::default(),
            password_hash: String::new(),
            created_ms: 0,
        }
    }

    #[test]
    fn a_patient_reaches_staff_admins_and_themself_but_no_other_patient() {
        let (pat, other) = (user(1, Role::Patient), user(2, Role::Patient));
        let (staff, admin) = (user(3, Role::Staff), user(4, Role::Admin));
        assert!(reaches(&pat, &staff) && reaches(&pat, &admin) && reaches(&pat, &pat));
        assert!(!reaches(&pat, &other));
        for caller in [&staff, &admin] {
            for other in [&pat, &staff, &admin] {
                assert!(reaches(caller, other));
            }
        }
        assert!(may_use_open_rooms(&pat).is_err());
        assert!(may_use_open_rooms(&staff).is_ok() && may_use_open_rooms(&admin).is_ok());
    }
}
