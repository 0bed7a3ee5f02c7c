//! Every metric idmesh exports, named once: its Prometheus name, kind, labels
//! and help text. Crates record through these constants (with the `metrics`
//! macros); `idm-telemetry` describes the whole catalog when it installs the
//! recorder, so every family a service exports carries `# HELP`, and every
//! histogram gets real buckets. docs/OPERATIONS.md lists them and what to
//! alert on.
//!
//! Defined here, not in telemetry, so the bus, db and crypto crates can name
//! their metrics without depending on it (as with [`crate::Probe`]).

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Seconds, with the bucket layout of `idm-telemetry` (names end in
    /// `_duration_seconds`).
    Histogram,
}

#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels,
        help,
    }
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        labels,
        help,
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        labels,
        help,
    }
}

// --- every service ------------------------------------------------------------

pub const BUILD_INFO: Metric = gauge(
    "idm_build_info",
    &["service", "version", "commit"],
    "Always 1; the running service's version and git commit (unknown unless the build set IDM_GIT_COMMIT).",
);
pub const HTTP_REQUEST_DURATION: Metric = histogram(
    "idm_http_request_duration_seconds",
    &["method", "route", "status", "outcome"],
    "HTTP requests by matched route, status and outcome (ok or the error code), with their latency.",
);
pub const BUS_CLIENT_DURATION: Metric = histogram(
    "idm_bus_client_duration_seconds",
    &["subject", "outcome"],
    "NATS requests this service made, by subject (service.op or store.region.op) and outcome (ok or the error code; upstream_unavailable for a timeout or no responder).",
);
pub const BUS_SERVER_DURATION: Metric = histogram(
    "idm_bus_server_duration_seconds",
    &["subject", "caller", "outcome"],
    "NATS requests this service answered, by subject, calling identity and outcome.",
);
pub const BUS_EXPIRED: Metric = counter(
    "idm_bus_expired_total",
    &["subject", "caller"],
    "NATS requests dropped before their handler ran because the caller's deadline (idm-deadline-ms) had passed.",
);
pub const BUS_MESSAGE_DURATION: Metric = histogram(
    "idm_bus_message_duration_seconds",
    &["consumer", "outcome"],
    "Broadcasts and work-queue messages this service consumed, by consumer (topic or queue) and outcome.",
);
pub const DB_POOL_CONNECTIONS: Metric = gauge(
    "idm_db_pool_connections",
    &["pool", "state"],
    "PostgreSQL connections of a pool by state (in_use, idle), at scrape time.",
);
pub const DB_POOL_MAX_CONNECTIONS: Metric = gauge(
    "idm_db_pool_max_connections",
    &["pool"],
    "The most connections a pool opens.",
);
pub const DB_POOL_WAITING: Metric = gauge(
    "idm_db_pool_waiting",
    &["pool"],
    "Callers waiting for a pooled connection, at scrape time.",
);
pub const DB_POOL_WAIT_DURATION: Metric = histogram(
    "idm_db_pool_wait_duration_seconds",
    &["pool", "outcome"],
    "Time to get a pooled connection (outcome ok; error after the wait: 5 s for a busy pool, 2 s for a first connection; refused at once while the database was unreachable moments ago).",
);

// --- user-store -----------------------------------------------------------------

pub const ARGON2_DURATION: Metric = histogram(
    "idm_store_argon2_duration_seconds",
    &[],
    "Argon2id computations (hash or verify), CPU time on the blocking pool without the queue wait.",
);
pub const ARGON2_QUEUE_DEPTH: Metric = gauge(
    "idm_store_argon2_queue_depth",
    &[],
    "Password hashes waiting for a free hashing slot (STORE_MAX_PARALLEL_HASHES).",
);

pub const STORE_SHED: Metric = counter(
    "idm_store_shed_total",
    &["resource"],
    "Store requests refused at once (503 overloaded) because their issuer already held its fair share of a resource (argon2: hashing workers and queue; db: connections).",
);

pub const STORE_SCHEMA_BEHIND: Metric = counter(
    "idm_store_schema_behind_total",
    &[],
    "Store requests refused (503 region_unavailable) because their issuer's schema is behind the version this build needs; run `idm-user-store migrate`.",
);

// --- edge-guard -----------------------------------------------------------------

