//! Bearer tokens of a node: created, listed, verified and revoked.
//!
//! A token's text is `wisp_<id>_<secret>`: `id` is 12 hex digits (public, what `wisp token ls`
//! shows and `revoke` takes), `secret` 64 hex digits (32 random bytes). Only sha256(secret) is
//! stored, in `DATA_DIR/access.db`, with the token's name, role and namespace scope. Every
//! token is loaded into memory at start, so verifying one is a map lookup and a constant-time
//! compare of the hashes; a revoke deletes the row durably, then the entry, and the very next
//! request sees it gone.

mod model;

pub use model::{Action, Role, Scope, TokenInfo};

use rusqlite::{Connection, params};
use rusqlite_migration::{M, Migrations};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;

/// The file `wisp up` writes the first admin token to, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
const PREFIX: &str = "wisp_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
const MAX_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A request field is wrong; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("a token named {0:?} exists already")]
    Exists(String),
    #[error("no token with id {0:?}")]
    NotFound(String),
    #[error("token store: {0}")]
    Store(String),
}

impl From<rusqlite::Error> for AccessError {
    fn from(e: rusqlite::Error) -> Self {
        AccessError::Store(e.to_string())
    }
}

impl From<rusqlite_migration::Error> for AccessError {
    fn from(e: rusqlite_migration::Error) -> Self {
        AccessError::Store(e.to_string())
    }
}

/// Never edit a shipped migration: append the next.
const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        namespace TEXT NOT NULL,
        secret_sha256 BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
     );",
)];

/// The parts of a token's text.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenText<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl<'a> TokenText<'a> {
    /// Splits `wisp_<id>_<secret>`; `None` for anything else.
    pub fn parse(text: &'a str) -> Option<TokenText<'a>> {
        let (id, secret) = text.strip_prefix(PREFIX)?.split_once('_')?;
        let hex = |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(id, ID_BYTES) && hex(secret, SECRET_BYTES)).then_some(TokenText { id, secret })
    }
}

struct Entry {
    info: Arc<TokenInfo>,
    secret_sha256: [u8; 32],
}

struct Inner {
    tokens: RwLock<HashMap<String, Entry>>,
    /// Writes only (create, revoke), always on a blocking thread.
    db: Mutex<Connection>,
}

/// The node's tokens. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl Access {
    /// Opens (creating or migrating) `DATA_DIR/access.db` and loads every token. Blocking.
    pub fn open(data_dir: &Path) -> Result<Access, AccessError> {
        let path = data_dir.join("access.db");
        let mut conn = Connection::open(&path).map_err(|e| AccessError::Store(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A created or revoked token must survive a crash the moment it is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        let mut tokens = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT id, name, role, namespace, secret_sha256, created_at_ms FROM tokens")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            for row in rows {
                let (id, name, role, namespace, hash, created) = row?;
                let corrupt = |what: &str| AccessError::Store(format!("{}: token {id}: {what}", path.display()));
                let info = TokenInfo {
                    id: id.clone(),
                    name,
                    role: role.parse().map_err(|_| corrupt("unknown role"))?,
                    namespace: Scope::parse(&namespace).map_err(|_| corrupt("bad namespace"))?,
                    created_at_ms: created as u64,
                };
                let secret_sha256 = hash.try_into().map_err(|_| corrupt("bad hash"))?;
                tokens.insert(id, Entry { info: Arc::new(info), secret_sha256 });
            }
        }
        Ok(Access { inner: Arc::new(Inner { tokens: RwLock::new(tokens), db: Mutex::new(conn) }) })
    }

    /// The token `text` (the part after `Bearer `) names, if it is valid and not revoked.
    /// Costs one sha256 of 64 bytes and a map lookup; never touches the disk.
    pub fn verify(&self, text: &str) -> Option<Arc<TokenInfo>> {
        let parsed = TokenText::parse(text.trim())?;
        let hash: [u8; 32] = Sha256::digest(parsed.secret.as_bytes()).into();
        let tokens = self.inner.tokens.read().unwrap();
        let entry = tokens.get(parsed.id)?;
        bool::from(entry.secret_sha256.ct_eq(&hash)).then(|| entry.info.clone())
    }

    /// Every token, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self.inner.tokens.read().unwrap().values().map(|e| (*e.info).clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a token (stored durably before this returns) and returns it with its text,
    /// which exists nowhere else afterwards.
    pub async fn create(&self, name: &str, role: Role, namespace: Scope) -> Result<(TokenInfo, String), AccessError> {
        let this = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || this.create_blocking(&name, role, namespace))
            .await
            .map_err(|e| AccessError::Store(e.to_string()))?
    }

    /// [`Access::create`] on the calling thread.
    pub fn create_blocking(
        &self,
        name: &str,
        role: Role,
        namespace: Scope,
    ) -> Result<(TokenInfo, String), AccessError> {
        validate_name(name)?;
        if role == Role::Admin && namespace != Scope::All {
            return Err(AccessError::Invalid {
                field: "namespace",
                message: "an admin token acts on the whole node: its namespace must be *".into(),
            });
        }
        let id = hex::encode(random::<ID_BYTES>()?);
        let secret = hex::encode(random::<SECRET_BYTES>()?);
        let secret_sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let info = TokenInfo { id: id.clone(), name: name.to_string(), role, namespace, created_at_ms: now_ms() };
        {
            let db = self.inner.db.lock().unwrap();
            let inserted = db.execute(
                "INSERT INTO tokens (id, name, role, namespace, secret_sha256, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, name, role.as_str(), info.namespace.to_string(), &secret_sha256[..], info.created_at_ms as i64],
            );
            match inserted {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Err(AccessError::Exists(name.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
            // Inserted under the db lock, so the map and the table change in the same order.
            self.inner
                .tokens
                .write()
                .unwrap()
                .insert(id.clone(), Entry { info: Arc::new(info.clone()), secret_sha256 });
        }
        Ok((info, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes token `id` (or the token named `id`): deleted from the store, then from memory,
    /// so the next request with it is refused. Returns what was revoked.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, AccessError> {
        let this = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || this.revoke_blocking(&id))
            .await
            .map_err(|e| AccessError::Store(e.to_string()))?
    }

    fn revoke_blocking(&self, id_or_name: &str) -> Result<TokenInfo, AccessError> {
        let db = self.inner.db.lock().unwrap();
        let info = {
            let tokens = self.inner.tokens.read().unwrap();
            let found = tokens.get(id_or_name).or_else(|| tokens.values().find(|e| e.info.name == id_or_name));
            found.map(|e| (*e.info).clone()).ok_or_else(|| AccessError::NotFound(id_or_name.to_string()))?
        };
        db.execute("DELETE FROM tokens WHERE id = ?1", params![info.id])?;
        self.inner.tokens.write().unwrap().remove(&info.id);
        Ok(info)
    }

    /// On a node's first start: creates an admin token and writes it to `file` (mode 0600,
    /// never readable by others, not even briefly) unless the file exists or an admin token
    /// does. Returns the file when it wrote one. Blocking.
    pub fn ensure_admin_token(&self, file: &Path) -> Result<Option<PathBuf>, AccessError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if file.exists() || self.list().iter().any(|t| t.role == Role::Admin) {
            return Ok(None);
        }
        let name = format!("admin-{}", now_ms() / 1000);
        let store = |e: std::io::Error| AccessError::Store(format!("writing {}: {e}", file.display()));
        // The file is created first (exclusively, 0600), so a token never exists that was not
        // written down; a failed write removes both.
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file).map_err(store)?;
        let written = self.create_blocking(&name, Role::Admin, Scope::All).and_then(|(info, text)| {
            let write = out.write_all(format!("{text}\n").as_bytes()).and_then(|()| out.sync_all());
            write.map_err(store).inspect_err(|_| drop(self.revoke_blocking(&info.id)))
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(file);
            return Err(e);
        }
        Ok(Some(file.to_path_buf()))
    }
}

fn validate_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid {
            field: "name",
            message: format!("{name:?} must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"),
        })
    }
}

