//! Usage reports and bills: per-function totals, usage by hour, day or function, and bills,
//! all from the hourly rollups (their cost grows with hours × functions, not with invocations), replica time summed per function off a covering index (its
//! cost grows with replica lifetimes, not invocations), and the newest raw records. The JSON keeps
//! the field names of the reports before the ledger had its own crate; every struct reads with
//! defaults so clients tolerate fields added or removed later.

use crate::pricing::{Bill, Metered, Pricing, ROUNDING};
use crate::record::{lenient_outcome, lenient_runtime, lenient_source};
use crate::time::{Period, ceil_hour, floor_hour, format_time};
use crate::{Outcome, Runtime, Source};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How [`UsageReport::series`] groups usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One bucket per UTC hour with usage.
    Hour,
    /// One bucket per UTC day with usage.
    Day,
    /// One bucket per function.
    Function,
}

impl GroupBy {
    /// `hour`, `day` or `function`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "hour" => Some(GroupBy::Hour),
            "day" => Some(GroupBy::Day),
            "function" => Some(GroupBy::Function),
            _ => None,
        }
    }
}

/// What a usage report covers. Rollups are hourly, so the range is widened to whole hours:
/// `from` rounds down and `to` up to an hour boundary, and an hour counts when it starts in
/// `[from, to)`; records are those that started in that widened range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this function (its id: `name`, or `namespace/name`); `None` for all.
    pub function: Option<String>,
    /// Only this namespace; `None` for all.
    pub namespace: Option<String>,
    /// From this Unix time in ms (inclusive, rounded down to the hour); `None`: the beginning.
    pub from_ms: Option<u64>,
    /// To this Unix time in ms (exclusive, rounded up to the hour); `None`: no end.
    pub to_ms: Option<u64>,
    /// Also group usage by hour, day or function ([`UsageReport::series`]).
    pub by: Option<GroupBy>,
    /// How many of the newest records to include (0: totals only).
    pub limit: u32,
}

impl Default for UsageQuery {
    /// Every function, all time, the 100 newest records.
    fn default() -> Self {
        Self { function: None, namespace: None, from_ms: None, to_ms: None, by: None, limit: 100 }
    }
}

/// Totals for one function, over all time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageSummary {
    /// The function's id (`name`, or `namespace/name`).
    pub function: String,
    /// Its namespace.
    pub namespace: String,
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
    /// Invocations billed as requests (all but those refused before running).
    pub billed_requests: u64,
    /// Σ wall time rounded up to the millisecond, over billed invocations.
    pub billed_ms: u64,
    /// Σ configured memory (KiB, rounded up) × billed ms: GB-seconds × 1 048 576 000.
    pub billed_kib_ms: u64,
    /// Thread CPU time of invocations summed, microseconds.
    pub cpu_us: u64,
    /// Outbound HTTP bytes (sent and received) summed.
    pub outbound_bytes: u64,
}

/// Usage of one hour, day or function ([`UsageReport::series`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageBucket {
    /// The bucket's first instant (hour and day buckets), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The same as Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// The namespace (function buckets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The function's id (function buckets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Invocations metered.
    pub invocations: u64,
    /// Invocations that had to start an instance.
    pub cold_starts: u64,
    /// Invocations with outcome `ok`.
    pub ok: u64,
    /// Invocations with any other outcome.
    pub failed: u64,
    /// Wall time summed, microseconds.
    pub wall_us: u64,
    /// Invocations billed as requests.
    pub billed_requests: u64,
    /// Σ wall time rounded up to the millisecond, over billed invocations.
    pub billed_ms: u64,
    /// Σ configured memory (KiB, rounded up) × billed ms.
    pub billed_kib_ms: u64,
    /// Thread CPU time summed, microseconds.
    pub cpu_us: u64,
    /// Request body bytes summed.
    pub request_bytes: u64,
    /// Response body bytes summed.
    pub response_bytes: u64,
    /// Outbound HTTP bytes summed.
    pub outbound_bytes: u64,
    /// Highest peak memory of any invocation.
    pub peak_memory_bytes_max: u64,
}

/// One stored usage record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredUsage {
    /// Ledger id; larger is newer.
    pub id: u64,
    /// The function's id (`name`, or `namespace/name`).
    pub function: String,
    /// Its namespace.
    pub namespace: String,
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
    /// The memory the function was configured with, bytes (0 in records from before v5).
    pub memory_bytes: u64,
    /// Thread CPU time, microseconds (0 where not metered).
    pub cpu_us: u64,
    /// Outbound HTTP bytes, sent and received.
    pub outbound_bytes: u64,
}

