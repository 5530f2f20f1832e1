//! Who may do what: roles, the actions they allow, and namespace scopes.

use crate::AccessError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a request does, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Lists, descriptions, logs, usage, bills.
    Read,
    /// Deploys, applies, deletes, image and artifact pushes, triggers, secrets.
    Write,
    /// Invoking a private function.
    Invoke,
    /// The node itself: tokens, plans, and any route the gateway does not know.
    Admin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Invoke => "invoke",
            Action::Admin => "administer",
        })
    }
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, tokens included; always node-wide.
    Admin,
    /// Read, write and invoke in its scope.
    Deployer,
    /// Read in its scope.
    Viewer,
    /// Invoke private functions in its scope; nothing under `/v1`.
    Invoker,
}

impl Role {
    pub const NAMES: [&str; 4] = ["admin", "deployer", "viewer", "invoker"];

    pub fn allows(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Deployer => matches!(action, Action::Read | Action::Write | Action::Invoke),
            Role::Viewer => action == Action::Read,
            Role::Invoker => action == Action::Invoke,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccessError;

    fn from_str(s: &str) -> Result<Self, AccessError> {
        match s {
            "admin" => Ok(Role::Admin),
            "deployer" => Ok(Role::Deployer),
            "viewer" => Ok(Role::Viewer),
            "invoker" => Ok(Role::Invoker),
            other => Err(AccessError::Invalid {
                field: "role",
                message: format!("{other:?} is not a role (one of: {})", Role::NAMES.join(", ")),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespaces a token acts in: all (`*`) or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    /// `*` or a namespace name (a DNS-1123 label, as Kubernetes namespaces are).
    pub fn parse(text: &str) -> Result<Scope, AccessError> {
        if text == "*" {
            return Ok(Scope::All);
        }
        let invalid = |why: &str| AccessError::Invalid {
            field: "namespace",
            message: format!("{text:?} {why} (a namespace name, or * for all)"),
        };
        if text.is_empty() || text.len() > 63 {
            return Err(invalid("must be 1 to 63 characters"));
        }
        let ok = text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok || text.starts_with('-') || text.ends_with('-') {
            return Err(invalid("must be lowercase letters, digits and '-', starting and ending alphanumeric"));
        }
        Ok(Scope::Namespace(text.to_string()))
    }

    /// Whether `namespace` is within this scope.
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(own) => own == namespace,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Namespace(ns) => f.write_str(ns),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a token is, without its secret: what `wisp token ls` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Public id, the middle part of the token text.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub namespace: Scope,
    pub created_at_ms: u64,
}

impl TokenInfo {
    /// Whether this token may do `action` in `namespace` (`None`: across the node, which
    /// needs the `*` scope).
    pub fn may(&self, action: Action, namespace: Option<&str>) -> bool {
        self.role.allows(action)
            && match namespace {
                Some(ns) => self.namespace.includes(ns),
                None => self.namespace == Scope::All,
            }
    }

    /// "token ID (NAME: ROLE in namespace NS)" for error messages.
    pub fn describe(&self) -> String {
        let scope = match &self.namespace {
            Scope::All => "all namespaces".to_string(),
            Scope::Namespace(ns) => format!("namespace {ns}"),
        };
        format!("token {} ({}: {} in {scope})", self.id, self.name, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_their_actions() {
        use Action::*;
        let table = [
            (Role::Admin, [true, true, true, true]),
            (Role::Deployer, [true, true, true, false]),
            (Role::Viewer, [true, false, false, false]),
            (Role::Invoker, [false, false, true, false]),
        ];
        for (role, allowed) in table {
            for (action, want) in [Read, Write, Invoke, Admin].into_iter().zip(allowed) {
                assert_eq!(role.allows(action), want, "{role} {action}");
            }
        }
        for name in Role::NAMES {
            assert_eq!(name.parse::<Role>().unwrap().as_str(), name);
        }
        assert!("root".parse::<Role>().unwrap_err().to_string().contains("role: \"root\" is not a role"));
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::parse("*").unwrap(), Scope::All);
        assert_eq!(Scope::parse("team-a").unwrap(), Scope::Namespace("team-a".into()));
        for bad in ["", "Team", "-a", "a-", "a/b", &"a".repeat(64)] {
            let err = Scope::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("namespace: "), "{err}");
        }
        let token = |role, ns: &str| TokenInfo {
            id: "i".into(),
            name: "n".into(),
            role,
            namespace: Scope::parse(ns).unwrap(),
            created_at_ms: 0,
        };
        assert!(token(Role::Viewer, "a").may(Action::Read, Some("a")));
        assert!(!token(Role::Viewer, "a").may(Action::Read, Some("b")));
        assert!(!token(Role::Viewer, "a").may(Action::Read, None));
        assert!(token(Role::Viewer, "*").may(Action::Read, None));
        assert!(!token(Role::Deployer, "*").may(Action::Admin, None));
        assert!(token(Role::Admin, "*").may(Action::Admin, None));
    }
}