fn random<const N: usize>() -> Result<[u8; N], AccessError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AccessError::Store(format!("the OS random source: {e}")))?;
    Ok(bytes)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_format() {
        let id = "0123456789ab";
        let secret = "f".repeat(64);
        let text = format!("wisp_{id}_{secret}");
        assert_eq!(TokenText::parse(&text), Some(TokenText { id, secret: &secret }));
        for bad in [
            "",
            "Bearer x",
            &format!("wisp_{id}{secret}"),
            &format!("wisp_{id}_{}", &secret[1..]),
            &format!("wisp_{}_{secret}", &id[1..]),
            &format!("wasp_{id}_{secret}"),
            &format!("wisp_{id}_{}g", &secret[1..]),
        ] {
            assert_eq!(TokenText::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn create_verify_revoke_persist() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(dir.path()).unwrap();
        let (info, text) = access.create_blocking("ci", Role::Deployer, Scope::parse("team").unwrap()).unwrap();
        assert!(TokenText::parse(&text).is_some(), "{text}");
        assert_eq!(access.verify(&text).as_deref(), Some(&info));
        // A wrong secret for a real id, and a made-up id, are both refused.
        let (prefix, last) = text.split_at(text.len() - 1);
        let wrong = format!("{prefix}{}", if last == "0" { "1" } else { "0" });
        assert!(access.verify(&wrong).is_none());
        assert!(access.verify(&text.replace(&info.id, "000000000000")).is_none());
        assert!(matches!(access.create_blocking("ci", Role::Viewer, Scope::All), Err(AccessError::Exists(_))));
        let err = access.create_blocking("root", Role::Admin, Scope::parse("team").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("namespace: "), "{err}");
        assert!(access.create_blocking("a b", Role::Viewer, Scope::All).unwrap_err().to_string().starts_with("name: "));

        // Reopened: the same tokens, secrets never stored.
        drop(access);
        let access = Access::open(dir.path()).unwrap();
        assert_eq!(access.verify(&text).as_deref(), Some(&info));
        let db = std::fs::read(dir.path().join("access.db")).unwrap();
        let secret = TokenText::parse(&text).unwrap().secret;
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

        assert_eq!(access.revoke_blocking("ci").unwrap().id, info.id);
        assert!(access.verify(&text).is_none());
        assert!(matches!(access.revoke_blocking(&info.id), Err(AccessError::NotFound(_))));
        drop(access);
        assert!(Access::open(dir.path()).unwrap().verify(&text).is_none());
    }

    #[test]
    fn admin_token_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ADMIN_TOKEN_FILE);
        let access = Access::open(dir.path()).unwrap();
        assert_eq!(access.ensure_admin_token(&file).unwrap(), Some(file.clone()));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(access.verify(text.trim()).unwrap().role, Role::Admin);
        // Second start: nothing new.
        assert_eq!(access.ensure_admin_token(&file).unwrap(), None);
        assert_eq!(access.list().len(), 1);
    }
}
