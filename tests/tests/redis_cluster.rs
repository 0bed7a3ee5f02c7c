//! The platform on a three-primary Redis Cluster (`redis+cluster://`):
//! rate limits, bans and second-factor failure budgets work on it, and
//! survive each primary in turn restarting empty (a crash without
//! persistence): the failure budget is rebuilt from the ledger, the running
//! ban is written back where a starting edge replica loads it, and an
//! operator can still lift it. Its own test binary: it runs three
//! redis-servers and the whole platform.

use idm_testkit::redis_cluster::RedisCluster;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.example.com";
const ATTACKER: &str = "203.0.113.77";

async fn me(
    platform: &Platform,
    replica: usize,
    t: &Tenant,
    from: &str,
) -> anyhow::Result<Response> {
    let headers = [
        ("idm-api-key", t.restricted_key.as_str()),
        ("origin", ORIGIN),
        ("x-forwarded-for", from),
    ];
    platform
        .send_to(replica, Method::GET, "/v1/client/me", &headers, None)
        .await
}

async fn email_code(
    platform: &Platform,
    t: &Tenant,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Response> {
    platform
        .client_call(0, t, Method::POST, path, None, Some(body))
        .await
}

/// Asks for a code until the platform takes the request (a primary that
/// just restarted may answer 503 for a moment).
async fn send_code(platform: &Platform, t: &Tenant, email: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = email_code(
            platform,
            t,
            "/v1/client/email_codes",
            json!({ "email": email }),
        )
        .await?;
        if (200..300).contains(&r.status) {
            return Ok(());
        }
        anyhow::ensure!(
            r.status == 503 && Instant::now() < deadline,
            "sending a code: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn guess(
    platform: &Platform,
    t: &Tenant,
    email: &str,
    code: &str,
) -> anyhow::Result<Option<String>> {
    let r = email_code(
        platform,
        t,
        "/v1/client/email_codes/verify",
        json!({ "email": email, "code": code }),
    )
    .await?;
    Ok(r.code().map(str::to_owned))
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_bans_and_budgets_hold_on_a_redis_cluster_whose_nodes_restart_empty(
) -> anyhow::Result<()> {
    let mut cluster = RedisCluster::start(3).await?;
    let mut platform = Platform::start_with(Options {
        redis_url: Some(cluster.url()),
        ..Options::behind_loopback_proxy()
    })
    .await?;
    let t = platform.create_account("On a cluster").await?;
    platform.allow_origins(&t, &["app.example.com"]).await?;

    // Sessions and one-time codes work on the cluster.
    let email = "cluster-user@example.com";
    let r = platform
        .sign_up(&t, ORIGIN, None, email, "correct horse battery")
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = platform
        .sign_in(&t, ORIGIN, email, "correct horse battery")
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // An address guessed at five times backs off.
    let target = "guessed-at@example.com";
    send_code(&platform, &t, target).await?;
    let message = platform
        .smtp
        .wait_for(target, 0, Duration::from_secs(30))
        .await?;
    let code = idm_testkit::smtp::six_digit_code(&message).unwrap_or_default();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(
            guess(&platform, &t, target, wrong).await?.as_deref(),
            Some("code_invalid")
        );
    }
    assert_eq!(
        guess(&platform, &t, target, wrong).await?.as_deref(),
        Some("too_many_attempts")
    );

    // A caller over the velocity limit is banned (the strike script's keys
    // share a slot; the ban goes to the list starting replicas load).
    platform
        .set_waf_policy(
            &t,
            json!({
                "client": { "limit": 2, "window_seconds": 1 },
                "strikes_to_ban": 1,
                "ban_seconds": 600,
            }),
        )
        .await?;
    eventually("a ban", || async {
        Ok(me(&platform, 0, &t, ATTACKER).await?.code() == Some("ip_banned"))
    })
    .await?;
    // A roomy limit again, so this test's own calls (from 127.0.0.1) are
    // never breaches; the running ban stays.
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 100000, "window_seconds": 60 } }),
        )
        .await?;
    eventually("an innocent caller served", || async {
        Ok(me(&platform, 0, &t, "198.51.100.5").await?.status == 401)
    })
    .await?;
    assert_eq!(
        me(&platform, 0, &t, ATTACKER).await?.code(),
        Some("ip_banned")
    );

    // The edge answered from the cluster, not from its fallback memory.
    let metrics = platform.edge_metrics(0).await?;
    assert!(
        metrics.contains("idm_edge_redis_fallback{redis=\"cluster 127.0.0.1:"),
        "no fallback gauge for the cluster"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("idm_edge_redis_fallback{") && l.ends_with(" 1")),
        "the edge fell back to memory"
    );
    // The keys are spread over the primaries, not piled on one.
    let mut holding = 0;
    for node in 0..3 {
        if cluster.keys_on(node).await? > 0 {
            holding += 1;
        }
    }
    assert!(holding >= 2, "keys on {holding} of 3 primaries");

    // Every primary in turn crashes and comes back empty.
    for node in 0..3 {
        cluster.restart_empty(node).await?;
    }

    // The failure budget was rebuilt, not reset (a guess is charged only
    // while a code exists: send one first).
    send_code(&platform, &t, target).await?;
    platform
        .smtp
        .wait_for(target, 1, Duration::from_secs(30))
        .await?;
    assert_eq!(
        guess(&platform, &t, target, wrong).await?.as_deref(),
        Some("too_many_attempts"),
        "after every primary restarted empty"
    );

    // The running edge wrote the ban back: a replica started now loads it
    // and refuses the attacker at once.
    let admin = idm_cache::Target::parse(&cluster.url())?;
    let bans_key = format!("{}waf:bans", platform.redis_prefix);
    eventually("the ban written back", || {
        let (admin, bans_key) = (admin.clone(), bans_key.clone());
        async move {
            let mut conn = admin.connect(idm_cache::Settings::default()).await?;
            let n: usize = redis::cmd("ZCARD")
                .arg(&bans_key)
                .query_async(&mut conn)
                .await?;
            Ok(n > 0)
        }
    })
    .await?;
    platform.add_edge().await?;
    assert_eq!(
        me(&platform, 1, &t, ATTACKER).await?.code(),
        Some("ip_banned")
    );

    // An operator lifts it (every node scanned for its windows).
    let lifted = platform
        .edge_ops(
            0,
            Method::DELETE,
            &format!("/admin/v1/bans/{ATTACKER}"),
            None,
        )
        .await?;
    assert!((200..300).contains(&lifted.status), "{}", lifted.json);
    for replica in 0..2 {
        eventually("the lift", || async {
            Ok(me(&platform, replica, &t, ATTACKER).await?.code() != Some("ip_banned"))
        })
        .await?;
    }
    platform.stop().await
}
