//! Users (issue 11): consent records, an append-only history per user with
//! when and from which session and device, read as history or as the
//! current decision per purpose.

use crate::factor_kit::{tenant, ORIGIN, PASSWORD};
use crate::user_kit::*;
use idm_core::Region;
use idm_testkit::{unique_email, Platform};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn consents_are_an_append_only_history_with_a_current_view() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Consent A").await?;
    let b = tenant(platform, "Consent B").await?;
    let up = platform
        .sign_up(&a, ORIGIN, None, &unique_email("consent"), PASSWORD)
        .await?;
    assert_eq!(up.status, 201, "{}", up.json);
    let user = up.str("/user/id");
    let session = up.str("/session_id");
    let region = Region::parse(&up.str("/user/region")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let path = format!("/v1/users/{user}/consents");
    let tag = tag();
    let marketing = format!("marketing.email{tag}");

    let add = |body: serde_json::Value| {
        let path = path.clone();
        let key = a.secret_key.clone();
        async move {
            platform
                .backend(Method::POST, &path, &key, Some(body))
                .await
        }
    };
    let r =
        add(json!({"purpose": marketing, "version": "v1", "granted": true, "session_id": session}))
            .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["session_id"], json!(session));
    assert!(r.str("/device_id").starts_with("dev_"), "{}", r.json);
    assert!(r.str("/id").starts_with("cns_"));
    assert!(r.json["recorded_at"].is_string());
    let first = r.str("/id");
    let r = add(json!({"purpose": marketing, "version": "v2", "granted": false})).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["device_id"], json!(null));
    let withdrawn = r.str("/id");
    let r = add(json!({"purpose": "analytics", "version": "2024-01", "granted": true})).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let analytics = r.str("/id");

    // History, newest first, paginated.
    let r = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert_eq!(
        ids(&r.json),
        vec![analytics.clone(), withdrawn.clone(), first.clone()]
    );
    assert_eq!(r.json["has_more"], json!(false));
    let page = platform
        .backend(Method::GET, &format!("{path}?limit=2"), &a.secret_key, None)
        .await?;
    assert_eq!(ids(&page.json), vec![analytics.clone(), withdrawn.clone()]);
    assert_eq!(page.json["has_more"], json!(true));
    let rest = platform
        .backend(
            Method::GET,
            &format!("{path}?limit=2&starting_after={withdrawn}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&rest.json), vec![first.clone()]);
    // Current: the latest decision per purpose, by purpose.
    let current = platform
        .backend(Method::GET, &format!("{path}/current"), &a.secret_key, None)
        .await?;
    assert_eq!(current.status, 200, "{}", current.json);
    assert_eq!(
        ids(&current.json),
        vec![analytics.clone(), withdrawn.clone()]
    );
    assert_eq!(current.json["data"][1]["granted"], json!(false));
    assert_eq!(current.json["data"][1]["version"], json!("v2"));

    // Append-only, even for a direct write to the store.
    let db = platform.region_db(region).await?;
    let update = db
        .execute(
            &format!(
                "UPDATE {}.consents SET granted = true WHERE id = $1",
                schema_of(&a)
            ),
            &[&withdrawn],
        )
        .await;
    assert!(update.is_err(), "a consent record was changed");

    // Idempotent creation.
    let auth = format!("Bearer {}", a.secret_key);
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "consent-once"),
    ];
    let body = json!({"purpose": "terms", "version": "3", "granted": true});
    let one = platform
        .send(Method::POST, &path, &headers, Some(body.clone()))
        .await?;
    let two = platform
        .send(Method::POST, &path, &headers, Some(body))
        .await?;
    assert_eq!(one.status, 201, "{}", one.json);
    assert_eq!(one.str("/id"), two.str("/id"));

    // Bad inputs.
    let other = platform
        .sign_up(&a, ORIGIN, None, &unique_email("other"), PASSWORD)
        .await?;
    for (body, status, code) in [
        (
            json!({"purpose": "Bad Purpose", "version": "1", "granted": true}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "", "version": "1", "granted": true}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "p".repeat(65), "version": "1", "granted": true}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "p", "version": "", "granted": true}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "p", "version": "with space", "granted": true}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "p", "version": "1"}),
            400,
            "invalid_request",
        ),
        (
            json!({"purpose": "p", "version": "1", "granted": "yes"}),
            400,
            "invalid_request",
        ),
        (
            json!({"purpose": "p", "version": "1", "granted": true, "why": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"purpose": "p", "version": "1", "granted": true, "session_id": "nope"}),
            422,
            "validation_failed",
        ),
        (
            json!({"purpose": "p", "version": "1", "granted": true, "session_id": other.str("/session_id")}),
            404,
            "not_found",
        ),
    ] {
        let r = add(body.clone()).await?;
        assert_eq!(
            (r.status, r.code()),
            (status, Some(code)),
            "{body}: {}",
            r.json
        );
    }
    let r = platform
        .backend(
            Method::GET,
            &format!("{path}?starting_after=cns_nope"),
            &a.secret_key,
            None,
        )
        .await?;
    refused(&r, 404, "not_found");
    let r = platform
        .backend(
            Method::GET,
            &format!("{path}/current?starting_after=Bad"),
            &a.secret_key,
            None,
        )
        .await?;
    refused(&r, 422, "validation_failed");

    // Another issuer: a plain 404 on every route; a restricted key: refused.
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}/current")),
        (Method::POST, path.clone()),
    ] {
        let body = (method == Method::POST)
            .then(|| json!({"purpose": "p", "version": "1", "granted": true}));
        let r = platform
            .backend(method.clone(), &p, &b.secret_key, body.clone())
            .await?;
        refused(&r, 404, "not_found");
        let r = with_restricted_key(platform, &a, method, &p, body).await?;
        refused(&r, 403, "insufficient_scope");
    }
    // Still three records of the first two purposes (and the terms one).
    assert_eq!(rows_in(platform, &a, region, "consents", &user).await?, 4);

    // Consent lives in the user's region only.
    let mut places = places_of(platform, &a, &marketing).await?;
    places.sort();
    assert_eq!(
        places,
        vec![format!(
            "{}/{}.consents.purpose",
            db_label(platform, region),
            schema_of(&a)
        )]
    );
    Ok(())
}
