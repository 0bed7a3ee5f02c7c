//! Account plans (issue 9 §4): the operator's ceilings on what an account's
//! issuers may configure and consume. Tenants set their own limits only at
//! or below them; quotas are the account's, counted per mode; issuers per
//! account are limited; and only the operator reaches the plan routes.

use idm_testkit::{read, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};

/// The operator plan route of `account` on the account service, with
/// `token` as the bearer (the operator's, or whatever an attacker holds).
async fn plan_route(
    platform: &Platform,
    method: Method,
    account: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    let mut request = platform.http.request(
        method,
        format!(
            "http://{}/admin/v1/accounts/{account}/plan",
            platform.account_addr
        ),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await?).await
}

async fn set_plan(platform: &Platform, account: &str, plan: Value) -> anyhow::Result<Response> {
    let token = platform.operator_token.clone();
    plan_route(platform, Method::PUT, account, Some(&token), Some(plan)).await
}

async fn patch_waf(platform: &Platform, key: &str, waf: Value) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            key,
            Some(json!({ "policy": { "waf": waf } })),
        )
        .await
}

fn retry_after(r: &Response) -> u64 {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn tenants_set_limits_only_at_or_below_their_plan() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = platform.create_account("Capped").await?;
    platform.allow_origins(&t, &["app.example.com"]).await?;

    // No plan of its own: the deployment's default.
    let token = platform.operator_token.clone();
    let r = plan_route(platform, Method::GET, &t.account_id, Some(&token), None).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["custom"], false);

    let r = set_plan(
        platform,
        &t.account_id,
        json!({
            "max_client": { "limit": 100, "window_seconds": 60 },
            "max_recipient": { "limit": 5, "window_seconds": 3600 },
            "monthly_email_quota": 50,
            "max_issuers": 2,
        }),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = plan_route(platform, Method::GET, &t.account_id, Some(&token), None).await?;
    assert_eq!(
        (
            r.json["custom"].clone(),
            r.json["plan"]["max_issuers"].clone()
        ),
        (json!(true), json!(2))
    );

    // Above the plan: refused with a stable code naming the field, and
    // nothing changes. What the issue found: 10,000,000 per second.
    for (waf, field) in [
        (
            json!({ "client": { "limit": 10_000_000, "window_seconds": 1 } }),
            "waf.client",
        ),
        // The same count in a shorter window is a higher rate.
        (
            json!({ "client": { "limit": 100, "window_seconds": 59 } }),
            "waf.client",
        ),
        (
            json!({ "monthly_email_quota": 51 }),
            "waf.monthly_email_quota",
        ),
        (json!({ "recipient_limit": 6 }), "waf.recipient_limit"),
    ] {
        let r = patch_waf(platform, &t.secret_key, waf.clone()).await?;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("limit_above_plan")),
            "{waf}: {}",
            r.json
        );
        assert_eq!(r.json["error"]["field"], field);
    }
    let r = platform
        .backend(Method::GET, "/v1/issuer", &t.secret_key, None)
        .await?;
    assert_eq!(r.json["policy"]["waf"]["client"]["limit"], 300);
    // The tenant sees its ceilings.
    assert_eq!(r.json["plan"]["max_client"]["limit"], 100);
    assert_eq!(r.json["plan"]["max_issuers"], 2);

    // At or below it: accepted.
    let r = patch_waf(
        platform,
        &t.secret_key,
        json!({ "client": { "limit": 100, "window_seconds": 60 }, "monthly_email_quota": 50 }),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Issuers per account: the first came with the account, one more fits.
    let new_issuer = |name: &str| {
        platform.backend(
            Method::POST,
            "/v1/issuers",
            &t.secret_key,
            Some(json!({ "name": name })),
        )
    };
    let r = new_issuer("Second").await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = new_issuer("Third").await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("plan_limit_reached")),
        "{}",
        r.json
    );

    // The operator lowers the plan below what the tenant set: the edge
    // applies the plan at once (the cached key config is dropped).
    let r = set_plan(
        platform,
        &t.account_id,
        json!({ "max_client": { "limit": 2, "window_seconds": 600 }, "max_issuers": 2 }),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = platform
            .client_call(0, &t, Method::GET, "/v1/client/me", None, None)
            .await?;
        statuses.push((r.status, r.code().map(str::to_owned), retry_after(&r)));
    }
    assert_eq!(statuses[0].0, 401, "{statuses:?}");
    assert_eq!(statuses[1].0, 401, "{statuses:?}");
    assert_eq!(
        (statuses[2].0, statuses[2].1.as_deref()),
        (429, Some("rate_limited")),
        "{statuses:?}"
    );
    assert!(statuses[2].2 >= 1);
    Ok(())
}

