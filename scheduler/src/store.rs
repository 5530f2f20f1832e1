//! The registry's embedded store: `DATA_DIR/wisp.db` (SQLite, WAL, synchronous=FULL) holding
//! functions and their revisions, with versioned migrations; component bytes live beside it
//! in `components/<sha256>.wasm`. Usage lives in the ledger's own file.

use crate::SchedulerError;
use crate::model::{Artifact, Settings};
use crate::service::Template;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(crate) struct Store {
    conn: Mutex<Connection>,
    components: PathBuf,
}

/// A function's revision as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredRevision {
    pub(crate) function: String,
    pub(crate) revision: u64,
    pub(crate) artifact: Artifact,
    pub(crate) settings: Settings,
    pub(crate) created_at_ms: u64,
    /// The revision's name: bring-your-own, or `<name>-<revision, 5 digits>`.
    pub(crate) name: String,
    /// The template it was stamped from (synthesized for revisions from before templates).
    pub(crate) template: Template,
}

/// A revision's default name, Knative's `<service>-00001`.
pub(crate) fn revision_name(function: &str, revision: u64) -> String {
    let (_, name) = crate::service::split_id(function);
    format!("{name}-{revision:05}")
}

/// A pushed artifact: a name and tag pointing at content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    pub tag: String,
    pub artifact: Artifact,
    pub created_at_ms: u64,
}

/// An API object other than a function (a trigger, say): its spec is JSON that the crate owning
/// the kind parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's kind (`trigger`).
    pub kind: String,
    /// Its name, unique per kind.
    pub name: String,
    /// Its spec, JSON.
    pub spec: String,
    /// When it was created.
    pub created_at_ms: u64,
}

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran. Never edit
/// one that shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of release 921004f (`IF NOT EXISTS`: its data dirs already have it; their
    // `usage` table is imported and dropped by the ledger).
    "CREATE TABLE IF NOT EXISTS functions (
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
     );",
    // 2: a revision refers to an artifact of some kind (a Wasm component now, an OCI image
    // later) instead of requiring a component hash.
    "CREATE TABLE revisions_v2 (
        function TEXT NOT NULL,
        revision INTEGER NOT NULL,
        artifact_kind TEXT NOT NULL,
        artifact_digest TEXT NOT NULL,
        artifact_bytes INTEGER NOT NULL,
        settings TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (function, revision)
     );
     INSERT INTO revisions_v2
        SELECT function, revision, 'wasm', component_hash, component_bytes, settings, created_at_ms FROM revisions;
     DROP TABLE revisions;
     ALTER TABLE revisions_v2 RENAME TO revisions;
     CREATE INDEX revisions_artifact ON revisions (artifact_kind, artifact_digest);",
    // 3: API objects other than functions (triggers now), as JSON specs by kind and name. The
    // crate that owns a kind parses its specs; the registry only keeps them durable.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
     );",
    // 4: revisions get names and the template they were stamped from (NULL for older rows:
    // `<function>-%05d` and a template synthesized from their settings); pushed artifacts get
    // names and tags.
    "ALTER TABLE revisions ADD COLUMN name TEXT;
     ALTER TABLE revisions ADD COLUMN template TEXT;
     CREATE TABLE artifacts (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        artifact_kind TEXT NOT NULL,
        artifact_digest TEXT NOT NULL,
        artifact_bytes INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (name, tag)
     );",
    // 5: secrets, apart from settings (which only name them): `data` is a JSON object of
    // key to value.
    "CREATE TABLE secrets (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
     );",
];

/// Brings the schema up to date, one transaction per step. A data dir from a newer release
/// (more migrations than this binary knows) is refused rather than misread.
fn migrate(conn: &mut Connection) -> Result<(), SchedulerError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(SchedulerError::SchemaTooNew { found: version, known: MIGRATIONS.len() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "registry schema migrated");
    }
    Ok(())
}

fn artifact_columns(artifact: &Artifact) -> (&'static str, &str, u64) {
    match artifact {
        Artifact::Wasm { sha256, bytes } => ("wasm", sha256, *bytes),
        Artifact::Image { sha256, bytes } => ("container", sha256, *bytes),
    }
}

/// Whether a revision or a pushed artifact still refers to this content.
fn artifact_used(conn: &Connection, kind: &str, digest: &str) -> Result<bool, SchedulerError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM revisions WHERE artifact_kind = ?1 AND artifact_digest = ?2
             UNION ALL SELECT 1 FROM artifacts WHERE artifact_kind = ?1 AND artifact_digest = ?2 LIMIT 1",
        )?
        .exists(params![kind, digest])?)
}

fn artifact_from(kind: String, digest: String, bytes: u64) -> Result<Artifact, SchedulerError> {
    match kind.as_str() {
        "wasm" => Ok(Artifact::Wasm { sha256: digest, bytes }),
        "container" => Ok(Artifact::Image { sha256: digest, bytes }),
        other => Err(SchedulerError::UnknownArtifact(other.to_string())),
    }
}

