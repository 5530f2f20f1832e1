//! The node's embedded store: one SQLite file (WAL, synchronous=FULL) holding the registry of
//! functions and revisions and the usage ledger; component bytes live beside it, by hash.

use crate::model::{RevisionView, Settings};
use crate::SchedulerError;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(crate) struct Store {
    conn: Mutex<Connection>,
    components: PathBuf,
    db_path: PathBuf,
}

/// A function's current revision as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredRevision {
    pub(crate) function: String,
    pub(crate) revision: u64,
    pub(crate) component_hash: String,
    pub(crate) component_bytes: u64,
    pub(crate) settings: Settings,
    pub(crate) created_at_ms: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    component_hash TEXT NOT NULL,
    component_bytes INTEGER NOT NULL,
    settings TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (function, revision)
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    cold INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_function ON usage (function, id);
";

/// Writers take the lock up front (`BEGIN IMMEDIATE`): a deferred transaction that read first
/// gets SQLITE_BUSY without waiting when the ledger committed in between.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, SchedulerError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Store {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, SchedulerError> {
        let components = data_dir.join("components");
        std::fs::create_dir_all(&components)?;
        let db_path = data_dir.join("wisp.db");
        let conn = open_connection(&db_path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn), components, db_path })
    }

    pub(crate) fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap()
    }

    /// Stores component bytes by hash, durably, before any revision refers to them.
    pub(crate) fn put_component(&self, hash: &str, bytes: &[u8]) -> Result<(), SchedulerError> {
        let path = self.component_path(hash);
        if path.exists() {
            return Ok(());
        }
        wisp_runtime::write_atomically(&path, bytes)?;
        std::fs::File::open(&self.components)?.sync_all()?;
        Ok(())
    }

    pub(crate) fn read_component(&self, hash: &str) -> Result<Vec<u8>, SchedulerError> {
        Ok(std::fs::read(self.component_path(hash))?)
    }

    fn component_path(&self, hash: &str) -> PathBuf {
        self.components.join(format!("{hash}.wasm"))
    }

    /// Records a new revision and points the function at it, in one transaction.
    pub(crate) fn add_revision(
        &self,
        function: &str,
        hash: &str,
        component_bytes: u64,
        settings: &Settings,
        created_at_ms: u64,
    ) -> Result<u64, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<u64> =
            tx.query_row("SELECT MAX(revision) FROM revisions WHERE function = ?1", [function], |r| r.get(0))?;
        let revision = last.unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO revisions (function, revision, component_hash, component_bytes, settings, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![function, revision, hash, component_bytes, serde_json::to_string(settings)?, created_at_ms],
        )?;
        tx.execute(
            "INSERT INTO functions (name, revision) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision",
            params![function, revision],
        )?;
        tx.commit()?;
        Ok(revision)
    }

    /// Every function with its current revision.
    pub(crate) fn current_revisions(&self) -> Result<Vec<StoredRevision>, SchedulerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT r.function, r.revision, r.component_hash, r.component_bytes, r.settings, r.created_at_ms
             FROM functions f JOIN revisions r ON r.function = f.name AND r.revision = f.revision
             ORDER BY f.name",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u64>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, u64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (function, revision, component_hash, component_bytes, settings, created_at_ms) = row?;
            out.push(StoredRevision {
                function,
                revision,
                component_hash,
                component_bytes,
                settings: serde_json::from_str(&settings)?,
                created_at_ms,
            });
        }
        Ok(out)
    }

    pub(crate) fn revisions(&self, function: &str) -> Result<Vec<RevisionView>, SchedulerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT revision, component_hash, created_at_ms FROM revisions WHERE function = ?1 ORDER BY revision DESC",
        )?;
        let rows = stmt.query_map([function], |row| {
            Ok(RevisionView { revision: row.get(0)?, component_hash: row.get(1)?, created_at_ms: row.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a function and its revisions; its usage records stay for billing.
    pub(crate) fn delete_function(&self, function: &str) -> Result<bool, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existed = tx.query_row("SELECT 1 FROM functions WHERE name = ?1", [function], |_| Ok(())).optional()?;
        tx.execute("DELETE FROM functions WHERE name = ?1", [function])?;
        tx.execute("DELETE FROM revisions WHERE function = ?1", [function])?;
        tx.commit()?;
        Ok(existed.is_some())
    }
}
