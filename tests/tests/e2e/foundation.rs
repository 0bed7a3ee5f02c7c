//! The platform end to end: accounts, placement across regions, sign-in.

use idm_core::Region;
use idm_testkit::{Options, Platform};
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "https://app.example.com";

/// Counts rows for `email` in every issuer schema of every regional database.
async fn copies_of(
    platform: &Platform,
    issuer_schema: &str,
    email: &str,
) -> anyhow::Result<Vec<Region>> {
    let mut found = Vec::new();
    for region in Region::ALL {
        let db = platform.region_db(region).await?;
        let schemas = db
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'iss\\_%'",
                &[],
            )
            .await?;
        for schema in schemas {
            let schema: String = schema.get(0);
            let n: i64 = db
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.users WHERE email = $1"),
                    &[&email],
                )
                .await?
                .get(0);
            if n > 0 {
                anyhow::ensure!(
                    schema == issuer_schema,
                    "user found in another issuer's schema {schema}"
                );
                found.push(region);
            }
        }
    }
    Ok(found)
}

#[tokio::test]
async fn accounts_sign_up_places_users_by_country_and_sign_in_works() -> anyhow::Result<()> {
    // Own platform: counts every user in the directory.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let tenant = platform.create_account("Acme").await?;
    assert!(tenant.secret_key.starts_with("ath_sec_live_"));
    assert!(tenant.restricted_key.starts_with("rk_live_"));
    let schema = format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"));

    // No regional database holds anything for the issuer yet: its schema
    // is created where its first user is placed.
    assert_eq!(
        platform.provisioned_regions(&tenant.issuer_id).await?,
        vec![]
    );
    // Keys are stored only as hashes.
    let global = platform.global().await?;
    let leaked: i64 = global
        .query_one(
            "SELECT count(*) FROM account.api_keys WHERE key_hash = $1 OR key_hash = $2",
            &[&tenant.secret_key, &tenant.restricted_key],
        )
        .await?
        .get(0);
    assert_eq!(leaked, 0);

    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let cases = [
        ("de", "ada@example.com", Region::Weur),
        ("BR", "bruna@example.com", Region::Sam),
        ("jp", "kenji@example.com", Region::Apac),
        ("AU", "olivia@example.com", Region::Oc),
    ];
    for (country, email, region) in cases {
        let r = platform
            .sign_up(
                &tenant,
                ORIGIN,
                Some(country),
                email,
                "correct horse battery",
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.str("/user/region"), region.as_str());
        assert!(r.str("/session_token").starts_with("idm1."));
        let cookie = r
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(cookie.starts_with("__Host-idm_session="), "{cookie}");
        for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
        }
        assert!(!cookie.contains("Domain"));
        // Exactly one copy, in the chosen region, in this issuer's schema.
        assert_eq!(copies_of(&platform, &schema, email).await?, vec![region]);
    }
    // Schemas exist exactly where users were placed.
    let mut placed: Vec<Region> = cases.iter().map(|c| c.2).collect();
    placed.sort_by_key(|r| r.as_str());
    let mut provisioned = platform.provisioned_regions(&tenant.issuer_id).await?;
    provisioned.sort_by_key(|r| r.as_str());
    assert_eq!(provisioned, placed);

    // The directory has the routing row and a blind index, never the address.
    let directory_rows: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    assert_eq!(directory_rows, 4);
    let plaintext: i64 = global
        .query_one("SELECT count(*) FROM directory.users WHERE position(convert_to('ada@example.com', 'UTF8') in email_index) > 0", &[])
        .await?
        .get(0);
    assert_eq!(plaintext, 0);
    // The password hash is Argon2id and only in the region.
    let weur = platform.region_db(Region::Weur).await?;
    let hash: String = weur
        .query_one(
            &format!("SELECT password_hash FROM {schema}.users WHERE email = 'ada@example.com'"),
            &[],
        )
        .await?
        .get(0);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    // Backend: an explicit region, and reads by id and by email show the region.
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "zola@example.com", "region": "afr", "name": "Zola"})),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.str("/region"), "afr");
    let id = r.str("/id");
    assert!(id.starts_with("usr_"));
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{id}"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.str("/region"), r.str("/name")),
        (200, "afr".into(), "Zola".into())
    );
    let r = platform
        .backend(
            Method::GET,
            "/v1/users?email=Ada@Example.com",
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.str("/region"), r.str("/email")),
        (200, "weur".into(), "ada@example.com".into())
    );
    assert_eq!(
        copies_of(&platform, &schema, "zola@example.com").await?,
        vec![Region::Afr]
    );

    // No country and no region: the default region.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            None,
            "nobody@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.str("/user/region"), "weur");

    // Sign-in, wrong password, unknown email.
    let r = platform
        .sign_in(
            &tenant,
            ORIGIN,
            "bruna@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.str("/user/region"), "sam");
    let token = r.str("/session_token");
    let r = platform
        .sign_in(&tenant, ORIGIN, "bruna@example.com", "wrong horse battery")
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("invalid_credentials")));
    let r = platform
        .sign_in(
            &tenant,
            ORIGIN,
            "nobody-here@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("invalid_credentials")));

    // The session works for `me` (header and cookie) and for backend verification.
    let key = tenant.restricted_key.clone();
    let me = platform
        .send(
            Method::GET,
            "/v1/client/me",
            &[
                ("idm-api-key", &key),
                ("authorization", &format!("Bearer {token}")),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!(
        (me.status, me.str("/email")),
        (200, "bruna@example.com".into())
    );
    let me = platform
        .send(
            Method::GET,
            "/v1/client/me",
            &[
                ("authorization", &format!("Bearer {key}")),
                ("cookie", &format!("__Host-idm_session={token}")),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!(me.status, 200, "{}", me.json);
    let v = platform
        .backend(
            Method::POST,
            "/v1/sessions/verify",
            &tenant.secret_key,
            Some(json!({"session_token": token})),
        )
        .await?;
    assert_eq!(
        (v.status, v.str("/region")),
        (200, "sam".into()),
        "{}",
        v.json
    );
    assert!(v.str("/session_id").starts_with("ses_"));
    // The session row is in the user's region.
    let sam = platform.region_db(Region::Sam).await?;
    let sessions: i64 = sam
        .query_one(&format!("SELECT count(*) FROM {schema}.sessions"), &[])
        .await?
        .get(0);
    assert_eq!(sessions, 2);

    // Duplicate email, whatever region it would land in: conflict, nothing written.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("jp"),
            "ADA@example.com",
            "another good pass",
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, Some("conflict")));
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "bruna@example.com", "region": "oc"})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, Some("conflict")));
    assert_eq!(
        copies_of(&platform, &schema, "ADA@example.com").await?,
        Vec::<Region>::new()
    );
    let directory_rows: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    assert_eq!(directory_rows, 6);

    platform.stop().await
}

#[tokio::test]
async fn wrong_password_and_unknown_email_take_at_least_the_minimum_time() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Timing").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    platform
        .sign_up(
            &tenant,
            ORIGIN,
            None,
            "known@example.com",
            "correct horse battery",
        )
        .await?;
    for email in ["known@example.com", "unknown@example.com"] {
        let started = std::time::Instant::now();
        let r = platform
            .sign_in(&tenant, ORIGIN, email, "wrong password here")
            .await?;
        assert_eq!(r.code(), Some("invalid_credentials"));
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(300),
            "{email} answered in {:?}",
            started.elapsed()
        );
    }
    Ok(())
}