pub const EDGE_RATE_LIMIT_DECISIONS: Metric = counter(
    "idm_edge_rate_limit_decisions_total",
    &["limit", "decision"],
    "WAF limit checks by limit (backend, client, verification, key_lookup, recipient, quota, in_flight) and decision (allowed, limited, banned).",
);
pub const EDGE_WAF_REJECTIONS: Metric = counter(
    "idm_edge_waf_rejections_total",
    &["reason"],
    "Requests the WAF refused, by reason.",
);
pub const EDGE_BANS: Metric = counter(
    "idm_edge_bans_total",
    &[],
    "IP bans issued by this replica after repeated rate-limit breaches.",
);
pub const EDGE_BAN_TABLE_FULL: Metric = counter(
    "idm_edge_ban_table_full_total",
    &[],
    "Bans not kept because the issuer's ban table was full (EDGE_MAX_BANS_PER_ISSUER).",
);
pub const EDGE_KEY_LOOKUPS: Metric = counter(
    "idm_edge_key_lookups_total",
    &[],
    "API-key cache misses that were looked up at the account service.",
);
pub const EDGE_REDIS_FALLBACK: Metric = gauge(
    "idm_edge_redis_fallback",
    &["redis"],
    "1 while the WAF keeps its rate state in this replica's memory because Redis is slow or down.",
);
pub const EDGE_REDIS_FALLBACK_SWITCHES: Metric = counter(
    "idm_edge_redis_fallback_total",
    &["redis"],
    "Switches of the WAF to its in-memory limiter.",
);
pub const EDGE_REVOCATIONS: Metric = gauge(
    "idm_edge_revocations",
    &[],
    "Revoked sessions this replica remembers.",
);
pub const EDGE_REVOCATIONS_SHED: Metric = counter(
    "idm_edge_revocations_shed_total",
    &[],
    "Revocations that did not fit EDGE_REVOCATION_CAPACITY (their issuers get 503 until there is room).",
);
pub const EDGE_REVOCATION_REGIONS_LOADED: Metric = gauge(
    "idm_edge_revocation_regions_loaded",
    &[],
    "Regions whose revocations this replica has loaded since its last bus (re)connect (8 when current; sessions of the others get 503).",
);
pub const EDGE_SESSION_LIFETIME_REFUSALS: Metric = counter(
    "idm_edge_session_lifetime_refusals_total",
    &[],
    "Session tokens refused because they outlive the issuer's session lifetime.",
);
pub const EDGE_REFRESHES: Metric = counter(
    "idm_edge_refreshes_total",
    &["path"],
    "Refresh-token rotations answered, by path: store (rotated at the regional store and signed by this edge, one bus hop) or session (through the session service: a ring from a session service of an earlier release, or a retry whose successor it sealed).",
);
pub const EDGE_ME_ANSWERS: Metric = counter(
    "idm_edge_me_answers_total",
    &["from"],
    "`GET /v1/client/me` answers, by where they came from: memory (remembered for the session, `EDGE_ME_CACHE_TTL_MS`) or store (asked the session's own regional store).",
);

// --- auth (mail courier) ------------------------------------------------------

pub const MAIL_ENQUEUED: Metric = counter(
    "idm_mail_enqueued_total",
    &[],
    "Messages put on the MAIL work queue.",
);
pub const MAIL_DELIVERIES: Metric = counter(
    "idm_mail_deliveries_total",
    &["outcome"],
    "Mail delivery attempts by outcome: delivered, retried (transport failed; redelivered with back-off) or dropped (cannot be opened or built).",
);

// --- deletion-worker and webhook (named now, recorded when those services do
// the work) ----------------------------------------------------------------------

pub const DELETION_STEPS: Metric = counter(
    "idm_deletion_steps_total",
    &["step", "outcome"],
    "Deletion cascade steps run, by step and outcome (done, failed).",
);
pub const DELETION_STEP_RETRIES: Metric = counter(
    "idm_deletion_step_retries_total",
    &["step"],
    "Deletion steps scheduled for another attempt after a failure.",
);
pub const DELETION_JOBS_STALLED: Metric = gauge(
    "idm_deletion_jobs_stalled",
    &[],
    "Deletion jobs stalled now: a step kept failing past the stall threshold (surfaced, still retried).",
);
pub const WEBHOOK_DELIVERIES: Metric = counter(
    "idm_webhook_deliveries_total",
    &["outcome"],
    "Webhook delivery attempts by outcome: delivered, retried (failed, another attempt is scheduled) or failed (a dead letter: retries exhausted or 410 Gone).",
);
pub const WEBHOOK_DELIVERY_DURATION: Metric = histogram(
    "idm_webhook_delivery_duration_seconds",
    &["outcome"],
    "Time of one webhook delivery attempt, by outcome.",
);
pub const WEBHOOK_ENDPOINTS_DISABLED: Metric = counter(
    "idm_webhook_endpoints_disabled_total",
    &["reason"],
    "Endpoints the webhook service disabled, by reason: gone (410) or failing (for the whole disable period).",
);