#[tokio::test]
async fn only_the_operator_reaches_the_plan_routes_and_plans_are_per_account() -> anyhow::Result<()>
{
    let platform = Platform::shared().await?;
    let a = platform.create_account("Tenant A").await?;
    let b = platform.create_account("Tenant B").await?;
    let raise = json!({ "max_client": { "limit": 10_000_000, "window_seconds": 1 }, "max_issuers": 10_000 });

    // A tenant's keys are not the operator token: neither its secret key
    // (which holds every scope of its issuer) nor its restricted key, on
    // its own account or another's.
    for token in [
        Some(a.secret_key.as_str()),
        Some(a.restricted_key.as_str()),
        None,
    ] {
        for account in [&a.account_id, &b.account_id] {
            let r = plan_route(platform, Method::GET, account, token, None).await?;
            assert_eq!(
                (r.status, r.code()),
                (401, Some("unauthenticated")),
                "{}",
                r.json
            );
            let r = plan_route(platform, Method::PUT, account, token, Some(raise.clone())).await?;
            assert_eq!(
                (r.status, r.code()),
                (401, Some("unauthenticated")),
                "{}",
                r.json
            );
        }
    }
    // The public edge has no operator routes at all.
    let path = format!("/admin/v1/accounts/{}/plan", a.account_id);
    let r = platform
        .backend(Method::PUT, &path, &a.secret_key, Some(raise.clone()))
        .await?;
    assert_eq!(r.status, 404, "{}", r.json);
    let token = platform.operator_token.clone();
    let r = plan_route(platform, Method::GET, &a.account_id, Some(&token), None).await?;
    assert_eq!(r.json["custom"], false, "nothing was set by the attempts");

    // The operator's own mistakes are refused too.
    let r = set_plan(platform, "acct_doesnotexist", json!({})).await?;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = set_plan(platform, &a.account_id, json!({ "max_issuers": 0 })).await?;
    assert_eq!(r.code(), Some("validation_failed"), "{}", r.json);
    let r = set_plan(platform, &a.account_id, json!({ "max_isuers": 3 })).await?;
    assert_eq!(r.code(), Some("invalid_request"), "{}", r.json);

    // A's small plan binds A only: B keeps the deployment's default.
    let r = set_plan(
        platform,
        &a.account_id,
        json!({ "max_backend": { "limit": 100, "window_seconds": 60 } }),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let wide = json!({ "backend": { "limit": 5000, "window_seconds": 60 } });
    let r = patch_waf(platform, &a.secret_key, wide.clone()).await?;
    assert_eq!(r.code(), Some("limit_above_plan"), "{}", r.json);
    let r = patch_waf(platform, &b.secret_key, wide).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    Ok(())
}

async fn send_code(platform: &Platform, key: &str, email: &str) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::POST,
            "/v1/verifications",
            key,
            Some(json!({ "email": email })),
        )
        .await
}

#[tokio::test]
async fn test_sends_never_consume_live_quota() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t: Tenant = platform.create_account("Quota").await?;
    let r = set_plan(
        platform,
        &t.account_id,
        json!({ "monthly_email_quota": 2, "test_monthly_email_quota": 1 }),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .backend(
            Method::POST,
            "/v1/issuers",
            &t.secret_key,
            Some(json!({ "name": "Sandbox", "mode": "test" })),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let test_key = r.str("/secret_key");

    // The test issuer's quota is the plan's test quota (its own policy
    // says 10,000: the plan caps it).
    let r = send_code(platform, &test_key, "one@example.com").await?;
    assert_eq!(r.status, 202, "{}", r.json);
    let r = send_code(platform, &test_key, "two@example.com").await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("quota_exceeded")),
        "{}",
        r.json
    );
    assert!(retry_after(&r) >= 1);

    // The live quota is untouched by the test sends: both live sends fit.
    for email in ["three@example.com", "four@example.com"] {
        let r = send_code(platform, &t.secret_key, email).await?;
        assert_eq!(r.status, 202, "{}", r.json);
    }
    let r = send_code(platform, &t.secret_key, "five@example.com").await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("quota_exceeded")),
        "{}",
        r.json
    );
    Ok(())
}
