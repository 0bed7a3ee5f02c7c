//! The edge WAF: IP velocity per issuer and route class with strikes and
//! bans, a platform-wide budget of key lookups per IP, the email guard,
//! per-recipient send limits and the monthly send quota. Rate state lives in
//! Redis (under `EDGE_REDIS_PREFIX`), bans in every replica's memory; see
//! docs/EDGE.md for the design.

pub(crate) mod admin;
mod bans;
mod email_guard;
mod fallback;
mod hash_shed;
mod in_flight;
mod quota;
mod recipient_key;
#[cfg(test)]
mod redis_tests;
mod velocity;

use idm_bus::{Bus, Events};
use idm_core::plan::RouteLimit;
use idm_core::proto::account::KeyConfig;
use idm_core::waf_policy::{VelocityLimit, MAX_IPV6_PREFIX, MIN_IPV6_PREFIX};
use idm_core::{metric, ApiError, Email, ErrorCode, IssuerId, IssuerPolicy, KeyKind};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use secrecy::SecretString;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use bans::BanView;
pub use fallback::GAUGE as FALLBACK_GAUGE;
pub use in_flight::Ticket;
pub use recipient_key::RecipientKey;

/// `EDGE_*` settings of the WAF that are the platform's, not an issuer's.
#[derive(Debug, Clone)]
pub struct WafConfig {
    /// How long one Redis command may take before the WAF falls back to memory.
    pub redis_timeout: Duration,
    /// Cache misses (key lookups that reach the account service) one client
    /// network may cause per minute, whatever keys it presents.
    pub key_lookups_per_minute: u32,
    /// Bearer token of the ops listener's `/admin/v1/bans` routes; unset
    /// disables them.
    pub operator_token: Option<SecretString>,
    /// Running bans one issuer may hold (in Redis and in each replica's
    /// memory); beyond it breaches are answered 429 without a ban.
    pub max_bans_per_issuer: usize,
    /// Keys the hashes that name recipients in Redis (`EDGE_HASH_KEY`).
    pub recipient_key: RecipientKey,
    /// Requests of one issuer this replica works on at once; past it the
    /// issuer's next request is shed with `503 overloaded` and `Retry-After`.
    pub max_in_flight_per_issuer: usize,
    /// After a store refuses an issuer's password work as over its share,
    /// how long this replica refuses that issuer's password requests itself
    /// (`EDGE_HASH_SHED_MS`; zero: never). See `hash_shed`.
    pub hash_shed_window: Duration,
}

impl Default for WafConfig {
    fn default() -> Self {
        Self {
            redis_timeout: Duration::from_millis(250),
            key_lookups_per_minute: 120,
            operator_token: None,
            max_bans_per_issuer: 10_000,
            recipient_key: RecipientKey::random(),
            max_in_flight_per_issuer: 256,
            hash_shed_window: Duration::from_millis(1000),
        }
    }
}

/// Which limit a route falls under, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Backend,
    Client,
    Verification,
}

impl RouteClass {
    pub const ALL: [RouteClass; 3] = [
        RouteClass::Backend,
        RouteClass::Client,
        RouteClass::Verification,
    ];

    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/v1/client/") {
            RouteClass::Client
        } else if path == "/v1/verifications" || path.starts_with("/v1/verifications/") {
            RouteClass::Verification
        } else {
            RouteClass::Backend
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Backend => "backend",
            RouteClass::Client => "client",
            RouteClass::Verification => "verification",
        }
    }

    /// Routes a browser may call (and so the only ones CORS answers for).
    pub fn is_browser_facing(self) -> bool {
        !matches!(self, RouteClass::Backend)
    }
}

impl std::fmt::Display for RouteClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network `ip` counts as for `key`'s issuer. The prefix is clamped as
/// the policy is validated, so a policy stored before that validation cannot
/// make every IPv6 address a network of its own.
fn issuer_network(key: &KeyConfig, ip: IpAddr) -> IpNet {
    network(
        ip,
        key.policy
            .waf
            .ipv6_prefix_len
            .clamp(MIN_IPV6_PREFIX, MAX_IPV6_PREFIX),
    )
}

/// The network a client is limited and banned as: its IPv4 address, or its
/// IPv6 address cut to `v6_prefix` bits (an attacker owns a whole /64).
pub fn network(ip: IpAddr, v6_prefix: u8) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::from(v4)),
            None => Ipv6Net::new(v6, v6_prefix.min(128))
                .map(|n| IpNet::V6(n.trunc()))
                .unwrap_or(IpNet::V6(Ipv6Net::from(v6))),
        },
    }
}

