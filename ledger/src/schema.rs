//! `ledger.db`: its connections, its versioned migrations, and the one-time import of the usage
//! rows that older releases kept in the registry's `wisp.db`.
//!
//! Tables (as of v5): `usage` (raw rows, one per invocation), `usage_hourly_v3` (their hourly
//! rollups per namespace, function, revision, source and runtime, which summaries and bills read), `replica_usage`
//! (one row per replica lifetime) and `meta`.

use crate::LedgerError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use rusqlite_migration::{M, Migrations};
use std::path::Path;
use std::time::Duration;

/// Schema versions, applied in order by `rusqlite_migration` (`PRAGMA user_version` records how
/// many ran; each run is one transaction). Never edit one that shipped: append the next.
const MIGRATIONS: &[M<'static>] = &[
    // v1: raw records (one per invocation) and hourly rollups, written in the same
    // transaction so summaries read the rollups and never scan the raw table.
    M::up(
        "CREATE TABLE usage (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            function TEXT NOT NULL,
            revision INTEGER NOT NULL,
            source TEXT NOT NULL DEFAULT 'http',
            start_ms INTEGER NOT NULL,
            wall_us INTEGER NOT NULL,
            cold INTEGER NOT NULL,
            peak_memory_bytes INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            status INTEGER NOT NULL
         );
         CREATE INDEX usage_function ON usage (function, id);
         CREATE TABLE usage_hourly (
            hour_ms INTEGER NOT NULL,
            function TEXT NOT NULL,
            revision INTEGER NOT NULL,
            source TEXT NOT NULL,
            invocations INTEGER NOT NULL,
            cold_starts INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            wall_us INTEGER NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            peak_memory_bytes_max INTEGER NOT NULL,
            PRIMARY KEY (hour_ms, function, revision, source)
         );
         -- Summaries group by (function, source): read in that order, no sort.
         CREATE INDEX usage_hourly_function ON usage_hourly (function, source);
         CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);",
    ),
    // v2: which trigger delivered an event-driven invocation, and the event's id (a CloudEvent
    // id, or an async invocation's id), so deliveries can be counted per event.
    M::up(
        "ALTER TABLE usage ADD COLUMN trigger TEXT;
         ALTER TABLE usage ADD COLUMN event_id TEXT;",
    ),
    // v3: which runtime ran each invocation (container functions beside WebAssembly ones). Every
    // row before it was WebAssembly. The rollups gain the runtime in their key: SQLite cannot
    // change a primary key in place, so they move to `usage_hourly_v2`, the old rows under
    // 'wasm' (totals unchanged), and `usage_hourly` is dropped.
    M::up(
        "ALTER TABLE usage ADD COLUMN runtime TEXT NOT NULL DEFAULT 'wasm';
         CREATE TABLE usage_hourly_v2 (
            hour_ms INTEGER NOT NULL,
            function TEXT NOT NULL,
            revision INTEGER NOT NULL,
            source TEXT NOT NULL,
            runtime TEXT NOT NULL,
            invocations INTEGER NOT NULL,
            cold_starts INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            wall_us INTEGER NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            peak_memory_bytes_max INTEGER NOT NULL,
            PRIMARY KEY (hour_ms, function, revision, source, runtime)
         );
         INSERT INTO usage_hourly_v2 (hour_ms, function, revision, source, runtime, invocations, cold_starts, ok,
                                      failed, wall_us, request_bytes, response_bytes, peak_memory_bytes_max)
         SELECT hour_ms, function, revision, source, 'wasm', invocations, cold_starts, ok, failed, wall_us,
                request_bytes, response_bytes, peak_memory_bytes_max
         FROM usage_hourly;
         DROP TABLE usage_hourly;
         -- Summaries group by (function, source, runtime): read in that order, no sort.
         CREATE INDEX usage_hourly_v2_function ON usage_hourly_v2 (function, source, runtime);",
    ),
    // v4: one row per replica lifetime (replicas that stay up between requests are billed for
    // the time they were up), written when the replica stops. Summaries sum the lifetimes per
    // function off the covering index, never touching the table.
    M::up(
        "CREATE TABLE replica_usage (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            function TEXT NOT NULL,
            revision INTEGER NOT NULL,
            replica TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            cpu_ms INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX replica_usage_function ON replica_usage (function, start_ms, end_ms, cpu_ms);",
    ),
    // v5: billing. Raw rows gain the namespace (from the function id, `namespace/name` or the
    // default namespace's `name`), the configured memory, CPU time and outbound bytes. The
    // rollups gain the namespace in their key and the exact integer sums bills are priced from:
    // requests that ran (not refused), wall time rounded up to the ms per invocation, and that
    // times configured memory rounded up to the KiB. They are rebuilt from the raw rows (no
    // release before pruned any), and `usage_hourly_v2` is dropped.
    M::up(
        "ALTER TABLE usage ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
         ALTER TABLE usage ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE usage ADD COLUMN cpu_us INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE usage ADD COLUMN outbound_bytes INTEGER NOT NULL DEFAULT 0;
         UPDATE usage SET namespace = substr(function, 1, instr(function, '/') - 1) WHERE instr(function, '/') > 0;
         CREATE TABLE usage_hourly_v3 (
            hour_ms INTEGER NOT NULL,
            namespace TEXT NOT NULL,
            function TEXT NOT NULL,
            revision INTEGER NOT NULL,
            source TEXT NOT NULL,
            runtime TEXT NOT NULL,
            invocations INTEGER NOT NULL,
            cold_starts INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            wall_us INTEGER NOT NULL,
            billed_requests INTEGER NOT NULL,
            billed_ms INTEGER NOT NULL,
            billed_kib_ms INTEGER NOT NULL,
            cpu_us INTEGER NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            outbound_bytes INTEGER NOT NULL,
            peak_memory_bytes_max INTEGER NOT NULL,
            PRIMARY KEY (hour_ms, namespace, function, revision, source, runtime)
         );
         INSERT INTO usage_hourly_v3
         SELECT start_ms / 3600000 * 3600000, namespace, function, revision, source, runtime, COUNT(*),
                SUM(cold != 0), SUM(outcome = 'ok'), SUM(outcome != 'ok'), SUM(wall_us),
                SUM(outcome != 'rejected'),
                SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 ELSE 0 END),
                SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 * ((memory_bytes + 1023) / 1024)
                    ELSE 0 END),
                SUM(cpu_us), SUM(request_bytes), SUM(response_bytes), SUM(outbound_bytes), MAX(peak_memory_bytes)
         FROM usage GROUP BY 1, 2, 3, 4, 5, 6;
         DROP TABLE usage_hourly_v2;
         -- Summaries group by (function, source, runtime): read in that order, no sort.
         CREATE INDEX usage_hourly_v3_function ON usage_hourly_v3 (function, source, runtime);",
    ),
];