impl Default for StoredUsage {
    fn default() -> Self {
        Self {
            id: 0,
            function: String::new(),
            namespace: crate::DEFAULT_NAMESPACE.into(),
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
            memory_bytes: 0,
            cpu_us: 0,
            outbound_bytes: 0,
        }
    }
}

/// Totals per function (ordered by name), usage grouped if asked, and the newest records
/// (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageReport {
    /// The range covered, widened to the hour (RFC 3339), when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Its end (exclusive), when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// One entry per function with usage (invocations or replica time), ordered by function.
    pub summary: Vec<UsageSummary>,
    /// Usage by hour, day or function (`UsageQuery::by`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<UsageBucket>,
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

/// `?N IS NULL` keeps the parameter list fixed while letting SQLite use the function indexes
/// when there is a filter (an `OR` of both would defeat them). Parameters: `?1` function,
/// `?2` namespace, `?3`/`?4` the range in ms (records: `?5` the limit).
/// `column` is the time column the range applies to (`hour_ms`, `start_ms`). Without a range
/// the condition stays off the plan, so totals still read the function index in order.
fn filter(query: &UsageQuery, column: &str) -> String {
    let function = if query.function.is_some() { "function = ?1" } else { "?1 IS NULL" };
    let namespace = if query.namespace.is_some() { "namespace = ?2" } else { "?2 IS NULL" };
    let range = if query.from_ms.is_some() || query.to_ms.is_some() {
        format!("{column} >= ?3 AND {column} < ?4")
    } else {
        "?3 <= ?4".to_string()
    };
    format!("{function} AND {namespace} AND {range}")
}

/// The range as bound: whole hours, `[from, to)`.
fn range(query: &UsageQuery) -> (i64, i64) {
    let from = floor_hour(query.from_ms.unwrap_or(0));
    let to = query.to_ms.map_or(i64::MAX as u64, ceil_hour);
    (from.min(i64::MAX as u64) as i64, to.min(i64::MAX as u64) as i64)
}

/// Totals per function, source and runtime, from the rollups only. Over every function and all
/// time, a scan and a sort of the rollups beats walking the function index (a table lookup per
/// rollup row): twice as fast at 72,000 rollup rows.
fn summary_sql(query: &UsageQuery, filter: &str) -> String {
    let everything = query.function.is_none() && query.from_ms.is_none() && query.to_ms.is_none();
    let table = if everything { "usage_hourly_v3 NOT INDEXED" } else { "usage_hourly_v3" };
    format!(
        "SELECT function, source, runtime, SUM(invocations), SUM(cold_starts), SUM(ok), SUM(failed), SUM(wall_us),
                SUM(request_bytes), SUM(response_bytes), MAX(peak_memory_bytes_max), SUM(billed_requests),
                SUM(billed_ms), SUM(billed_kib_ms), SUM(cpu_us), SUM(outbound_bytes)
         FROM {table} WHERE {filter}
         GROUP BY function, source, runtime ORDER BY function, source, runtime"
    )
}

/// Usage grouped by hour, day or function, from the rollups only: (start_ms, namespace,
/// function, sums...).
fn series_sql(filter: &str, by: GroupBy) -> String {
    let (key, group) = match by {
        GroupBy::Hour => ("hour_ms, NULL, NULL", "hour_ms"),
        GroupBy::Day => ("hour_ms / 86400000 * 86400000, NULL, NULL", "1"),
        GroupBy::Function => ("NULL, namespace, function", "namespace, function"),
    };
    format!(
        "SELECT {key}, SUM(invocations), SUM(cold_starts), SUM(ok), SUM(failed), SUM(wall_us), SUM(billed_requests),
                SUM(billed_ms), SUM(billed_kib_ms), SUM(cpu_us), SUM(request_bytes), SUM(response_bytes),
                SUM(outbound_bytes), MAX(peak_memory_bytes_max)
         FROM usage_hourly_v3 WHERE {filter}
         GROUP BY {group} ORDER BY {group}"
    )
}