fn retry_details(retry_after: Duration) -> serde_json::Value {
    serde_json::json!({ "retry_after": retry_after.as_secs().max(1) })
}

fn rejected(reason: &'static str) {
    metrics::counter!(metric::EDGE_WAF_REJECTIONS.name, "reason" => reason).increment(1);
}

/// One limit checked: `decision` is `allowed`, `limited` or `banned`.
fn decided(limit: &'static str, decision: &'static str) {
    metrics::counter!(metric::EDGE_RATE_LIMIT_DECISIONS.name, "limit" => limit, "decision" => decision)
        .increment(1);
}

fn banned(remaining: Duration) -> ApiError {
    rejected("ip_banned");
    ApiError::new(
        ErrorCode::IpBanned,
        "this address is temporarily banned after repeated rate-limit breaches",
    )
    .with_details(retry_details(remaining))
}

fn rate_limited(message: &str, retry_after: Duration) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, message).with_details(retry_details(retry_after))
}

/// How often a replica checks whether Redis came back empty.
const WRITE_BACK_EVERY: Duration = Duration::from_secs(2);

/// Redis is a cache of the WAF's state, and it may come back from a restart
/// empty (nothing on disk). Every `WRITE_BACK_EVERY` a replica looks for the
/// marker `<prefix>waf:loaded` (on a Redis Cluster one marker per primary,
/// each stored on it, since one node may restart alone); when one is missing
/// (a fresh or restarted Redis) it writes back what it holds that must
/// outlive Redis (the running bans, this month's send counts as floors; both
/// idempotent), then sets the markers. Rate windows and strikes are not
/// written back: losing them costs one window.
fn spawn_write_back(
    redis: Arc<fallback::RedisLink>,
    bans: Arc<bans::Bans>,
    quota: Arc<quota::Quota>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let marker = redis.key("loaded");
        loop {
            let markers = &redis
                .run(|mut conn| {
                    let marker = marker.clone();
                    async move {
                        let keys = conn.per_node_keys(&marker).await?;
                        let mut missing = false;
                        for key in &keys {
                            missing |= !redis::cmd("EXISTS")
                                .arg(key)
                                .query_async::<bool>(&mut conn)
                                .await?;
                        }
                        Ok((keys, missing))
                    }
                })
                .await;
            if let Some((keys, true)) = markers {
                let written = (bans.write_back().await, quota.write_back().await);
                if let (Some(bans), Some(counters)) = written {
                    let set = redis
                        .run(|mut conn| async move {
                            let now = idm_core::now().unix_timestamp();
                            for key in keys {
                                redis::cmd("SET")
                                    .arg(key)
                                    .arg(now)
                                    .query_async::<()>(&mut conn)
                                    .await?;
                            }
                            Ok(())
                        })
                        .await;
                    if set.is_some() && (bans > 0 || counters > 0) {
                        tracing::warn!(
                            bans,
                            counters,
                            "Redis came back empty: running bans and send counts written back"
                        );
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(WRITE_BACK_EVERY) => {}
            }
        }
    })
}

pub struct Waf {
    redis: Arc<fallback::RedisLink>,
    velocity: Arc<velocity::Velocity>,
    bans: Arc<bans::Bans>,
    quota: Arc<quota::Quota>,
    in_flight: Arc<in_flight::InFlight>,
    hash_shed: hash_shed::HashShed,
    config: WafConfig,
}

impl Waf {
    /// Connects to Redis (or starts in fallback), loads running bans and
    /// listens for ban broadcasts. Returns the background tasks.
    pub async fn start(
        redis_url: &str,
        redis_prefix: &str,
        config: WafConfig,
        bus: &Bus,
        shutdown: CancellationToken,
    ) -> Result<(Self, Vec<tokio::task::JoinHandle<()>>), crate::Error> {
        email_guard::warm();
        let redis = Arc::new(
            fallback::RedisLink::connect(redis_url, redis_prefix, config.redis_timeout).await?,
        );
        let events = Events::ensure(bus).await?;
        let velocity = Arc::new(velocity::Velocity::new(Arc::clone(&redis)));
        let bans = Arc::new(bans::Bans::new(
            Arc::clone(&redis),
            Arc::clone(&velocity),
            config.max_bans_per_issuer,
            bus.clone(),
            events,
        ));
        // Subscribe before loading, so a ban issued in between is not missed.
        let mut tasks = bans.listen(shutdown.clone()).await?;
        let loaded = bans.load().await;
        tracing::info!(loaded, "running bans loaded");
        let quota = Arc::new(quota::Quota::new(Arc::clone(&redis)));
        let hand_back = Arc::clone(&quota);
        tasks.push(redis.spawn_recovery(shutdown.clone(), move |conn| {
            let quota = Arc::clone(&hand_back);
            async move { quota.hand_back(conn).await }
        }));
        tasks.push(spawn_write_back(
            Arc::clone(&redis),
            Arc::clone(&bans),
            Arc::clone(&quota),
            shutdown,
        ));
        Ok((
            Self {
                velocity,
                redis,
                bans,
                quota,
                in_flight: Arc::new(in_flight::InFlight::new(config.max_in_flight_per_issuer)),
                hash_shed: hash_shed::HashShed::new(config.hash_shed_window),
                config,
            },
            tasks,
        ))
    }

