//! Bad input gets a stable code and nothing is written.

use idm_core::Region;
use idm_testkit::{Platform, Tenant};
use reqwest::Method;
use serde_json::json;

async fn users_written(platform: &Platform, tenant: &Tenant) -> anyhow::Result<i64> {
    let mut total: i64 = platform
        .global()
        .await?
        .query_one(
            "SELECT count(*) FROM directory.users WHERE issuer_id = $1",
            &[&tenant.issuer_id],
        )
        .await?
        .get(0);
    for region in Region::ALL {
        total += platform
            .store_count(region, &tenant.issuer_id, "users", "true", &[])
            .await?;
    }
    Ok(total)
}

#[tokio::test]
async fn malformed_missing_oversized_and_invalid_input_is_refused_with_stable_codes(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Strict").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let key = tenant.secret_key.clone();

    // Raw bodies.
    let r = platform
        .send_raw("/v1/users", &key, b"{\"email\": ".to_vec())
        .await?;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));
    let r = platform
        .send_raw("/v1/users", &key, b"[1,2,3]".to_vec())
        .await?;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));
    let huge =
        serde_json::to_vec(&json!({"email": "big@example.com", "name": "x".repeat(70 * 1024)}))?;
    let r = platform.send_raw("/v1/users", &key, huge).await?;
    assert_eq!((r.status, r.code()), (413, Some("payload_too_large")));

    let cases = [
        (json!({}), 400, "invalid_request"),
        (json!({"name": "No Email"}), 400, "invalid_request"),
        (json!({"email": 42}), 400, "invalid_request"),
        (
            json!({"email": "a@example.com", "surprise": true}),
            400,
            "invalid_request",
        ),
        (json!({"email": "not-an-email"}), 422, "invalid_email"),
        (json!({"email": "a@localhost"}), 422, "invalid_email"),
        (
            json!({"email": "\"quoted\"@example.com"}),
            422,
            "invalid_email",
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(300))}),
            422,
            "invalid_email",
        ),
        (
            json!({"email": "a@example.com", "region": "mars"}),
            422,
            "validation_failed",
        ),
        (
            json!({"email": "a@example.com", "name": "n".repeat(201)}),
            422,
            "validation_failed",
        ),
        (
            json!({"email": "a@example.com", "name": "bad\u{0007}name"}),
            422,
            "validation_failed",
        ),
        (
            json!({"email": "a@example.com", "metadata": "not an object"}),
            422,
            "validation_failed",
        ),
        (
            json!({"email": "a@example.com", "metadata": {"blob": "m".repeat(9000)}}),
            422,
            "validation_failed",
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            422,
            "weak_password",
        ),
        (
            json!({"email": "a@example.com", "password": "p".repeat(300)}),
            422,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let r = platform
            .backend(Method::POST, "/v1/users", &key, Some(body.clone()))
            .await?;
        assert_eq!((r.status, r.code()), (status, Some(code)), "{body}");
        // Every error carries the request id that the response header names.
        let header = r
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(!header.is_empty());
        assert_eq!(r.str("/error/request_id"), header);
        assert!(!r.str("/error/message").is_empty());
    }
    // The client API refuses the same way.
    let rk = format!("Bearer {}", tenant.restricted_key);
    let headers = [
        ("authorization", rk.as_str()),
        ("origin", "https://app.example.com"),
    ];
    for (body, code) in [
        (
            json!({"email": "nope", "password": "correct horse battery"}),
            "invalid_email",
        ),
        (json!({"email": "a@example.com"}), "invalid_request"),
        (
            json!({"email": "a@example.com", "password": "aaaaaaaaaa"}),
            "weak_password",
        ),
    ] {
        let r = platform
            .send(
                Method::POST,
                "/v1/client/sign_up",
                &headers,
                Some(body.clone()),
            )
            .await?;
        assert_eq!(r.code(), Some(code), "{body}");
    }
    assert_eq!(
        users_written(platform, &tenant).await?,
        0,
        "bad input must write nothing"
    );

    // Unknown ids, routes and methods.
    let r = platform
        .backend(Method::GET, "/v1/users/usr_nope", &key, None)
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    // Without `email`, `GET /v1/users` is the list (issue 11); a bad page is refused.
    let r = platform
        .backend(Method::GET, "/v1/users", &key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["data"].is_array() && r.json["has_more"].is_boolean());
    let r = platform
        .backend(Method::GET, "/v1/users?limit=0", &key, None)
        .await?;
    assert_eq!((r.status, r.code()), (422, Some("validation_failed")));
    let r = platform
        .backend(Method::GET, "/v1/nothing-here", &key, None)
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r = platform
        .backend(Method::PUT, "/v1/users", &key, None)
        .await?;
    assert_eq!((r.status, r.code()), (405, Some("method_not_allowed")));

    // Issuer settings are validated when saved, and a bad patch changes nothing.
    for patch in [
        json!({"allowed_origins": ["*"]}),
        json!({"allowed_origins": ["https://app.example.com"]}),
        json!({"allowed_origins": ["app.example.com/path"]}),
        json!({"allowed_origins": ["*.com"]}),
        json!({"policy": {"session_lifetime_seconds": 5}}),
        json!({"policy": {"residency": "moon"}}),
        json!({"policy": {"unknown_knob": 1}}),
        json!({"policy": {"residency": "eu", "default_region": "wnam"}}),
    ] {
        let r = platform
            .backend(Method::PATCH, "/v1/issuer", &key, Some(patch.clone()))
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some("validation_failed")),
            "{patch}"
        );
    }
    let r = platform
        .backend(Method::GET, "/v1/issuer", &key, None)
        .await?;
    assert_eq!(r.json["allowed_origins"], json!(["app.example.com"]));
    assert_eq!(r.json["policy"]["session_lifetime_seconds"], json!(600));
    // Bad key requests.
    for body in [
        json!({"kind": "admin", "name": "x"}),
        json!({"kind": "secret", "name": "x", "scopes": ["users:admin"]}),
        json!({"kind": "secret", "name": ""}),
    ] {
        let r = platform
            .backend(Method::POST, "/v1/api_keys", &key, Some(body.clone()))
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some("validation_failed")),
            "{body}"
        );
    }
    let keys = platform
        .backend(Method::GET, "/v1/api_keys", &key, None)
        .await?;
    assert_eq!(keys.json["data"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn the_operator_api_needs_its_token_and_a_valid_body() -> anyhow::Result<()> {
    // Own platform: asserts that no account at all was written.
    let platform = Platform::start().await?;
    let url = format!("http://{}/admin/v1/accounts", platform.account_addr);
    let r = platform
        .http
        .post(&url)
        .json(&json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = platform
        .http
        .post(&url)
        .bearer_auth("wrong-token-wrong-token")
        .json(&json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = platform
        .http
        .post(&url)
        .bearer_auth(&platform.operator_token)
        .json(&json!({"nom": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = platform
        .http
        .post(&url)
        .bearer_auth(&platform.operator_token)
        .json(&json!({"name": " "}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let accounts: i64 = platform
        .global()
        .await?
        .query_one("SELECT count(*) FROM account.accounts", &[])
        .await?
        .get(0);
    assert_eq!(accounts, 0);
    platform.stop().await
}