/// Adds the hourly rollups of the raw rows with `id > ?1` to `usage_hourly_v3`, summing into the
/// rows that exist: run by the writer for each batch and once by the legacy import. Bills are
/// priced from these sums (see `pricing`): requests that ran, wall time rounded up to the ms
/// per invocation, and that times configured memory rounded up to the KiB.
pub(crate) const ROLLUP_FROM_RAW: &str = "
    INSERT INTO usage_hourly_v3 (hour_ms, namespace, function, revision, source, runtime, invocations, cold_starts,
                                 ok, failed, wall_us, billed_requests, billed_ms, billed_kib_ms, cpu_us,
                                 request_bytes, response_bytes, outbound_bytes, peak_memory_bytes_max)
    SELECT start_ms / 3600000 * 3600000, namespace, function, revision, source, runtime, COUNT(*), SUM(cold != 0),
           SUM(outcome = 'ok'), SUM(outcome != 'ok'), SUM(wall_us), SUM(outcome != 'rejected'),
           SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 ELSE 0 END),
           SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 * ((memory_bytes + 1023) / 1024) ELSE 0 END),
           SUM(cpu_us), SUM(request_bytes), SUM(response_bytes), SUM(outbound_bytes), MAX(peak_memory_bytes)
    FROM usage WHERE id > ?1 GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (hour_ms, namespace, function, revision, source, runtime) DO UPDATE SET
        invocations = invocations + excluded.invocations,
        cold_starts = cold_starts + excluded.cold_starts,
        ok = ok + excluded.ok,
        failed = failed + excluded.failed,
        wall_us = wall_us + excluded.wall_us,
        billed_requests = billed_requests + excluded.billed_requests,
        billed_ms = billed_ms + excluded.billed_ms,
        billed_kib_ms = billed_kib_ms + excluded.billed_kib_ms,
        cpu_us = cpu_us + excluded.cpu_us,
        request_bytes = request_bytes + excluded.request_bytes,
        response_bytes = response_bytes + excluded.response_bytes,
        outbound_bytes = outbound_bytes + excluded.outbound_bytes,
        peak_memory_bytes_max = MAX(peak_memory_bytes_max, excluded.peak_memory_bytes_max)";

/// Opens (creating) `ledger.db` for writing, in WAL mode.
pub(crate) fn open_writer(path: &Path, synchronous: &str, busy_timeout: Duration) -> Result<Connection, LedgerError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some filesystems cannot share the WAL index; the ledger still works, readers just
        // wait for the writer.
        tracing::warn!(journal_mode = %mode, path = %path.display(), "usage ledger: WAL mode unavailable");
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