/// Replica time (clipped to the range) and CPU time (of replicas that overlap it) per
/// function, off the covering index on (function, start_ms, end_ms, cpu_ms): the table itself
/// is never read. An end before its start counts as no time. The table has no namespace
/// column: it is the function id's prefix.
fn replica_sql(query: &UsageQuery) -> String {
    let function = if query.function.is_some() { "function = ?1" } else { "?1 IS NULL" };
    let namespace = if query.namespace.is_some() {
        "(CASE WHEN instr(function, '/') > 0 THEN substr(function, 1, instr(function, '/') - 1) ELSE 'default' END) = ?2"
    } else {
        "?2 IS NULL"
    };
    format!(
        "SELECT function, SUM(MAX(MIN(end_ms, ?4) - MAX(start_ms, ?3), 0)), SUM(cpu_ms)
         FROM replica_usage WHERE {function} AND {namespace} AND end_ms > ?3 AND start_ms < ?4
         GROUP BY function ORDER BY function"
    )
}

/// The newest raw records, walking an index backwards.
fn records_sql(filter: &str) -> String {
    format!(
        "SELECT id, function, revision, source, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                request_bytes, response_bytes, status, trigger, event_id, runtime, namespace, memory_bytes, cpu_us,
                outbound_bytes
         FROM usage WHERE {filter} ORDER BY id DESC LIMIT ?5"
    )
}