pub const SEALED_ROWS_PREVIOUS_KEY: Metric = gauge(
    "idm_sealed_rows_previous_key",
    &["service", "rows"],
    "Sealed rows still under the previous master key after the last re-seal pass (remove the previous key at 0).",
);
pub const SEALED_ROWS_UNREADABLE: Metric = gauge(
    "idm_sealed_rows_unreadable",
    &["service", "rows"],
    "Sealed rows no configured master key opens (a lost or wrong key).",
);
pub const SEALED_ROWS_RESEALED: Metric = counter(
    "idm_sealed_rows_resealed_total",
    &["service", "rows"],
    "Sealed rows rewritten under the current master key.",
);

/// The catalog, in the order docs/OPERATIONS.md lists it.
pub const ALL: &[Metric] = &[
    BUILD_INFO,
    HTTP_REQUEST_DURATION,
    BUS_CLIENT_DURATION,
    BUS_SERVER_DURATION,
    BUS_EXPIRED,
    BUS_MESSAGE_DURATION,
    DB_POOL_CONNECTIONS,
    DB_POOL_MAX_CONNECTIONS,
    DB_POOL_WAITING,
    DB_POOL_WAIT_DURATION,
    ARGON2_DURATION,
    ARGON2_QUEUE_DEPTH,
    STORE_SHED,
    STORE_SCHEMA_BEHIND,
    EDGE_RATE_LIMIT_DECISIONS,
    EDGE_WAF_REJECTIONS,
    EDGE_BANS,
    EDGE_BAN_TABLE_FULL,
    EDGE_KEY_LOOKUPS,
    EDGE_REDIS_FALLBACK,
    EDGE_REDIS_FALLBACK_SWITCHES,
    EDGE_REVOCATIONS,
    EDGE_REVOCATIONS_SHED,
    EDGE_REVOCATION_REGIONS_LOADED,
    EDGE_SESSION_LIFETIME_REFUSALS,
    EDGE_REFRESHES,
    EDGE_ME_ANSWERS,
    MAIL_ENQUEUED,
    MAIL_DELIVERIES,
    DELETION_STEPS,
    DELETION_STEP_RETRIES,
    DELETION_JOBS_STALLED,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_DURATION,
    WEBHOOK_ENDPOINTS_DISABLED,
    SEALED_ROWS_PREVIOUS_KEY,
    SEALED_ROWS_UNREADABLE,
    SEALED_ROWS_RESEALED,
];

/// A gauge refreshed when `/metrics` is scraped (pool use, for example),
/// rather than on every change. Returns `false` once what it observes is
/// gone, and is then dropped.
pub type ScrapeHook = Box<dyn Fn() -> bool + Send + Sync>;

fn hooks() -> &'static Mutex<Vec<Arc<ScrapeHook>>> {
    static HOOKS: std::sync::OnceLock<Mutex<Vec<Arc<ScrapeHook>>>> = std::sync::OnceLock::new();
    HOOKS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Registers `hook` to run before every scrape of this process's metrics.
pub fn on_scrape(hook: ScrapeHook) {
    if let Ok(mut hooks) = hooks().lock() {
        hooks.push(Arc::new(hook));
    }
}

/// Runs every scrape hook (the telemetry crate's `/metrics` does, before
/// rendering), forgetting those whose subject is gone.
pub fn run_scrape_hooks() {
    // Run outside the lock: a hook may take its own locks.
    let current: Vec<Arc<ScrapeHook>> = match hooks().lock() {
        Ok(hooks) => hooks.clone(),
        Err(_) => return,
    };
    let gone: Vec<Arc<ScrapeHook>> = current.into_iter().filter(|hook| !hook()).collect();
    if gone.is_empty() {
        return;
    }
    if let Ok(mut hooks) = hooks().lock() {
        hooks.retain(|hook| !gone.iter().any(|g| Arc::ptr_eq(g, hook)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_with_the_kind_suffix() {
        let mut seen = std::collections::HashSet::new();
        for metric in ALL {
            assert!(seen.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("idm_"), "{}", metric.name);
            assert!(
                metric
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                metric.name
            );
            assert!(!metric.help.is_empty());
            match metric.kind {
                Kind::Counter => assert!(metric.name.ends_with("_total"), "{}", metric.name),
                Kind::Histogram => {
                    assert!(
                        metric.name.ends_with("_duration_seconds"),
                        "{}",
                        metric.name
                    )
                }
                Kind::Gauge => assert!(!metric.name.ends_with("_total"), "{}", metric.name),
            }
        }
    }

    #[test]
    fn a_hook_whose_subject_is_gone_runs_no_more() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        on_scrape(Box::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 1
        }));
        run_scrape_hooks();
        run_scrape_hooks();
        run_scrape_hooks();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