/// Opens a read connection to an existing `ledger.db` (reports: WAL readers never wait for
/// the writer).
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    // Read-write so it can join the WAL index like any reader; query_only so it never writes.
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Brings the schema up to date. A ledger written by a newer release is refused, not guessed at.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    Migrations::from_slice(MIGRATIONS).to_latest(conn)?;
    Ok(())
}

/// Moves the `usage` table an older release (921004f and before) kept in `wisp.db` into the
/// ledger. Rows (keeping their ids when they do not collide) and their rollups are copied in one
/// ledger transaction that also sets `meta.legacy_import`; only then is the old table dropped.
/// A crash in between leaves the marker, and the next open only drops: nothing is lost or
/// counted twice. Returns how many rows were imported.
///
/// `busy_timeout` (the ledger's, 10 s by default, as the registry's own) bounds the wait for
/// the registry's write lock before the drop.
pub(crate) fn import_legacy(
    conn: &mut Connection,
    registry_db: &Path,
    busy_timeout: Duration,
) -> Result<u64, LedgerError> {
    if !registry_db.exists() {
        return Ok(0);
    }
    // Never create wisp.db (the registry owns it), and touch nothing but its usage table.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let mut legacy = Connection::open_with_flags(registry_db, flags)?;
    legacy.busy_timeout(busy_timeout)?;
    let has_table = legacy
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'", [], |_| Ok(()))
        .optional()?
        .is_some();
    if !has_table {
        return Ok(0);
    }
    let done = conn
        .query_row("SELECT value FROM meta WHERE key = 'legacy_import'", [], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten()
        .is_some_and(|v| v == "done");
    let imported = if done { 0 } else { copy_legacy(conn, registry_db)? };
    // The rows are safe in ledger.db now. If the registry holds its lock past the timeout, keep
    // going: the marker makes the next open retry the drop, and nothing reads the old table.
    if let Err(e) = drop_legacy(&mut legacy) {
        tracing::warn!(
            "usage ledger: could not drop the imported usage table from wisp.db (retried at the next start): {e}"
        );
    }
    Ok(imported)
}

/// Drops the old table and its AUTOINCREMENT counter; nothing else in wisp.db.
fn drop_legacy(legacy: &mut Connection) -> rusqlite::Result<()> {
    let tx = legacy.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("DROP TABLE IF EXISTS usage")?;
    let has_sequence = tx
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'", [], |_| Ok(()))
        .optional()?
        .is_some();
    if has_sequence {
        tx.execute("DELETE FROM sqlite_sequence WHERE name = 'usage'", [])?;
    }
    tx.commit()
}

fn copy_legacy(conn: &mut Connection, registry_db: &Path) -> Result<u64, LedgerError> {
    let path = registry_db.to_str().ok_or_else(|| {
        LedgerError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "wisp.db's path is not UTF-8"))
    })?;
    // The commit that sets the marker must outlive a power loss before the old table is
    // dropped: make this one transaction fsync whatever the configured durability.
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute("ATTACH DATABASE ?1 AS legacy", [path])?;
    let result = (|| -> Result<u64, LedgerError> {
        // Deferred, and writing the marker first: that takes the write lock on ledger.db only.
        // (IMMEDIATE would also take wisp.db's, and wait on the registry for no reason: in WAL
        // mode reading the old table does not.)
        let tx = conn.transaction()?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('legacy_import', 'done')", [])?;
        let after: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM main.usage", [], |r| r.get(0))?;
        let first: Option<i64> = tx.query_row("SELECT MIN(id) FROM legacy.usage", [], |r| r.get(0))?;
        // Old ids are kept (they are what clients saw) unless the ledger already has rows in
        // their range; then the rows are appended in their old order under new ids. Those
        // releases ran WebAssembly only: `runtime` takes its default, 'wasm'.
        let id = if first.is_none_or(|first| first > after) { "id" } else { "NULL" };
        let n = tx.execute(
            &format!(
                "INSERT INTO main.usage (id, function, revision, source, start_ms, wall_us, cold, peak_memory_bytes,
                                         outcome, request_bytes, response_bytes, status)
                 SELECT {id}, function, revision, 'http', start_ms, wall_us, cold, peak_memory_bytes, outcome,
                        request_bytes, response_bytes, status
                 FROM legacy.usage ORDER BY id"
            ),
            [],
        )?;
        tx.execute(ROLLUP_FROM_RAW, [after])?;
        tx.commit()?;
        Ok(n as u64)
    })();
    let detached = conn.execute("DETACH DATABASE legacy", []);
    conn.pragma_update(None, "synchronous", synchronous)?;
    let imported = result?;
    detached?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid_and_reach_the_latest_version() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        // The rollups moved: the old table is gone, its index with it.
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('usage_hourly', 'usage_hourly_function', 'usage_hourly_v2')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        // Running again is a no-op.
        migrate(&mut conn).unwrap();
    }
}
