//! The WAF against the real Redis and NATS (no HTTP route sends email yet,
//! so the send limits are driven through `Waf` directly), each test under
//! its own Redis prefix and NATS subject prefix.

use super::*;
use idm_core::proto::account::KeyConfig;
use idm_core::{AccountId, ApiKeyId, KeyKind, KeyMode};

fn redis_url() -> String {
    std::env::var("IDM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn nats_url() -> String {
    std::env::var("IDM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

struct Harness {
    waf: Waf,
    prefix: String,
    bus: Bus,
    redis_url: String,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(redis_url: &str) -> anyhow::Result<Self> {
        Self::start_with(redis_url, WafConfig::default().max_bans_per_issuer).await
    }

    async fn start_with(redis_url: &str, max_bans_per_issuer: usize) -> anyhow::Result<Self> {
        let id = idm_crypto::sha256_hex(&idm_crypto::random_bytes::<8>())[..12].to_owned();
        let prefix = format!("w{id}");
        // The machine's anonymous NATS, as edge-guard (these tests need no platform).
        let basics = idm_core::config::ServiceBasics {
            nats_url: nats_url(),
            nats_stream_replicas: 1,
            nats_stream_placement: Default::default(),
            nats_auth: Default::default(),
            subject_prefix: prefix.clone(),
            http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            request_timeout: Duration::from_secs(5),
        };
        let bus = Bus::connect(&basics, idm_bus::Identity::EdgeGuard).await?;
        let shutdown = CancellationToken::new();
        let config = WafConfig {
            redis_timeout: Duration::from_millis(200),
            max_bans_per_issuer,
            ..WafConfig::default()
        };
        let (waf, _tasks) = Waf::start(
            redis_url,
            &format!("{prefix}:"),
            config,
            &bus,
            shutdown.clone(),
        )
        .await?;
        Ok(Self {
            waf,
            prefix,
            bus,
            redis_url: redis_url.to_owned(),
            shutdown,
        })
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let js = async_nats::jetstream::new(self.bus.client().clone());
        let _ = js
            .delete_stream(idm_bus::events::stream_name(&self.prefix))
            .await;
        if self.redis_url == redis_url() {
            let keys = self.keys().await?;
            if !keys.is_empty() {
                let mut conn = redis::Client::open(self.redis_url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
            }
        }
        Ok(())
    }
}

fn key_with(waf: idm_core::WafPolicy) -> KeyConfig {
    KeyConfig {
        key_id: ApiKeyId::generate(),
        account_id: AccountId::generate(),
        issuer_id: IssuerId::generate(),
        issuer_mode: KeyMode::Live,
        issuer_name: "Tests".into(),
        kind: KeyKind::Restricted,
        mode: KeyMode::Live,
        scopes: Vec::new(),
        allowed_origins: Vec::new(),
        policy: IssuerPolicy {
            waf,
            ..IssuerPolicy::default()
        },
        // Ceilings out of the way: these tests are about the issuer's own
        // limits.
        plan: idm_core::AccountPlan {
            max_backend: VelocityLimit::new(10_000_000, 1),
            max_client: VelocityLimit::new(10_000_000, 1),
            max_verification: VelocityLimit::new(10_000_000, 1),
            max_recipient: VelocityLimit::new(10_000_000, 1),
            monthly_email_quota: u32::MAX,
            test_monthly_email_quota: u32::MAX,
            max_issuers: 10_000,
        },
    }
}

fn email(raw: &str) -> anyhow::Result<Email> {
    Ok(Email::parse(raw)?)
}

#[tokio::test]
async fn sub_addresses_of_one_inbox_share_one_send_budget() -> anyhow::Result<()> {
    let h = Harness::start(&redis_url()).await?;
    let key = key_with(idm_core::WafPolicy {
        recipient_limit: 2,
        recipient_window_seconds: 600,
        ..idm_core::WafPolicy::default()
    });
    h.waf.allow_send(&key, &email("a.b+1@gmail.com")?).await?;
    h.waf
        .allow_send(&key, &email("ab+2@googlemail.com")?)
        .await?;
    for spelling in ["A.B@GMAIL.com", "a.b.+x@googlemail.com", "ab@gmail.com"] {
        let refused = h.waf.allow_send(&key, &email(spelling)?).await.err();
        assert_eq!(
            refused.as_ref().map(|e| e.code),
            Some(ErrorCode::RateLimited),
            "{spelling}"
        );
        let retry = refused
            .and_then(|e| e.details)
            .and_then(|d| d.get("retry_after").and_then(serde_json::Value::as_u64));
        assert!(retry.is_some_and(|s| s >= 1));
    }
    // Another inbox, and the same inbox at another issuer, have their own budgets.
    h.waf.allow_send(&key, &email("abc@gmail.com")?).await?;
    let other_issuer = key_with(key.policy.waf.clone());
    h.waf
        .allow_send(&other_issuer, &email("ab@gmail.com")?)
        .await?;
    // Redis holds hashes, never the address.
    let keys = h.keys().await?;
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| !k.contains("gmail") && !k.contains('@')),
        "{keys:?}"
    );
    assert!(!h.waf.in_fallback());
    h.stop().await
}

#[tokio::test]
async fn the_monthly_quota_refuses_before_anything_is_counted() -> anyhow::Result<()> {
    let h = Harness::start(&redis_url()).await?;
    let key = key_with(idm_core::WafPolicy {
        monthly_email_quota: 3,
        ..idm_core::WafPolicy::default()
    });
    for i in 0..3 {
        h.waf
            .allow_send(&key, &email(&format!("user{i}@example.com"))?)
            .await?;
    }
    for i in 3..6 {
        let refused = h
            .waf
            .allow_send(&key, &email(&format!("user{i}@example.com"))?)
            .await
            .err()
            .map(|e| e.code);
        assert_eq!(refused, Some(ErrorCode::QuotaExceeded));
    }
    // The counter stopped at the quota: refused sends are not counted.
    let mut conn = redis::Client::open(h.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let quota_keys: Vec<String> = h
        .keys()
        .await?
        .into_iter()
        .filter(|k| k.contains(":quota:"))
        .collect();
    assert_eq!(quota_keys.len(), 1);
    let count: u64 = redis::cmd("GET")
        .arg(&quota_keys[0])
        .query_async(&mut conn)
        .await?;
    assert_eq!(count, 3);
    // Another account of the same policy is untouched.
    let other = key_with(key.policy.waf.clone());
    h.waf
        .allow_send(&other, &email("user0@example.com")?)
        .await?;
    h.stop().await
}

#[tokio::test]
async fn without_redis_limits_and_quotas_hold_in_memory() -> anyhow::Result<()> {
    // Nothing listens on port 1: the WAF starts in fallback.
    let h = Harness::start("redis://127.0.0.1:1").await?;
    assert!(h.waf.in_fallback());
    let key = key_with(idm_core::WafPolicy {
        recipient_limit: 1,
        monthly_email_quota: 2,
        client: idm_core::waf_policy::VelocityLimit::new(2, 60),
        ..idm_core::WafPolicy::default()
    });
    h.waf.allow_send(&key, &email("x+1@example.com")?).await?;
    let again = h.waf.allow_send(&key, &email("x+2@example.com")?).await;
    assert_eq!(again.err().map(|e| e.code), Some(ErrorCode::RateLimited));
    h.waf.allow_send(&key, &email("y@example.com")?).await?;
    let over = h.waf.allow_send(&key, &email("z@example.com")?).await;
    assert_eq!(over.err().map(|e| e.code), Some(ErrorCode::QuotaExceeded));
    let ip: IpAddr = "203.0.113.5".parse()?;
    h.waf.guard(&key, RouteClass::Client, ip).await?;
    h.waf.guard(&key, RouteClass::Client, ip).await?;
    let third = h.waf.guard(&key, RouteClass::Client, ip).await;
    assert_eq!(third.err().map(|e| e.code), Some(ErrorCode::RateLimited));
    h.stop().await
}

/// Breaches until three bans were issued (waiting out each one) and returns
/// their lengths as announced by the banning answer. A fresh ban is told
/// apart from a running one (whose rounded-up remainder can look up to a
/// second longer) by ending well after the ban seen before.
async fn three_bans(waf: &Waf, key: &KeyConfig, ip: IpAddr) -> anyhow::Result<Vec<u64>> {
    let mut lengths = Vec::new();
    let mut last_end: Option<std::time::Instant> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lengths.len() < 3 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "bans: {lengths:?}");
        if let Err(e) = waf.guard(key, RouteClass::Client, ip).await {
            let seconds = e
                .details
                .as_ref()
                .and_then(|d| d.get("retry_after"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            if e.code == ErrorCode::IpBanned {
                let end = std::time::Instant::now() + Duration::from_secs(seconds);
                if last_end.is_none_or(|last| end > last + Duration::from_millis(1500)) {
                    lengths.push(seconds);
                    last_end = Some(end);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(lengths)
}

#[tokio::test]
async fn repeat_bans_double_up_to_the_cap_in_redis_and_in_memory() -> anyhow::Result<()> {
    let policy = idm_core::WafPolicy {
        client: idm_core::waf_policy::VelocityLimit::new(1, 1),
        strikes_to_ban: 1,
        ban_seconds: 1,
        max_ban_seconds: 3,
        ..idm_core::WafPolicy::default()
    };
    for url in [redis_url(), "redis://127.0.0.1:1".to_owned()] {
        let h = Harness::start(&url).await?;
        let key = key_with(policy.clone());
        let ip: IpAddr = "2001:db8:5:6::77".parse()?;
        assert_eq!(three_bans(&h.waf, &key, ip).await?, vec![1, 2, 3], "{url}");
        // The whole /64 was banned, at this issuer only.
        let bans = h.waf.bans();
        assert!(bans
            .iter()
            .all(|b| b.network.to_string() == "2001:db8:5:6::/64" && b.issuer_id == key.issuer_id));
        h.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn secret_key_callers_are_limited_but_only_banned_when_the_policy_says_so(
) -> anyhow::Result<()> {
    let h = Harness::start(&redis_url()).await?;
    let mut policy = idm_core::WafPolicy {
        backend: idm_core::waf_policy::VelocityLimit::new(1, 60),
        strikes_to_ban: 1,
        ..idm_core::WafPolicy::default()
    };
    let mut server = key_with(policy.clone());
    server.kind = KeyKind::Secret;
    let ip: IpAddr = "192.0.2.200".parse()?;
    h.waf.guard(&server, RouteClass::Backend, ip).await?;
    for _ in 0..5 {
        let r = h.waf.guard(&server, RouteClass::Backend, ip).await;
        assert_eq!(r.err().map(|e| e.code), Some(ErrorCode::RateLimited));
    }
    policy.secret_key_strikes = true;
    server.policy.waf = policy;
    let r = h.waf.guard(&server, RouteClass::Backend, ip).await;
    assert_eq!(r.err().map(|e| e.code), Some(ErrorCode::IpBanned));
    h.stop().await
}

#[tokio::test]
async fn lifting_a_ban_also_clears_the_velocity_window() -> anyhow::Result<()> {
    let policy = idm_core::WafPolicy {
        client: idm_core::waf_policy::VelocityLimit::new(2, 600),
        strikes_to_ban: 1,
        ban_seconds: 600,
        max_ban_seconds: 600,
        ..idm_core::WafPolicy::default()
    };
    for url in [redis_url(), "redis://127.0.0.1:1".to_owned()] {
        let h = Harness::start(&url).await?;
        let key = key_with(policy.clone());
        let ip: IpAddr = "198.51.100.20".parse()?;
        h.waf.guard(&key, RouteClass::Client, ip).await?;
        h.waf.guard(&key, RouteClass::Client, ip).await?;
        let banned = h.waf.guard(&key, RouteClass::Client, ip).await;
        assert_eq!(
            banned.err().map(|e| e.code),
            Some(ErrorCode::IpBanned),
            "{url}"
        );
        assert_eq!(h.waf.lift(ip, Some(&key.issuer_id)).await, 1, "{url}");
        // The window is empty again: the limit's worth of requests passes,
        // instead of the first one breaching and banning the address again.
        h.waf.guard(&key, RouteClass::Client, ip).await?;
        h.waf.guard(&key, RouteClass::Client, ip).await?;
        assert!(h.waf.bans().is_empty(), "{url}");
        // Only the lifted address was cleared: another one keeps its window.
        let other: IpAddr = "198.51.100.21".parse()?;
        h.waf.guard(&key, RouteClass::Client, other).await?;
        h.waf.guard(&key, RouteClass::Client, other).await?;
        let again = h.waf.guard(&key, RouteClass::Client, other).await;
        assert_eq!(
            again.err().map(|e| e.code),
            Some(ErrorCode::IpBanned),
            "{url}"
        );
        h.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_ban_table_is_bounded_per_issuer_in_redis_and_in_memory() -> anyhow::Result<()> {
    let policy = idm_core::WafPolicy {
        client: idm_core::waf_policy::VelocityLimit::new(1, 600),
        strikes_to_ban: 1,
        ban_seconds: 600,
        max_ban_seconds: 600,
        ..idm_core::WafPolicy::default()
    };
    for url in [redis_url(), "redis://127.0.0.1:1".to_owned()] {
        let h = Harness::start_with(&url, 3).await?;
        let flooded = key_with(policy.clone());
        let mut outcomes = Vec::new();
        for n in 1..=10u8 {
            let ip = IpAddr::from([203, 0, 113, n]);
            h.waf.guard(&flooded, RouteClass::Client, ip).await?;
            let breach = h.waf.guard(&flooded, RouteClass::Client, ip).await;
            outcomes.push(breach.err().map(|e| e.code));
        }
        // Three networks are banned; the rest are still limited, not banned.
        let banned = outcomes
            .iter()
            .filter(|c| **c == Some(ErrorCode::IpBanned))
            .count();
        let limited = outcomes
            .iter()
            .filter(|c| **c == Some(ErrorCode::RateLimited))
            .count();
        assert_eq!((banned, limited), (3, 7), "{url}: {outcomes:?}");
        assert_eq!(h.waf.bans().len(), 3, "{url}");
        // Another issuer's table is its own: it still bans.
        let other = key_with(policy.clone());
        let ip = IpAddr::from([192, 0, 2, 9]);
        h.waf.guard(&other, RouteClass::Client, ip).await?;
        let r = h.waf.guard(&other, RouteClass::Client, ip).await;
        assert_eq!(r.err().map(|e| e.code), Some(ErrorCode::IpBanned), "{url}");
        if url == redis_url() {
            let mut conn = redis::Client::open(h.redis_url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let in_redis: u64 = redis::cmd("ZCARD")
                .arg(format!("{}:waf:{{{}}}:bans", h.prefix, flooded.issuer_id))
                .query_async(&mut conn)
                .await?;
            assert_eq!(in_redis, 3);
        }
        h.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn bans_and_send_counts_are_written_back_when_redis_comes_back_empty() -> anyhow::Result<()> {
    let h = Harness::start(&redis_url()).await?;
    let key = key_with(idm_core::WafPolicy {
        client: idm_core::waf_policy::VelocityLimit::new(2, 600),
        strikes_to_ban: 1,
        ban_seconds: 600,
        max_ban_seconds: 600,
        monthly_email_quota: 3,
        ..idm_core::WafPolicy::default()
    });
    let ip: IpAddr = "198.51.100.30".parse()?;
    h.waf.guard(&key, RouteClass::Client, ip).await?;
    h.waf.guard(&key, RouteClass::Client, ip).await?;
    let banned = h.waf.guard(&key, RouteClass::Client, ip).await;
    assert_eq!(banned.err().map(|e| e.code), Some(ErrorCode::IpBanned));
    for i in 0..2 {
        h.waf
            .allow_send(&key, &email(&format!("user{i}@example.com"))?)
            .await?;
    }
    let mut conn = redis::Client::open(h.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let bans_key = format!("{}:waf:bans", h.prefix);
    // Redis restarts without persistence: every key of this replica is gone.
    let keys = h.keys().await?;
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;

    // The replica notices the missing marker and writes back what it holds.
    let deadline = std::time::Instant::now() + WRITE_BACK_EVERY * 5;
    let (bans, count) = loop {
        let bans: Vec<String> = redis::cmd("ZRANGE")
            .arg(&bans_key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let quota_key = h.keys().await?.into_iter().find(|k| k.contains(":quota:"));
        let count: Option<u64> = match &quota_key {
            Some(k) => redis::cmd("GET").arg(k).query_async(&mut conn).await?,
            None => None,
        };
        if (!bans.is_empty() && count.is_some()) || std::time::Instant::now() > deadline {
            break (bans, count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(bans, vec![format!("{}|198.51.100.30/32", key.issuer_id)]);
    // The month's count continues where it was, not from zero: one more
    // send fits under the quota of three, the next does not.
    assert_eq!(count, Some(2));
    h.waf.allow_send(&key, &email("user2@example.com")?).await?;
    let over = h.waf.allow_send(&key, &email("user3@example.com")?).await;
    assert_eq!(over.err().map(|e| e.code), Some(ErrorCode::QuotaExceeded));
    h.stop().await
}

/// Leases (velocity.rs): two replicas sharing a large limit admit exactly
/// up to it between them, never more, while asking Redis for a fraction of
/// the requests; a small limit is counted request by request.
#[tokio::test]
async fn leased_velocity_never_exceeds_the_limit_across_replicas() -> anyhow::Result<()> {
    let id = idm_crypto::sha256_hex(&idm_crypto::random_bytes::<8>())[..12].to_owned();
    let prefix = format!("w{id}:");
    let timeout = Duration::from_secs(2);
    let a = velocity::Velocity::new(Arc::new(
        fallback::RedisLink::connect(&redis_url(), &prefix, timeout).await?,
    ));
    let b = velocity::Velocity::new(Arc::new(
        fallback::RedisLink::connect(&redis_url(), &prefix, timeout).await?,
    ));
    // A long window, so the test does not cross a window edge.
    let limit = VelocityLimit::new(2_000, 3_600);
    let mut admitted = 0u64;
    for i in 0..2_500 {
        let replica = if i % 3 == 0 { &a } else { &b };
        if replica.hit("v:test:lease", limit).await.allowed {
            admitted += 1;
        }
    }
    assert!(
        admitted <= 2_000,
        "{admitted} admitted over a limit of 2000"
    );
    // What can be left leased and unused: LEASE_MAX per replica.
    assert!(
        admitted >= 2_000 - 2 * velocity::LEASE_MAX,
        "{admitted} admitted: refused too early"
    );
    // Redis counted at least what was admitted (leases are counted first).
    let mut conn = redis::Client::open(redis_url().as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    let mut counted = 0u64;
    for k in &keys {
        let v: Option<u64> = redis::cmd("GET").arg(k).query_async(&mut conn).await?;
        counted += v.unwrap_or(0);
    }
    assert!(counted >= admitted && counted <= 2_000, "{counted} counted");
    // A small limit: exact, request by request.
    let small = VelocityLimit::new(5, 3_600);
    let mut small_admitted = 0;
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        if replica.hit("v:test:small", small).await.allowed {
            small_admitted += 1;
        }
    }
    assert_eq!(small_admitted, 5);
    {
        let all: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await?;
        let _: () = redis::cmd("DEL").arg(all).query_async(&mut conn).await?;
    }
    Ok(())
}