impl Store {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, SchedulerError> {
        let components = data_dir.join("components");
        std::fs::create_dir_all(&components).map_err(|e| SchedulerError::Io { path: components.clone(), error: e })?;
        let path = data_dir.join("wisp.db");
        let mut conn = Connection::open(&path)?;
        // It holds secrets: owner only (SQLite gives its -wal and -shm files the same mode).
        let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
        std::fs::set_permissions(&path, owner_only)
            .map_err(|error| SchedulerError::Io { path: path.clone(), error })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), components })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap()
    }

    /// Stores component bytes by hash, durably, before any revision refers to them.
    pub(crate) fn put_component(&self, hash: &str, bytes: &[u8]) -> Result<(), SchedulerError> {
        let path = self.component_path(hash);
        // Same name, same content, unless the file was damaged: then it is replaced.
        if std::fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(());
        }
        let io = |error| SchedulerError::Io { path: path.clone(), error };
        let mut file = tempfile::NamedTempFile::new_in(&self.components).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(&path).map_err(|e| io(e.error))?;
        std::fs::File::open(&self.components).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    pub(crate) fn read_component(&self, hash: &str) -> Result<Vec<u8>, SchedulerError> {
        let path = self.component_path(hash);
        std::fs::read(&path).map_err(|error| SchedulerError::Io { path, error })
    }

    pub(crate) fn component_path(&self, hash: &str) -> PathBuf {
        self.components.join(format!("{hash}.wasm"))
    }

    /// Records a new revision and points the function at it, in one transaction.
    /// Stores a service: a new revision when its template changed (`new` = the revision's
    /// artifact and template), and the service object (traffic, metadata), in one transaction.
    /// Returns the new revision's number and name.
    pub(crate) fn put_service(
        &self,
        function: &str,
        new: Option<(&Artifact, &Template)>,
        service_json: &str,
        created_at_ms: u64,
    ) -> Result<Option<(u64, String)>, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut added = None;
        if let Some((artifact, template)) = new {
            let last: Option<u64> =
                tx.query_row("SELECT MAX(revision) FROM revisions WHERE function = ?1", [function], |r| r.get(0))?;
            let revision = last.unwrap_or(0) + 1;
            let name = template.revision_name.clone().unwrap_or_else(|| revision_name(function, revision));
            let (kind, digest, bytes) = artifact_columns(artifact);
            tx.execute(
                "INSERT INTO revisions (function, revision, artifact_kind, artifact_digest, artifact_bytes, settings,
                                        created_at_ms, name, template)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    function,
                    revision,
                    kind,
                    digest,
                    bytes,
                    serde_json::to_string(&template.settings)?,
                    created_at_ms,
                    name,
                    serde_json::to_string(template)?
                ],
            )?;
            tx.execute(
                "INSERT INTO functions (name, revision) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET revision = excluded.revision",
                params![function, revision],
            )?;
            added = Some((revision, name));
        }
        tx.execute(
            "INSERT INTO objects (kind, name, spec, created_at_ms) VALUES ('service', ?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET spec = excluded.spec",
            params![function, service_json, created_at_ms],
        )?;
        tx.commit()?;
        Ok(added)
    }

    /// Deletes revisions (garbage collection of old unrouted ones); returns the artifacts no
    /// remaining revision refers to.
    pub(crate) fn delete_revisions(&self, function: &str, revisions: &[u64]) -> Result<Vec<Artifact>, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut unused = Vec::new();
        for revision in revisions {
            let row: Option<(String, String, u64)> = tx
                .query_row(
                    "DELETE FROM revisions WHERE function = ?1 AND revision = ?2
                     RETURNING artifact_kind, artifact_digest, artifact_bytes",
                    params![function, revision],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((kind, digest, bytes)) = row
                && !artifact_used(&tx, &kind, &digest)?
            {
                unused.push(artifact_from(kind, digest, bytes)?);
            }
        }
        tx.commit()?;
        Ok(unused)
    }

    /// Points `name:tag` at an artifact (replacing what it pointed at).
    pub(crate) fn put_artifact(&self, artifact: &ArtifactRef) -> Result<(), SchedulerError> {
        let (kind, digest, bytes) = artifact_columns(&artifact.artifact);
        self.conn().execute(
            "INSERT INTO artifacts (name, tag, artifact_kind, artifact_digest, artifact_bytes, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name, tag) DO UPDATE SET artifact_kind = excluded.artifact_kind,
                artifact_digest = excluded.artifact_digest, artifact_bytes = excluded.artifact_bytes,
                created_at_ms = excluded.created_at_ms",
            params![artifact.name, artifact.tag, kind, digest, bytes, artifact.created_at_ms],
        )?;
        Ok(())
    }

    /// What `name:tag` points at, if pushed.
    pub(crate) fn artifact(&self, name: &str, tag: &str) -> Result<Option<Artifact>, SchedulerError> {
        let conn = self.conn();
        let row: Option<(String, String, u64)> = conn
            .prepare_cached(
                "SELECT artifact_kind, artifact_digest, artifact_bytes FROM artifacts WHERE name = ?1 AND tag = ?2",
            )?
            .query_row(params![name, tag], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(|(kind, digest, bytes)| artifact_from(kind, digest, bytes)).transpose()
    }

    /// Every pushed artifact, by name and tag.
    pub(crate) fn artifacts(&self) -> Result<Vec<ArtifactRef>, SchedulerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, tag, artifact_kind, artifact_digest, artifact_bytes, created_at_ms FROM artifacts
             ORDER BY name, tag",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, tag, kind, digest, bytes, created_at_ms): (String, String, String, String, u64, u64) = row?;
            out.push(ArtifactRef { name, tag, artifact: artifact_from(kind, digest, bytes)?, created_at_ms });
        }
        Ok(out)
    }

    /// Every function's revisions, by function, newest first.
    pub(crate) fn all_revisions(&self) -> Result<Vec<StoredRevision>, SchedulerError> {
        self.query_revisions(
            "SELECT function, revision, artifact_kind, artifact_digest, artifact_bytes, settings, created_at_ms,
                    name, template
             FROM revisions ORDER BY function, revision DESC",
            [],
        )
    }

    fn query_revisions(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredRevision>, SchedulerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, u64>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, u64>(6)?,
                row.get::<_, Option<String>>(7)?,
                row.get::<_, Option<String>>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (function, revision, kind, digest, bytes, settings, created_at_ms, name, template) = row?;
            let artifact = artifact_from(kind, digest, bytes)?;
            let settings: Settings = serde_json::from_str(&settings)?;
            let template = match template {
                Some(t) => serde_json::from_str(&t)?,
                None => Template { image: artifact.digest(), settings: settings.clone(), ..Template::default() },
            };
            let name = name.unwrap_or_else(|| revision_name(&function, revision));
            out.push(StoredRevision { function, revision, artifact, settings, created_at_ms, name, template });
        }
        Ok(out)
    }

    /// Removes a function and its revisions (its usage stays in the ledger for billing).
    /// Returns the artifacts no remaining revision refers to, for the caller to delete.
    pub(crate) fn delete_function(&self, function: &str) -> Result<Option<Vec<Artifact>>, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existed = tx.query_row("SELECT 1 FROM functions WHERE name = ?1", [function], |_| Ok(())).optional()?;
        if existed.is_none() {
            return Ok(None);
        }
        let used: Vec<(String, String, u64)> = tx
            .prepare(
                "SELECT DISTINCT artifact_kind, artifact_digest, artifact_bytes FROM revisions WHERE function = ?1",
            )?
            .query_map([function], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM functions WHERE name = ?1", [function])?;
        tx.execute("DELETE FROM revisions WHERE function = ?1", [function])?;
        tx.execute("DELETE FROM objects WHERE kind = 'service' AND name = ?1", [function])?;
        let mut keep = Vec::new();
        for (kind, digest, bytes) in used {
            if !artifact_used(&tx, &kind, &digest)? {
                keep.push((kind, digest, bytes));
            }
        }
        let used = keep;
        tx.commit()?;
        used.into_iter()
            .map(|(kind, digest, bytes)| artifact_from(kind, digest, bytes))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Deletes the tag `name:tag`; returns None when it did not exist, else its content if
    /// nothing else (another tag, a revision) refers to it any more.
    pub(crate) fn delete_artifact(&self, name: &str, tag: &str) -> Result<Option<Vec<Artifact>>, SchedulerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, u64)> = tx
            .query_row(
                "DELETE FROM artifacts WHERE name = ?1 AND tag = ?2
                 RETURNING artifact_kind, artifact_digest, artifact_bytes",
                params![name, tag],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((kind, digest, bytes)) = row else { return Ok(None) };
        let unused = !artifact_used(&tx, &kind, &digest)?;
        tx.commit()?;
        Ok(Some(if unused { vec![artifact_from(kind, digest, bytes)?] } else { Vec::new() }))
    }

    /// Stores an object unless one of that kind and name exists; returns whether it did.
    pub(crate) fn create_object(&self, object: &StoredObject) -> Result<bool, SchedulerError> {
        let n = self.conn().execute(
            "INSERT INTO objects (kind, name, spec, created_at_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![object.kind, object.name, object.spec, object.created_at_ms],
        )?;
        Ok(n == 1)
    }

    /// Deletes an object; returns whether it existed.
    pub(crate) fn delete_object(&self, kind: &str, name: &str) -> Result<bool, SchedulerError> {
        Ok(self.conn().execute("DELETE FROM objects WHERE kind = ?1 AND name = ?2", params![kind, name])? == 1)
    }

    /// Every object of a kind, by name.
    pub(crate) fn objects(&self, kind: &str) -> Result<Vec<StoredObject>, SchedulerError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT kind, name, spec, created_at_ms FROM objects WHERE kind = ?1 ORDER BY name")?;
        let rows = stmt.query_map([kind], |r| {
            Ok(StoredObject { kind: r.get(0)?, name: r.get(1)?, spec: r.get(2)?, created_at_ms: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a component file no revision refers to.
    pub(crate) fn remove_component(&self, hash: &str) {
        let path = self.component_path(hash);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "removing unused component: {e}");
        }
    }
}
