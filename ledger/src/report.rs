//! Usage reports: per-function totals from the hourly rollups (their cost grows with hours ×
//! functions, not with invocations), replica time summed per function off a covering index (its
//! cost grows with replica lifetimes, not invocations), and the newest raw records. The JSON keeps
//! the field names of the reports before the ledger had its own crate; every struct reads with
//! defaults so clients tolerate fields added or removed later.

use crate::record::{lenient_outcome, lenient_runtime, lenient_source};
use crate::{Outcome, Runtime, Source};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a usage report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this function; `None` for all.
    pub function: Option<String>,
    /// How many of the newest records to include (0: totals only).
    pub limit: u32,
}

impl Default for UsageQuery {
    /// Every function, the 100 newest records.
    fn default() -> Self {
        Self { function: None, limit: 100 }
    }
}

/// Totals for one function, over all time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageSummary {
    /// The function's name.
    pub function: String,
    /// Invocations metered.
    pub invocations: u64,
    /// Invocations that had to start an instance.
    pub cold_starts: u64,
    /// Invocations with outcome `ok`.
    pub ok: u64,
    /// Invocations with any other outcome.
    pub failed: u64,
    /// Wall time summed, microseconds.
    pub wall_us_total: u64,
    /// Request body bytes summed.
    pub request_bytes: u64,
    /// Response body bytes summed.
    pub response_bytes: u64,
    /// Highest peak memory of any invocation.
    pub peak_memory_bytes_max: u64,
    /// Invocations by source name (`http`, `kafka`, ...). Keys are strings so a client reads
    /// sources newer than itself.
    pub by_source: BTreeMap<String, u64>,
    /// Invocations by runtime name (`wasm`, `container`). Keys are strings so a client reads
    /// runtimes newer than itself.
    pub by_runtime: BTreeMap<String, u64>,
    /// Replica lifetimes summed (stop minus start of each stopped replica), milliseconds.
    pub replica_ms: u64,
    /// CPU time of those replicas summed (from their cgroups), milliseconds.
    pub replica_cpu_ms: u64,
}

/// One stored usage record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredUsage {
    /// Ledger id; larger is newer.
    pub id: u64,
    /// The function's name.
    pub function: String,
    /// The revision that ran.
    pub revision: u64,
    /// What triggered it (an unknown name reads as `http`).
    #[serde(deserialize_with = "lenient_source")]
    pub source: Source,
    /// Unix time in milliseconds when the invocation started.
    pub start_ms: u64,
    /// Wall time, microseconds.
    pub wall_us: u64,
    /// Whether it had to start an instance.
    pub cold: bool,
    /// Highest linear memory the instance reached.
    pub peak_memory_bytes: u64,
    /// How it ended (an unknown name reads as `error`: only `ok` counts as a success).
    #[serde(deserialize_with = "lenient_outcome")]
    pub outcome: Outcome,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// The function's HTTP status; 0 when it produced no response.
    pub status: u16,
    /// The trigger that delivered the event, for trigger sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The event's id (CloudEvent id or async invocation id), for event sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What ran it (an unknown name reads as `wasm`, as does a record without one).
    #[serde(deserialize_with = "lenient_runtime")]
    pub runtime: Runtime,
}

impl Default for StoredUsage {
    fn default() -> Self {
        Self {
            id: 0,
            function: String::new(),
            revision: 0,
            source: Source::Http,
            start_ms: 0,
            wall_us: 0,
            cold: false,
            peak_memory_bytes: 0,
            // A record missing its outcome is not evidence of success.
            outcome: Outcome::Error,
            request_bytes: 0,
            response_bytes: 0,
            status: 0,
            trigger: None,
            event_id: None,
            runtime: Runtime::Wasm,
        }
    }
}

/// Totals per function (ordered by name) and the newest records (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageReport {
    /// One entry per function with usage (invocations or replica time), ordered by function.
    pub summary: Vec<UsageSummary>,
    /// The newest records, newest first, at most `UsageQuery::limit`.
    pub records: Vec<StoredUsage>,
}