pub(crate) fn report(conn: &mut Connection, query: &UsageQuery) -> rusqlite::Result<UsageReport> {
    let hours = filter(query, "hour_ms");
    let (from, to) = range(query);
    let params = params![query.function, query.namespace, from, to];
    // One read transaction: totals, series and records come from the same snapshot.
    let tx = conn.transaction()?;
    let mut summary: Vec<UsageSummary> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&summary_sql(query, &hours))?;
        let mut rows = stmt.query(params)?;
        while let Some(r) = rows.next()? {
            let function: String = r.get(0)?;
            if summary.last().is_none_or(|s| s.function != function) {
                let namespace = crate::namespace_of(&function).to_string();
                summary.push(UsageSummary { function, namespace, ..UsageSummary::default() });
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
            s.billed_requests += u64_at(r, 11)?;
            s.billed_ms = s.billed_ms.saturating_add(u64_at(r, 12)?);
            s.billed_kib_ms = s.billed_kib_ms.saturating_add(u64_at(r, 13)?);
            s.cpu_us = s.cpu_us.saturating_add(u64_at(r, 14)?);
            s.outbound_bytes = s.outbound_bytes.saturating_add(u64_at(r, 15)?);
        }
    }
    let series = match query.by {
        None => Vec::new(),
        Some(by) => {
            let mut stmt = tx.prepare_cached(&series_sql(&hours, by))?;
            stmt.query_map(params, |r| {
                let start_ms: Option<i64> = r.get(0)?;
                Ok(UsageBucket {
                    start: start_ms.map(|ms| format_time(ms as u64)),
                    start_ms: start_ms.map(|ms| ms as u64),
                    namespace: r.get(1)?,
                    function: r.get(2)?,
                    invocations: u64_at(r, 3)?,
                    cold_starts: u64_at(r, 4)?,
                    ok: u64_at(r, 5)?,
                    failed: u64_at(r, 6)?,
                    wall_us: u64_at(r, 7)?,
                    billed_requests: u64_at(r, 8)?,
                    billed_ms: u64_at(r, 9)?,
                    billed_kib_ms: u64_at(r, 10)?,
                    cpu_us: u64_at(r, 11)?,
                    request_bytes: u64_at(r, 12)?,
                    response_bytes: u64_at(r, 13)?,
                    outbound_bytes: u64_at(r, 14)?,
                    peak_memory_bytes_max: u64_at(r, 15)?,
                })
            })?
            .collect::<Result<_, _>>()?
        }
    };
    let replicas: Vec<(String, u64, u64)> = {
        let mut stmt = tx.prepare_cached(&replica_sql(query))?;
        let rows = stmt.query_map(params, |r| Ok((r.get(0)?, u64_at(r, 1)?, u64_at(r, 2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if !replicas.is_empty() {
        summary = merge_replicas(summary, replicas);
    }
    let records = {
        let mut stmt = tx.prepare_cached(&records_sql(&filter(query, "start_ms")))?;
        stmt.query_map(params![query.function, query.namespace, from, to, query.limit], |r| {
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
                namespace: r.get(15)?,
                memory_bytes: u64_at(r, 16)?,
                cpu_us: u64_at(r, 17)?,
                outbound_bytes: u64_at(r, 18)?,
            })
        })?
        .collect::<Result<_, _>>()?
    };
    tx.finish()?;
    let ranged = query.from_ms.is_some() || query.to_ms.is_some();
    Ok(UsageReport {
        from: ranged.then(|| format_time(from as u64)),
        to: ranged.then(|| if to == i64::MAX { "never".into() } else { format_time(to as u64) }),
        summary,
        series,
        records,
    })
}

/// What each function used in `[from, to)` (hour-aligned), from the rollups: the bill's
/// quantities, ordered by namespace and function.
fn bill_sql(namespace: Option<&str>) -> String {
    let namespace = if namespace.is_some() { "namespace = ?3" } else { "?3 IS NULL" };
    format!(
        "SELECT namespace, function, SUM(billed_requests), SUM(billed_kib_ms), SUM(cpu_us)
         FROM usage_hourly_v3 WHERE hour_ms >= ?1 AND hour_ms < ?2 AND {namespace}
         GROUP BY namespace, function ORDER BY namespace, function"
    )
}

pub(crate) fn bill(
    conn: &mut Connection,
    pricing: &Pricing,
    period: Period,
    namespace: Option<&str>,
) -> rusqlite::Result<Bill> {
    let (from, to) = period.range_ms();
    let usage: Vec<(String, String, Metered)> = {
        let mut stmt = conn.prepare_cached(&bill_sql(namespace))?;
        let rows = stmt.query_map(params![from as i64, to as i64, namespace], |r| {
            let metered = Metered { requests: u64_at(r, 2)?, kib_ms: u64_at(r, 3)?, cpu_us: u64_at(r, 4)? };
            Ok((r.get(0)?, r.get(1)?, metered))
        })?;
        // Functions whose every invocation was refused cost nothing and get no lines.
        rows.filter(|row| row.as_ref().map_or(true, |(_, _, m)| *m != Metered::default())).collect::<Result<_, _>>()?
    };
    let (lines, namespaces, totals) = crate::pricing::price(pricing, &usage);
    Ok(Bill {
        period: period.to_string(),
        from: format_time(from),
        to: format_time(to),
        rounding: ROUNDING.into(),
        lines,
        namespaces,
        totals,
    })
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
    use crate::HOUR_MS;
    use rusqlite::types::Value;

    /// The plan's steps, one per line, e.g. `SEARCH usage USING INDEX usage_function (function=?)`.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = [Value::Null, Value::Null, Value::Integer(0), Value::Integer(i64::MAX), Value::Integer(10)];
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
        for (function, from_ms) in [(None, None), (Some("hello".to_string()), None), (None, Some(HOUR_MS))] {
            let query = UsageQuery { function: function.clone(), from_ms, ..UsageQuery::default() };
            let filter = filter(&query, "hour_ms");
            // Totals never touch the raw table, whatever its size.
            let summary = plan(&conn, &summary_sql(&query, &filter));
            assert!(tables(&summary).iter().all(|t| *t == "usage_hourly_v3"), "{summary:?}");
            if function.is_some() {
                assert!(summary.iter().any(|step| step.contains("INDEX usage_hourly_v3_function")), "{summary:?}");
            }
            if from_ms.is_some() {
                assert!(summary.iter().any(|step| step.contains("hour_ms>?")), "{summary:?}");
            }
            for by in [GroupBy::Hour, GroupBy::Day, GroupBy::Function] {
                let series = plan(&conn, &series_sql(&filter, by));
                assert!(tables(&series).iter().all(|t| *t == "usage_hourly_v3"), "{series:?}");
            }
            // Replica time is summed off the covering index, in function order.
            let replicas = plan(&conn, &replica_sql(&query));
            assert!(tables(&replicas).iter().all(|t| *t == "replica_usage"), "{replicas:?}");
            assert!(replicas.iter().all(|step| step.contains("COVERING INDEX replica_usage_function")), "{replicas:?}");
            assert!(replicas.iter().all(|step| !step.contains("TEMP B-TREE")), "{replicas:?}");
            // Records come off an index in id order: no scan-and-sort of the raw table.
            let records = plan(&conn, &records_sql(&super::filter(&query, "start_ms")));
            assert!(records.iter().all(|step| !step.contains("TEMP B-TREE")), "{records:?}");
            if function.is_some() {
                assert!(records.iter().any(|step| step.contains("INDEX usage_function")), "{records:?}");
            }
        }
        // A bill reads a range of the rollups' primary key (hour first), never the raw table.
        for namespace in [None, Some("team")] {
            let bill = plan(&conn, &bill_sql(namespace));
            assert!(tables(&bill).iter().all(|t| *t == "usage_hourly_v3"), "{bill:?}");
            assert!(bill.iter().any(|step| step.contains("hour_ms>? AND hour_ms<?")), "{bill:?}");
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
