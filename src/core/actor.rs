//! Who asks for an operation, and the one rule of the operator's
//! operations: only an admin (or the operator's own command line) may run
//! them.
//!
//! A dialect never looks at a role: it turns its caller into an [`Actor`]
//! and asks it for an [`Admin`] when an endpoint is an operator's; the
//! core operations that need one take an `&Admin`, which nothing else can
//! make — so an admin operation cannot be reached without the check, and
//! the check is written once.

use super::audit;
use super::Caller;
use crate::error::{Error, Result};
use crate::model::{Role, User};

/// Who asks.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    /// The operator's command line (with the daemon, through its control
    /// socket, or without it): whoever can reach the data directory.
    Operator,
    /// A person signed in.
    Person(&'a User),
    /// An API client (API.md §6), acting through its own user: staff of its
    /// workspace, never an admin.
    Client(&'a User),
}

impl<'a> Actor<'a> {
    /// The user behind the actor; none for the operator.
    pub fn user(&self) -> Option<&'a User> {
        match *self {
            Actor::Operator => None,
            Actor::Person(u) | Actor::Client(u) => Some(u),
        }
    }

    /// The actor as an admin, for an operator's operation (`what`, as in
    /// "only an admin may {what}"): the command line, or a person whose
    /// role is admin. Anyone else is `FORBIDDEN`, saying what was refused.
    pub fn admin(self, what: &str) -> Result<Admin<'a>> {
        match self {
            Actor::Operator => Ok(Admin(self)),
            Actor::Person(u) if u.role == Role::Admin => Ok(Admin(self)),
            _ => Err(Error::forbidden(format!("only an admin may {what}"))),
        }
    }

    /// How the audit trail names the actor.
    pub(crate) fn recorded(&self) -> audit::Actor {
        self.user()
            .map_or(audit::Actor::Cli, |u| audit::Actor::User(u.id))
    }
}

impl Caller {
    /// The caller as an actor: an API client's user, or a person.
    pub fn actor(&self) -> Actor<'_> {
        match self.client {
            true => Actor::Client(&self.user),
            false => Actor::Person(&self.user),
        }
    }
}

/// An actor checked to be an admin ([`Actor::admin`]): what the operator's
/// operations take.
#[derive(Clone, Copy, Debug)]
pub struct Admin<'a>(Actor<'a>);

impl Admin<'static> {
    /// The operator's command line, which is always an admin.
    pub fn operator() -> Admin<'static> {
        Admin(Actor::Operator)
    }
}

impl<'a> Admin<'a> {
    pub fn actor(&self) -> Actor<'a> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{UserId, Workspace};

    fn user(role: Role) -> User {
        User {
            id: UserId(7),
            username: "u".into(),
            display_name: "u".into(),
            role,
            workspace: Workspace::default(),
            password_hash: String::new(),
            created_ms: 0,
        }
    }

    #[test]
    fn only_the_operator_and_admins_are_admins() {
        let (admin, staff, patient) = (user(Role::Admin), user(Role::Staff), user(Role::Patient));
        assert!(Actor::Operator.admin("x").is_ok());
        assert!(Actor::Person(&admin).admin("x").is_ok());
        for refused in [
            Actor::Person(&staff),
            Actor::Person(&patient),
            Actor::Client(&staff),
        ] {
            let e = refused.admin("create users").unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Forbidden);
            assert!(
                e.to_string().contains("only an admin may create users"),
                "{e}"
            );
        }
        // A client's user is staff; were it ever marked admin, it is
        // still not one.
        assert!(Actor::Client(&admin).admin("x").is_err());
    }

    #[test]
    fn the_trail_names_the_operator_cli_and_a_user_by_id() {
        let u = user(Role::Admin);
        assert!(matches!(Actor::Operator.recorded(), audit::Actor::Cli));
        assert!(matches!(
            Actor::Person(&u).recorded(),
            audit::Actor::User(UserId(7))
        ));
        assert!(matches!(
            Actor::Client(&u).recorded(),
            audit::Actor::User(UserId(7))
        ));
    }
}
