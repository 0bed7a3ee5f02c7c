//! Personal access tokens: shown once, stored hashed, scoped, expiring, revocable.

use idm_core::Region;
use idm_testkit::Platform;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn personal_tokens_verify_until_revoked_or_expired_and_only_for_their_issuer(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Pat").await?;
    let b = platform.create_account("Other").await?;
    let user = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": "dev@example.com", "region": "oc"})),
        )
        .await?;
    let user_id = user.str("/id");
    let path = format!("/v1/users/{user_id}/personal_tokens");

    let created = platform
        .backend(
            Method::POST,
            &path,
            &a.secret_key,
            Some(json!({"name": "CI", "scopes": ["repo:read", "repo:write"]})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let token = created.str("/token");
    assert!(token.starts_with("idm_pat_oc_"), "{token}");
    let token_id = created.str("/id");

    let verified = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &a.secret_key,
            Some(json!({"token": token})),
        )
        .await?;
    assert_eq!(verified.status, 200, "{}", verified.json);
    assert_eq!(verified.str("/user_id"), user_id);
    assert_eq!(verified.json["scopes"], json!(["repo:read", "repo:write"]));
    // Listed without the token; stored only as a hash, in the user's region.
    let listed = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(1));
    assert!(!listed.json.to_string().contains(&token));
    let oc = platform.region_db(Region::Oc).await?;
    let schema = format!("iss_{}", a.issuer_id.trim_start_matches("iss_"));
    let plain: i64 = oc
        .query_one(
            &format!("SELECT count(*) FROM {schema}.personal_tokens WHERE token_hash = $1"),
            &[&token],
        )
        .await?
        .get(0);
    assert_eq!(plain, 0);

    // Another issuer: neither verifies nor sees it.
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &b.secret_key,
            Some(json!({"token": token})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));
    let r = platform
        .backend(Method::GET, &path, &b.secret_key, None)
        .await?;
    assert_eq!(r.code(), Some("not_found"));
    let r = platform
        .backend(
            Method::DELETE,
            &format!("{path}/{token_id}"),
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("not_found"));

    // Revoked: no longer verifies.
    let r = platform
        .backend(
            Method::DELETE,
            &format!("{path}/{token_id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &a.secret_key,
            Some(json!({"token": token})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));

    // Expired: no longer verifies (time travel in the store, not a sleep).
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)?;
    let expiring = platform
        .backend(
            Method::POST,
            &path,
            &a.secret_key,
            Some(json!({"name": "short", "scopes": [], "expires_at": soon})),
        )
        .await?;
    assert_eq!(expiring.status, 201, "{}", expiring.json);
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &a.secret_key,
            Some(json!({"token": expiring.str("/token")})),
        )
        .await?;
    assert_eq!(r.status, 200);
    oc.execute(&format!("UPDATE {schema}.personal_tokens SET expires_at = now() - interval '1 second' WHERE id = $1"), &[&expiring.str("/id")]).await?;
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &a.secret_key,
            Some(json!({"token": expiring.str("/token")})),
        )
        .await?;
    assert_eq!(r.code(), Some("unauthenticated"));

    // Bad input and forgeries.
    for body in [
        json!({"name": "x", "scopes": ["has space"]}),
        json!({"name": "", "scopes": []}),
        json!({"name": "x", "scopes": [], "expires_at": "yesterday"}),
        json!({"name": "x", "scopes": [], "expires_at": "2001-01-01T00:00:00Z"}),
    ] {
        let r = platform
            .backend(Method::POST, &path, &a.secret_key, Some(body.clone()))
            .await?;
        assert_eq!(r.code(), Some("validation_failed"), "{body}");
    }
    for forged in [
        "idm_pat_oc_".to_owned(),
        format!("{}x", &token[..token.len() - 1]),
        token.replace("_oc_", "_afr_"),
        "nope".into(),
    ] {
        let r = platform
            .backend(
                Method::POST,
                "/v1/personal_tokens/verify",
                &a.secret_key,
                Some(json!({"token": forged})),
            )
            .await?;
        assert_eq!(r.code(), Some("unauthenticated"), "{forged}");
    }
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "r", "scopes": ["users:read"]})),
        )
        .await?;
    let r = platform
        .backend(
            Method::POST,
            &path,
            &reader.str("/key"),
            Some(json!({"name": "x", "scopes": []})),
        )
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"));
    Ok(())
}
