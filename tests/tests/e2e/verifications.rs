//! The verification API keeps nothing: not in Postgres, and not in Redis
//! after success or expiry; while a code is pending, Redis holds only keyed
//! hashes, and the caller presents the address again to check it.

use idm_core::Region;
use idm_testkit::smtp::six_digit_code;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

async fn call(
    platform: &Platform,
    tenant: &Tenant,
    secret: bool,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Response> {
    if secret {
        platform
            .backend(Method::POST, path, &tenant.secret_key, Some(body))
            .await
    } else {
        platform
            .client_call(0, tenant, Method::POST, path, None, Some(body))
            .await
    }
}

async fn verification_keys(platform: &Platform) -> anyhow::Result<usize> {
    let mut redis = redis::Client::open(idm_testkit::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}verify:*", platform.redis_prefix))
        .query_async(&mut redis)
        .await?;
    Ok(keys.len())
}

#[tokio::test]
async fn verifications_prove_an_address_and_leave_no_trace() -> anyhow::Result<()> {
    // Own platform: moves the clock, counts every user.
    let platform = Platform::start().await?;
    let a = platform.create_account("Verify").await?;
    let b = platform.create_account("Other").await?;
    platform.allow_origins(&a, &["app.example.com"]).await?;
    let mut seen = 0;
    for secret_key in [true, false] {
        let r = call(
            &platform,
            &a,
            secret_key,
            "/v1/verifications",
            json!({"email": "Vera@Example.com"}),
        )
        .await?;
        assert_eq!(r.status, 202, "{}", r.json);
        let id = r.str("/id");
        assert!(id.starts_with("ver_") && !r.str("/expires_at").is_empty());
        let code = six_digit_code(
            &platform
                .smtp
                .wait_for("vera@example.com", seen, Duration::from_secs(20))
                .await?,
        )
        .unwrap_or_default();
        seen += 1;
        assert_eq!(verification_keys(&platform).await?, 1);
        // While the code is pending, nothing in Redis names the address:
        // keys and values hold keyed hashes only.
        crate::factor_kit::assert_redis_never_holds(&platform, &a.issuer_id, "vera@example.com")
            .await?;
        // The code is good only for the address it was sent to.
        let r = call(
            &platform,
            &a,
            secret_key,
            "/v1/verifications/check",
            json!({"id": id, "email": "someone.else@example.com", "code": code}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "another address");
        let r = call(
            &platform,
            &a,
            secret_key,
            "/v1/verifications/check",
            json!({"id": id, "code": code}),
        )
        .await?;
        assert_eq!(r.code(), Some("invalid_request"), "the address is required");
        let r = call(
            &platform,
            &b,
            true,
            "/v1/verifications/check",
            json!({"id": id, "email": "vera@example.com", "code": code}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "another issuer");
        // The address is presented again; its case does not matter, and the
        // signed result names it as presented.
        let r = call(
            &platform,
            &a,
            secret_key,
            "/v1/verifications/check",
            json!({"id": id, "email": "Vera@Example.com", "code": code}),
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(
            (r.json["verified"].as_bool(), r.str("/email")),
            (Some(true), "Vera@example.com".into())
        );
        assert!(r.str("/token").starts_with("idmv1."));
        assert_eq!(
            verification_keys(&platform).await?,
            0,
            "success erases every trace"
        );
        let r = call(
            &platform,
            &a,
            secret_key,
            "/v1/verifications/check",
            json!({"id": id, "email": "vera@example.com", "code": code}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "replay");
    }

    // Wrong codes count; the fifth kills it. Failures take the minimum time.
    let r = call(
        &platform,
        &a,
        true,
        "/v1/verifications",
        json!({"email": "vera@example.com"}),
    )
    .await?;
    let id = r.str("/id");
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("vera@example.com", seen, Duration::from_secs(20))
            .await?,
    )
    .unwrap_or_default();
    seen += 1;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let started = Instant::now();
        let r = call(
            &platform,
            &a,
            true,
            "/v1/verifications/check",
            json!({"id": id, "email": "vera@example.com", "code": wrong}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    let r = call(
        &platform,
        &a,
        true,
        "/v1/verifications/check",
        json!({"id": id, "email": "vera@example.com", "code": code}),
    )
    .await?;
    assert_eq!(r.code(), Some("too_many_attempts"));
    assert_eq!(verification_keys(&platform).await?, 0);

    // Expiry (moved clock) erases it too; malformed input never matches.
    let r = call(
        &platform,
        &a,
        true,
        "/v1/verifications",
        json!({"email": "vera@example.com"}),
    )
    .await?;
    let id = r.str("/id");
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("vera@example.com", seen, Duration::from_secs(20))
            .await?,
    )
    .unwrap_or_default();
    for (bad_id, bad_code) in [
        (id.as_str(), "12345"),
        (id.as_str(), "abcdef"),
        ("ver_nope", code.as_str()),
        ("", code.as_str()),
    ] {
        let r = call(
            &platform,
            &a,
            true,
            "/v1/verifications/check",
            json!({"id": bad_id, "email": "vera@example.com", "code": bad_code}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "{bad_id} {bad_code}");
    }
    platform.clock.advance(601);
    let r = call(
        &platform,
        &a,
        true,
        "/v1/verifications/check",
        json!({"id": id, "email": "vera@example.com", "code": code}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_expired"));
    assert_eq!(verification_keys(&platform).await?, 0);
    let r = call(
        &platform,
        &a,
        true,
        "/v1/verifications",
        json!({"email": "not-an-address"}),
    )
    .await?;
    assert_eq!(r.code(), Some("invalid_email"));

    // Nothing about the address was written to Postgres.
    let global = platform.global().await?;
    let users: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    assert_eq!(users, 0);
    for region in Region::ALL {
        let n = platform
            .store_count(region, &a.issuer_id, "users", "true", &[])
            .await?;
        assert_eq!(n, 0, "{region}");
    }
    platform.stop().await
}