/// Reads a u64 column; SQLite integers are i64 and sums may overflow into a float, which must
/// not fail a report.
fn u64_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(match row.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(v) => v.max(0) as u64,
        rusqlite::types::ValueRef::Real(v) => v.max(0.0) as u64,
        _ => 0,
    })
}

/// `?1 IS NULL` keeps the parameter list fixed while letting SQLite use the function indexes
/// when there is a filter (an `OR` of both would defeat them).
fn filter(function: Option<&str>) -> &'static str {
    if function.is_some() { "function = ?1" } else { "?1 IS NULL" }
}

/// Totals per function, source and runtime, from the rollups only (`?1`: function or NULL).
fn summary_sql(filter: &str) -> String {
    format!(
        "SELECT function, source, runtime, SUM(invocations), SUM(cold_starts), SUM(ok), SUM(failed), SUM(wall_us),
                SUM(request_bytes), SUM(response_bytes), MAX(peak_memory_bytes_max)
         FROM usage_hourly_v2 WHERE {filter}
         GROUP BY function, source, runtime ORDER BY function, source, runtime"
    )
}

/// Replica time and CPU time per function (`?1`: function or NULL), off the covering index on
/// (function, start_ms, end_ms, cpu_ms): the table itself is never read. An end before its
/// start counts as no time.
fn replica_sql(filter: &str) -> String {
    format!(
        "SELECT function, SUM(MAX(end_ms - start_ms, 0)), SUM(cpu_ms)
         FROM replica_usage WHERE {filter} GROUP BY function ORDER BY function"
    )
}

/// The newest raw records (`?1`: function or NULL, `?2`: limit), walking an index backwards.
fn records_sql(filter: &str) -> String {
    format!(
        "SELECT id, function, revision, source, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                request_bytes, response_bytes, status, trigger, event_id, runtime
         FROM usage WHERE {filter} ORDER BY id DESC LIMIT ?2"
    )
}