    pub fn config(&self) -> &WafConfig {
        &self.config
    }

    /// Whether WAF state is being kept in this replica's memory right now.
    pub fn in_fallback(&self) -> bool {
        self.redis.is_degraded()
    }

    /// Strict syntax, the issuer's deny list, its allow list, then the
    /// disposable-domain list. `invalid_email` or `disposable_email`.
    pub fn check_email(&self, policy: &IssuerPolicy, raw: &str) -> Result<Email, ApiError> {
        email_guard::check_email(&policy.waf, raw)
    }

    /// Before queueing an email to `email`: the per-recipient limit (on the
    /// normalised address, so `a.b+1@gmail.com` and `ab@googlemail.com`
    /// share one budget) and then the account's monthly quota.
    pub async fn allow_send(&self, key: &KeyConfig, email: &Email) -> Result<(), ApiError> {
        let policy = &key.policy.waf;
        // Redis holds a keyed hash of the recipient, never the address.
        let recipient = self.config.recipient_key.hash(&format!(
            "{}\n{}",
            key.issuer_id,
            email.normalized_for_limits()
        ));
        // The issuer's own limit, capped by its account's plan.
        let limit = key.plan.effective_recipient(policy);
        let decision = self
            .velocity
            .hit(&format!("rcpt:{}:{recipient}", key.issuer_id), limit)
            .await;
        decided(
            "recipient",
            if decision.allowed {
                "allowed"
            } else {
                "limited"
            },
        );
        if !decision.allowed {
            rejected("recipient_limit");
            return Err(rate_limited(
                "too many emails were sent to this address recently",
                decision.retry_after,
            ));
        }
        // The account's quota of the issuer's mode: test sends never use
        // live quota.
        if let Err(renews_in) = self
            .quota
            .take(
                &key.account_id,
                key.issuer_mode,
                key.plan.effective_quota(key.issuer_mode, policy),
            )
            .await
        {
            decided("quota", "limited");
            rejected("quota_exceeded");
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                "the account's monthly email quota is used up",
            )
            .with_details(retry_details(renews_in)));
        }
        decided("quota", "allowed");
        Ok(())
    }

    /// Per request, once the key is known: a running ban (memory only), then
    /// the issuer's velocity limit for the route class, recording a strike
    /// (and maybe a ban) on a breach by a restricted-key caller (or by a
    /// secret-key caller when the policy says so).
    pub async fn guard(
        &self,
        key: &KeyConfig,
        class: RouteClass,
        ip: IpAddr,
    ) -> Result<(), ApiError> {
        let policy = &key.policy.waf;
        let net = issuer_network(key, ip);
        if let Some(refusal) = self.ban_of(key, class, net) {
            return Err(refusal);
        }
        // The issuer's own limit, capped by its account's plan (a limit set
        // before the operator lowered the plan is not trusted).
        let limit = key.plan.effective_velocity(
            policy,
            match class {
                RouteClass::Backend => RouteLimit::Backend,
                RouteClass::Client => RouteLimit::Client,
                RouteClass::Verification => RouteLimit::Verification,
            },
        );
        let decision = self
            .velocity
            .hit(&format!("v:{class}:{}:{net}", key.issuer_id), limit)
            .await;
        if decision.allowed {
            decided(class.as_str(), "allowed");
            return Ok(());
        }
        let strikes = key.kind == KeyKind::Restricted || policy.secret_key_strikes;
        let window = Duration::from_secs(u64::from(limit.window_seconds));
        if strikes {
            if let Some(ban) = self.bans.strike(key, class, net, window).await {
                decided(class.as_str(), "banned");
                return Err(banned(ban));
            }
        }
        decided(class.as_str(), "limited");
        rejected("rate_limited");
        Err(rate_limited(
            "too many requests from this address",
            decision.retry_after,
        ))
    }

    /// Whether any ban runs at all: the ban gate asks before it works out
    /// the client's address, so that a request costs one atomic load then.
    pub fn bans_running(&self) -> bool {
        self.bans.running()
    }

    /// Whether some issuer bans `ip`'s network: asked before any key, by
    /// the ban gate, in memory and almost always answered by one atomic load.
    pub fn may_be_banned(&self, ip: IpAddr) -> bool {
        self.bans.may_ban(ip)
    }

    /// The refusal `key`'s issuer's running ban on `ip` earns (counted as
    /// [`Waf::guard`] counts it), if there is one.
    pub fn banned(&self, key: &KeyConfig, class: RouteClass, ip: IpAddr) -> Option<ApiError> {
        self.ban_of(key, class, issuer_network(key, ip))
    }

    fn ban_of(&self, key: &KeyConfig, class: RouteClass, net: IpNet) -> Option<ApiError> {
        let remaining = self.bans.check(&key.issuer_id, net)?;
        decided(class.as_str(), "banned");
        Some(banned(remaining))
    }

    /// After [`Waf::guard`]: a place among the issuer's requests in flight
    /// on this replica, held until the response (`503 overloaded` with
    /// `Retry-After` when the issuer has too many already).
    pub fn admit(&self, key: &KeyConfig) -> Result<Ticket, ApiError> {
        match self.in_flight.enter(&key.issuer_id) {
            Ok(ticket) => {
                decided("in_flight", "allowed");
                Ok(ticket)
            }
            Err(shed) => {
                decided("in_flight", "limited");
                rejected("in_flight");
                Err(shed)
            }
        }
    }

    /// Password work (sign-in, sign-up) of an issuer its store has just
    /// refused is refused here for a moment, before any bus call
    /// (`hash_shed`). Run `call` and note its outcome.
    pub async fn password_work<T, F>(&self, key: &KeyConfig, call: F) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        if let Err(shed) = self.hash_shed.check(&key.issuer_id) {
            decided("hash_shed", "limited");
            rejected("hash_shed");
            return Err(shed);
        }
        let outcome = call.await;
        self.hash_shed.note(&key.issuer_id, &outcome);
        outcome
    }

    /// Before a key-cache miss reaches the account service: a platform-wide
    /// budget per client network, so made-up (checksum-valid) keys cannot
    /// turn into a stream of database reads.
    pub async fn allow_key_lookup(&self, ip: IpAddr) -> Result<(), ApiError> {
        let net = network(ip, 64);
        let limit = VelocityLimit::new(self.config.key_lookups_per_minute.max(1), 60);
        let decision = self.velocity.hit(&format!("lookup:{net}"), limit).await;
        if decision.allowed {
            decided("key_lookup", "allowed");
            Ok(())
        } else {
            decided("key_lookup", "limited");
            rejected("key_lookups");
            Err(rate_limited(
                "too many unknown API keys from this address",
                decision.retry_after,
            ))
        }
    }

    pub async fn lift(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> usize {
        self.bans.lift(ip, issuer).await
    }

    pub fn bans(&self) -> Vec<BanView> {
        self.bans.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        assert_eq!(
            network(ip("2001:db8:1:2:aaaa::1"), 64),
            network(ip("2001:db8:1:2:ffff::9"), 64)
        );
        assert_ne!(
            network(ip("2001:db8:1:2::1"), 64),
            network(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(
            network(ip("2001:db8:1:2::1"), 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            network(ip("::ffff:198.51.100.7"), 64).to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            network(ip("198.51.100.7"), 64).to_string(),
            "198.51.100.7/32"
        );
    }

    #[test]
    fn route_classes_follow_the_path() {
        assert_eq!(
            RouteClass::of_path("/v1/client/sign_in"),
            RouteClass::Client
        );
        assert_eq!(
            RouteClass::of_path("/v1/verifications"),
            RouteClass::Verification
        );
        assert_eq!(
            RouteClass::of_path("/v1/verifications/check"),
            RouteClass::Verification
        );
        assert_eq!(
            RouteClass::of_path("/v1/verificationsx"),
            RouteClass::Backend
        );
        assert_eq!(RouteClass::of_path("/v1/clientx"), RouteClass::Backend);
        assert_eq!(RouteClass::of_path("/v1/users"), RouteClass::Backend);
    }
}
