//! The WAF's Redis link, and the switch to per-replica memory while Redis is
//! away.
//!
//! Every WAF operation first asks Redis (with a short timeout, so a hung
//! Redis costs each request at most that long, once). The first failure flips
//! the link into fallback: requests stop trying Redis at all and each module
//! answers from its own in-memory state, the outage is logged once and the
//! `idm_edge_redis_fallback` gauge reads 1. A background task pings Redis
//! every `RECOVERY_INTERVAL`; when it answers, modules hand back what they
//! counted meanwhile (see `quota.rs`) and requests use Redis again.

use idm_cache::Connection;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RECOVERY_INTERVAL: Duration = Duration::from_millis(500);
pub const GAUGE: &str = "idm_edge_redis_fallback";

pub struct RedisLink {
    target: idm_cache::Target,
    manager: RwLock<Option<Connection>>,
    degraded: AtomicBool,
    timeout: Duration,
    /// `host:port` of the Redis in use (never credentials), the gauge's label.
    label: String,
    prefix: String,
}

/// Errors that say Redis itself is unreachable, as opposed to a refused
/// command (which would not get better by switching to memory for good).
fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl RedisLink {
    /// Connects (or starts in fallback when Redis does not answer yet).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, crate::Error> {
        let target = idm_cache::Target::parse(url)
            .map_err(|e| crate::Error::Redis(format!("EDGE_REDIS_URL is not usable: {e}")))?;
        let link = Self {
            target,
            manager: RwLock::new(None),
            degraded: AtomicBool::new(false),
            timeout,
            label: idm_cache::label(url),
            prefix: prefix.to_owned(),
        };
        metrics::gauge!(GAUGE, "redis" => link.label.clone()).set(0.0);
        if let Err(reason) = link.ensure_manager().await {
            link.degrade(&reason);
        }
        Ok(link)
    }

    /// A key under this deployment's prefix: `<prefix>waf:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}waf:{rest}", self.prefix)
    }

    /// `<prefix>waf:{<tag>}<rest>`: keys with one tag share a Redis Cluster
    /// slot, so a script may touch them together.
    pub fn tagged_key(&self, tag: &str, rest: &str) -> String {
        idm_cache::tagged(&format!("{}waf:", self.prefix), tag, rest)
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    fn current(&self) -> Option<Connection> {
        self.manager
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn ensure_manager(&self) -> Result<Connection, String> {
        if let Some(manager) = self.current() {
            return Ok(manager);
        }
        let settings = idm_cache::Settings {
            connection_timeout: self.timeout,
            response_timeout: self.timeout,
            retries: 1,
            max_delay: Duration::from_millis(200),
        };
        let created = tokio::time::timeout(self.timeout * 4, self.target.connect(settings))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        *self.manager.write().unwrap_or_else(|p| p.into_inner()) = Some(created.clone());
        Ok(created)
    }

    fn degrade(&self, reason: &str) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(
                redis = %self.label,
                reason,
                "Redis unavailable: WAF limits fall back to this replica's memory"
            );
            metrics::gauge!(GAUGE, "redis" => self.label.clone()).set(1.0);
            metrics::counter!("idm_edge_redis_fallback_total", "redis" => self.label.clone())
                .increment(1);
        }
    }

    /// Runs `op` against Redis. `None` means "answer from memory": Redis is
    /// in fallback, or this very call failed (which starts the fallback).
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.is_degraded() {
            return None;
        }
        let Some(conn) = self.current() else {
            self.degrade("not connected");
            return None;
        };
        match tokio::time::timeout(self.timeout, op(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) if is_outage(&e) => {
                self.degrade(&e.to_string());
                None
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a WAF Redis command failed; answered from memory");
                None
            }
            Err(_) => {
                self.degrade("a command timed out");
                None
            }
        }
    }

    /// While in fallback, pings Redis every `RECOVERY_INTERVAL`; once it
    /// answers, awaits `hand_back` (modules return what they counted in
    /// memory) and switches requests back to Redis.
    pub fn spawn_recovery<F, Fut>(
        self: &std::sync::Arc<Self>,
        shutdown: CancellationToken,
        hand_back: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let link = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECOVERY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if !link.is_degraded() {
                    continue;
                }
                let Ok(mut conn) = link.ensure_manager().await else {
                    continue;
                };
                let ping = tokio::time::timeout(
                    link.timeout,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await;
                if matches!(ping, Ok(Ok(_))) {
                    hand_back(conn).await;
                    link.degraded.store(false, Ordering::Release);
                    metrics::gauge!(GAUGE, "redis" => link.label.clone()).set(0.0);
                    tracing::info!(redis = %link.label, "Redis is back: WAF limits use it again");
                }
            }
        })
    }
}
