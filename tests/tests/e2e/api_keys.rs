//! `GET /v1/api_keys`: an issuer may hold any number of keys, so the list is
//! read a page at a time like every other list (LIFECYCLE.md "Lists").

use super::user_kit::{bad_queries, every_page, ids};
use idm_testkit::Platform;
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "https://app.example.com";

#[tokio::test]
async fn keys_are_listed_a_page_at_a_time_newest_first_and_only_the_issuers_own(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Keys A").await?;
    let b = platform.create_account("Keys B").await?;
    platform.allow_origins(&a, &["app.example.com"]).await?;
    let before = platform
        .backend(Method::GET, "/v1/api_keys?limit=100", &a.secret_key, None)
        .await?;
    assert_eq!(before.status, 200, "{}", before.json);
    assert_eq!(before.json["has_more"], json!(false));
    let mut expected = ids(&before.json);
    assert!(!expected.is_empty(), "a new account has its keys");

    let mut created = Vec::new();
    for n in 0..5 {
        let r = platform
            .backend(
                Method::POST,
                "/v1/api_keys",
                &a.secret_key,
                Some(json!({"kind": "secret", "name": format!("k{n}"), "scopes": ["users:read"]})),
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
        created.push(r.str("/id"));
    }
    // A revoked key stays in the list, marked.
    let revoked = platform
        .backend(
            Method::DELETE,
            &format!("/v1/api_keys/{}", created[1]),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(revoked.status, 200, "{}", revoked.json);
    expected.extend(created.iter().cloned());

    // Three per page, following the cursor until `has_more` is false.
    let pages = every_page(platform, &a.secret_key, "/v1/api_keys", 3, 10).await?;
    let sizes: Vec<usize> = pages.iter().map(|page| ids(page).len()).collect();
    let rows: Vec<&serde_json::Value> = pages
        .iter()
        .flat_map(|page| page["data"].as_array().into_iter().flatten())
        .collect();
    let seen: Vec<String> = pages.iter().flat_map(ids).collect();
    let created_at: Vec<String> = rows
        .iter()
        .map(|row| row["created_at"].as_str().unwrap_or_default().to_owned())
        .collect();
    let revoked_row = rows
        .iter()
        .find(|row| row["id"].as_str() == Some(created[1].as_str()))
        .ok_or_else(|| anyhow::anyhow!("the revoked key is not listed"))?;
    assert!(revoked_row["revoked_at"].is_string(), "{revoked_row}");
    let total = expected.len();
    assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == 3),
        "{sizes:?}"
    );
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    let mut wanted = expected.clone();
    wanted.sort();
    assert_eq!(unique, wanted, "every key once, none twice");
    // Newest first: the last one created leads, timestamps never rise.
    assert_eq!(seen.first(), created.last());
    let stamps = created_at
        .iter()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .collect::<Result<Vec<_>, _>>()?;
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{created_at:?}");

    // Another issuer's listing holds none of A's keys, and A's key is no
    // cursor for B: the same answer as an unknown id.
    let b_list = platform
        .backend(Method::GET, "/v1/api_keys?limit=100", &b.secret_key, None)
        .await?;
    assert_eq!(b_list.status, 200);
    assert!(ids(&b_list.json).iter().all(|id| !expected.contains(id)));
    for cursor in [
        created[0].clone(),
        "key_0190f0f0f0f07000800000000000abcd".to_owned(),
        "not-a-key-id".to_owned(),
    ] {
        let r = platform
            .backend(
                Method::GET,
                &format!("/v1/api_keys?starting_after={cursor}"),
                &b.secret_key,
                None,
            )
            .await?;
        assert_eq!((r.status, r.code()), (404, Some("not_found")), "{cursor}");
    }

    // Bad pages get a stable code: malformed, oversized, empty, hostile.
    let oversized = format!("starting_after=key_{}", "0".repeat(200));
    let bad_pages = [
        ("limit=0", 422, "validation_failed"),
        ("limit=101", 422, "validation_failed"),
        ("limit=x", 422, "validation_failed"),
        ("limit=99999999999999999999", 422, "validation_failed"),
        ("starting_after=", 422, "validation_failed"),
        (oversized.as_str(), 422, "validation_failed"),
        ("starting_after=key_%27%20OR%201%3D1--", 404, "not_found"),
        ("order=asc", 400, "invalid_request"),
    ];
    bad_queries(platform, &a.secret_key, "/v1/api_keys", &bad_pages).await?;

    // A narrower key and a restricted key cannot list keys, however they
    // page; a key holding exactly `api_keys:read` can, and sees its issuer's.
    let narrow = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "users only", "scopes": ["users:read"]})),
        )
        .await?;
    let narrow = narrow.str("/key");
    let r = platform
        .backend(Method::GET, "/v1/api_keys?limit=1", &narrow, None)
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("insufficient_scope")));
    let r = platform
        .send(
            Method::GET,
            "/v1/api_keys?limit=1",
            &[
                ("authorization", &format!("Bearer {}", a.restricted_key)),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("insufficient_scope")));
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "key reader", "scopes": ["api_keys:read"]})),
        )
        .await?;
    assert_eq!(reader.status, 201, "{}", reader.json);
    let reader_id = reader.str("/id");
    let reader_key = reader.str("/key");
    let r = platform
        .backend(Method::GET, "/v1/api_keys?limit=1", &reader_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(ids(&r.json), vec![reader_id]);
    assert_eq!(r.json["has_more"], json!(true));
    let shown = r.json.to_string();
    assert!(
        !shown.contains(&reader_key) && !shown.contains(&a.secret_key),
        "a listing never shows key text: {shown}"
    );
    Ok(())
}