pub(crate) fn report(conn: &mut Connection, query: &UsageQuery) -> rusqlite::Result<UsageReport> {
    let filter = filter(query.function.as_deref());
    // One read transaction: totals and records come from the same snapshot.
    let tx = conn.transaction()?;
    let mut summary: Vec<UsageSummary> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&summary_sql(filter))?;
        let mut rows = stmt.query(params![query.function])?;
        while let Some(r) = rows.next()? {
            let function: String = r.get(0)?;
            if summary.last().is_none_or(|s| s.function != function) {
                summary.push(UsageSummary { function, ..UsageSummary::default() });
            }
            let s = summary.last_mut().expect("pushed above");
            let invocations = u64_at(r, 3)?;
            *s.by_source.entry(r.get(1)?).or_default() += invocations;
            *s.by_runtime.entry(r.get(2)?).or_default() += invocations;
            s.invocations += invocations;
            s.cold_starts += u64_at(r, 4)?;
            s.ok += u64_at(r, 5)?;
            s.failed += u64_at(r, 6)?;
            s.wall_us_total = s.wall_us_total.saturating_add(u64_at(r, 7)?);
            s.request_bytes = s.request_bytes.saturating_add(u64_at(r, 8)?);
            s.response_bytes = s.response_bytes.saturating_add(u64_at(r, 9)?);
            s.peak_memory_bytes_max = s.peak_memory_bytes_max.max(u64_at(r, 10)?);
        }
    }
    let replicas: Vec<(String, u64, u64)> = {
        let mut stmt = tx.prepare_cached(&replica_sql(filter))?;
        let rows = stmt.query_map(params![query.function], |r| Ok((r.get(0)?, u64_at(r, 1)?, u64_at(r, 2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if !replicas.is_empty() {
        summary = merge_replicas(summary, replicas);
    }
    let records = {
        let mut stmt = tx.prepare_cached(&records_sql(filter))?;
        stmt.query_map(params![query.function, query.limit], |r| {
            Ok(StoredUsage {
                id: u64_at(r, 0)?,
                function: r.get(1)?,
                revision: u64_at(r, 2)?,
                source: Source::parse_lenient(&r.get::<_, String>(3)?),
                start_ms: u64_at(r, 4)?,
                wall_us: u64_at(r, 5)?,
                cold: r.get(6)?,
                peak_memory_bytes: u64_at(r, 7)?,
                outcome: Outcome::parse_lenient(&r.get::<_, String>(8)?),
                request_bytes: u64_at(r, 9)?,
                response_bytes: u64_at(r, 10)?,
                status: r.get(11)?,
                trigger: r.get(12)?,
                event_id: r.get(13)?,
                runtime: Runtime::parse_lenient(&r.get::<_, String>(14)?),
            })
        })?
        .collect::<Result<_, _>>()?
    };
    tx.finish()?;
    Ok(UsageReport { summary, records })
}

/// Sets each function's replica time, adding the functions that have only replica time. Both
/// lists are ordered by function (SQLite's BINARY order, which is `String`'s byte order), and
/// so is the result.
fn merge_replicas(summary: Vec<UsageSummary>, replicas: Vec<(String, u64, u64)>) -> Vec<UsageSummary> {
    let mut merged = Vec::with_capacity(summary.len() + replicas.len());
    let mut invoked = summary.into_iter().peekable();
    for (function, replica_ms, replica_cpu_ms) in replicas {
        merged.extend(std::iter::from_fn(|| invoked.next_if(|s| s.function < function)));
        let mut s = match invoked.next_if(|s| s.function == function) {
            Some(s) => s,
            None => UsageSummary { function, ..UsageSummary::default() },
        };
        s.replica_ms = replica_ms;
        s.replica_cpu_ms = replica_cpu_ms;
        merged.push(s);
    }
    merged.extend(invoked);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's steps, one per line, e.g. `SEARCH usage USING INDEX usage_function (function=?)`.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = [rusqlite::types::Value::Null, rusqlite::types::Value::Integer(10)];
        let n = stmt.parameter_count();
        stmt.query_map(rusqlite::params_from_iter(&values[..n]), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn tables(plan: &[String]) -> Vec<&str> {
        let steps = plan.iter().filter(|step| step.starts_with("SCAN") || step.starts_with("SEARCH"));
        steps.filter_map(|step| step.split_whitespace().nth(1)).collect()
    }

    #[test]
    fn reports_read_rollups_and_walk_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        for function in [None, Some("hello")] {
            let filter = filter(function);
            // Totals never touch the raw table, whatever its size.
            let summary = plan(&conn, &summary_sql(filter));
            assert!(tables(&summary).iter().all(|t| *t == "usage_hourly_v2"), "{summary:?}");
            assert!(summary.iter().all(|step| !step.contains("TEMP B-TREE")), "{summary:?}");
            // Replica time is summed off the covering index, in function order.
            let replicas = plan(&conn, &replica_sql(filter));
            assert!(tables(&replicas).iter().all(|t| *t == "replica_usage"), "{replicas:?}");
            assert!(replicas.iter().all(|step| step.contains("COVERING INDEX replica_usage_function")), "{replicas:?}");
            assert!(replicas.iter().all(|step| !step.contains("TEMP B-TREE")), "{replicas:?}");
            // Records come off an index in id order: no scan-and-sort of the raw table.
            let records = plan(&conn, &records_sql(filter));
            assert!(records.iter().all(|step| !step.contains("TEMP B-TREE")), "{records:?}");
            if function.is_some() {
                assert!(records.iter().any(|step| step.contains("INDEX usage_function")), "{records:?}");
            }
        }
    }

    #[test]
    fn replica_only_functions_are_merged_in_order() {
        let invoked = |f: &str, n: u64| UsageSummary { function: f.into(), invocations: n, ..UsageSummary::default() };
        let merged = merge_replicas(
            vec![invoked("b", 1), invoked("d", 2)],
            vec![("a".into(), 10, 1), ("b".into(), 20, 2), ("c".into(), 30, 3), ("e".into(), 40, 4)],
        );
        let got: Vec<_> = merged.iter().map(|s| (s.function.as_str(), s.invocations, s.replica_ms)).collect();
        assert_eq!(got, [("a", 0, 10), ("b", 1, 20), ("c", 0, 30), ("d", 2, 0), ("e", 0, 40)]);
    }
}
