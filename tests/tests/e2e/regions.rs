//! Regions as separate deployments (docs/REGIONS.md): the residency evidence
//! of `GET /v1/users/{id}/residency`, the EU regions on a PostgreSQL server of
//! their own, stores announcing their jurisdiction (a wrong one is refused and
//! shown in `/readyz`), and outages of one region or of both EU regions.
//! Where data lives is checked by reading every regional database directly.

use idm_core::Region;
use idm_testkit::{Options, Platform, Tenant};
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "https://app.example.com";
const PASSWORD: &str = "correct horse battery";

/// Every region whose database holds a row for `email` in `tenant`'s schema.
async fn regions_holding(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
) -> anyhow::Result<Vec<Region>> {
    let mut found = Vec::new();
    for region in Region::ALL {
        let n = platform
            .store_count(region, &tenant.issuer_id, "users", "email = $1", &[&email])
            .await?;
        if n > 0 {
            found.push(region);
        }
    }
    Ok(found)
}

/// `host:port/dbname` of the URL the test kit gave `region`'s store.
fn label_of(platform: &Platform, region: Region) -> String {
    let url = &platform.db_urls[&platform.region_dbs[&region]];
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

async fn residency(
    platform: &Platform,
    key: &str,
    user: &str,
) -> anyhow::Result<idm_testkit::Response> {
    platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}/residency"),
            key,
            None,
        )
        .await
}

#[tokio::test]
async fn residency_evidence_says_where_and_why_and_stays_with_the_tenant() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Evidence").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let stamp = idm_testkit::unique_email("x");
    let stamp = stamp.split('@').next().unwrap_or("x");
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);

    // (email, how, region, reason, placement)
    let de = format!("de-{stamp}@example.com");
    let br = format!("br-{stamp}@example.com");
    let hinted = format!("hint-{stamp}@example.com");
    let nowhere = format!("none-{stamp}@example.com");
    let mut cases = Vec::new();
    for (email, country) in [(&de, Some("DE")), (&br, Some("BR")), (&nowhere, None)] {
        let r = platform
            .sign_up(&tenant, ORIGIN, country, email, PASSWORD)
            .await?;
        anyhow::ensure!(r.status == 201, "{}", r.json);
        cases.push((email.clone(), r.str("/user/id")));
    }
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": hinted, "region": "apac"})),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    cases.push((hinted.clone(), r.str("/id")));

    let expected = [
        (Region::Weur, "country", "hard", "eu"),
        (Region::Sam, "country", "best_effort", "global"),
        (Region::Weur, "default", "hard", "eu"),
        (Region::Apac, "hint", "best_effort", "global"),
    ];
    for ((email, id), (region, reason, placement, jurisdiction)) in cases.iter().zip(expected) {
        let r = residency(platform, &tenant.secret_key, id).await?;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.str("/user_id"), *id);
        assert_eq!(r.str("/region"), region.as_str(), "{email}: {}", r.json);
        assert_eq!(r.str("/jurisdiction"), jurisdiction);
        assert_eq!(r.str("/placement"), placement);
        assert_eq!(r.str("/reason"), reason, "{email}: {}", r.json);
        assert!(r.json["unavailable_region"].is_null(), "{}", r.json);
        assert_eq!(r.str("/store"), format!("user-store-{region}"));
        // The server the store announces is the one the data is on, named
        // without credentials.
        let database = r.str("/database");
        assert_eq!(database, label_of(platform, region), "{}", r.json);
        assert!(!database.contains('@'), "{database}");
        let placed_at = time::OffsetDateTime::parse(
            &r.str("/placed_at"),
            &time::format_description::well_known::Rfc3339,
        )?;
        assert!(placed_at > before, "{placed_at}");
        let categories: Vec<String> = serde_json::from_value(r.json["data_categories"].clone())?;
        for c in ["profile", "credentials", "sessions"] {
            assert!(categories.iter().any(|x| x == c), "{categories:?}");
        }
        // And the data is there, only there.
        assert_eq!(
            regions_holding(platform, &tenant, email).await?,
            vec![region]
        );
    }

    // The EU regions are on a PostgreSQL server of their own (the shared
    // platform starts one unless IDM_TEST_EU_SERVER=0).
    if platform.eu_pg.is_some() {
        let port = |r: Region| {
            label_of(platform, r)
                .split_once(':')
                .and_then(|(_, p)| p.split('/').next().map(str::to_owned))
        };
        assert_eq!(port(Region::Weur), port(Region::Eeur));
        assert_ne!(port(Region::Weur), port(Region::Sam));
        let eu_db = platform.region_db(Region::Weur).await?;
        let server_port: String = eu_db
            .query_one("SELECT current_setting('port')", &[])
            .await?
            .get(0);
        assert_eq!(Some(server_port), port(Region::Weur));
    }

    // Another tenant's key, even its strongest, sees nothing; nor does an
    // unknown id or a restricted key.
    let other = platform.create_account("Evidence, another").await?;
    let id = &cases[0].1;
    let r = residency(platform, &other.secret_key, id).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = residency(
        platform,
        &tenant.secret_key,
        "usr_00000000000000000000000000",
    )
    .await?;
    assert_ne!(r.status, 200, "{}", r.json);
    let r = residency(platform, &tenant.restricted_key, id).await?;
    assert!(
        r.status == 401 || r.status == 403,
        "{} {}",
        r.status,
        r.json
    );
    Ok(())
}

#[tokio::test]
async fn separate_regions_survive_outages_and_refuse_a_misconfigured_store() -> anyhow::Result<()> {
    // Own platform: stops and reconfigures stores.
    let mut platform = Platform::start_with(Options {
        eu_server: true,
        ..Options::behind_loopback_proxy()
    })
    .await?;
    let tenant = platform.create_account("Outages").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let eu_tenant = platform.create_account("EU only").await?;
    platform
        .allow_origins(&eu_tenant, &["app.example.com"])
        .await?;
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &eu_tenant.secret_key,
            Some(json!({"policy": {"residency": "eu"}})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // The EU databases are on another server than the rest.
    let eu_port = platform.eu_pg.as_ref().map(|pg| pg.port);
    for region in Region::ALL {
        let db = platform.region_db(region).await?;
        let port: String = db
            .query_one("SELECT current_setting('port')", &[])
            .await?
            .get(0);
        let on_eu_server = Some(port.parse::<u16>()?) == eu_port;
        assert_eq!(
            on_eu_server,
            region.jurisdiction() == idm_core::Jurisdiction::Eu,
            "{region} on port {port}"
        );
    }

    // A user in every region, before anything goes down.
    let homes = [
        ("MX", Region::Wnam),
        ("US", Region::Enam),
        ("BR", Region::Sam),
        ("DE", Region::Weur),
        ("PL", Region::Eeur),
        ("JP", Region::Apac),
        ("AU", Region::Oc),
        ("ZA", Region::Afr),
    ];
    let mut refresh_tokens = std::collections::BTreeMap::new();
    for (country, region) in homes {
        let email = format!("before-{region}@example.com");
        let r = platform
            .sign_up(&tenant, ORIGIN, Some(country), &email, PASSWORD)
            .await?;
        assert_eq!((r.status, r.str("/user/region")), (201, region.to_string()));
        refresh_tokens.insert(region, r.str("/refresh_token"));
    }

    // One region down: every other region signs up, signs in and refreshes.
    platform.stop_service("user-store-enam").await?;
    for (country, region) in homes.iter().filter(|(_, r)| *r != Region::Enam) {
        let email = format!("during-{region}@example.com");
        let r = platform
            .sign_up(&tenant, ORIGIN, Some(country), &email, PASSWORD)
            .await?;
        assert_eq!(
            (r.status, r.str("/user/region")),
            (201, region.to_string()),
            "{}",
            r.json
        );
        let r = platform
            .sign_in(
                &tenant,
                ORIGIN,
                &format!("before-{region}@example.com"),
                PASSWORD,
            )
            .await?;
        assert_eq!(r.status, 200, "sign-in in {region}: {}", r.json);
        let r = platform.refresh(&tenant, &refresh_tokens[region]).await?;
        assert_eq!(r.status, 200, "refresh in {region}: {}", r.json);
    }
    // A sign-up that would land in the down region lands in its nearest
    // healthy neighbour, and the evidence says so.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("US"),
            "fell-back@example.com",
            PASSWORD,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let fallback = Region::Enam.fallbacks()[0];
    assert_eq!(r.str("/user/region"), fallback.as_str());
    let r = residency(&platform, &tenant.secret_key, &r.str("/user/id")).await?;
    assert_eq!(
        (
            r.status,
            r.str("/region"),
            r.str("/reason"),
            r.str("/unavailable_region"),
            r.str("/placement")
        ),
        (
            200,
            fallback.to_string(),
            "fallback".into(),
            "enam".into(),
            "best_effort".into()
        ),
        "{}",
        r.json
    );
    assert_eq!(
        regions_holding(&platform, &tenant, "fell-back@example.com").await?,
        vec![fallback]
    );
    // The evidence of a user in the down region still answers, from the
    // directory, with the server the store last announced.
    platform.start_service("user-store-enam").await?;
    let enam_user = platform
        .backend(
            Method::GET,
            "/v1/users?email=before-enam@example.com",
            &tenant.secret_key,
            None,
        )
        .await?
        .str("/id");
    let r = residency(&platform, &tenant.secret_key, &enam_user).await?;
    assert_eq!(
        (r.status, r.str("/region")),
        (200, "enam".into()),
        "{}",
        r.json
    );
    platform.stop_service("user-store-enam").await?;
    let r = residency(&platform, &tenant.secret_key, &enam_user).await?;
    assert_eq!(
        (r.status, r.str("/region"), r.str("/database")),
        (200, "enam".into(), label_of(&platform, Region::Enam)),
        "{}",
        r.json
    );
    platform.start_service("user-store-enam").await?;

    // Both EU stores down: EU sign-ups fail with region_unavailable and a
    // Retry-After, and land nowhere.
    platform.stop_service("user-store-weur").await?;
    platform.stop_service("user-store-eeur").await?;
    let global = platform.global().await?;
    let directory_before: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    let refused = [
        (&tenant, Some("FR"), "eu-fr@example.com"),
        (&tenant, Some("PL"), "eu-pl@example.com"),
        (&eu_tenant, Some("US"), "eu-us@example.com"),
        (&eu_tenant, None, "eu-none@example.com"),
    ];
    for (who, country, email) in refused {
        let r = platform
            .sign_up(who, ORIGIN, country, email, PASSWORD)
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (503, Some("region_unavailable")),
            "{email}: {}",
            r.json
        );
        assert!(
            r.headers.get("retry-after").is_some(),
            "{email}: no Retry-After"
        );
        assert_eq!(
            regions_holding(&platform, who, email).await?,
            Vec::<Region>::new()
        );
    }
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "eu-hint@example.com", "region": "eeur"})),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("region_unavailable")),
        "{}",
        r.json
    );
    assert_eq!(
        regions_holding(&platform, &tenant, "eu-hint@example.com").await?,
        Vec::<Region>::new()
    );
    let directory_after: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    assert_eq!(directory_before, directory_after);
    // Best-effort regions are untouched by the EU outage.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("JP"),
            "during-eu@example.com",
            PASSWORD,
        )
        .await?;
    assert_eq!((r.status, r.str("/user/region")), (201, "apac".into()));

    // A store announcing the wrong jurisdiction for its region: refused by
    // the router, reported by its own /readyz and the user service's.
    platform
        .restart_store_with(Region::Eeur, |c| {
            c.jurisdiction = idm_core::Jurisdiction::Global
        })
        .await?;
    platform.start_service("user-store-weur").await?;
    let (status, body) = platform.get_service("user-store-eeur", "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("misconfigured") && body.contains("eeur"),
        "{body}"
    );
    let (status, body) = platform.get_service("user", "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("eeur") && body.contains("global") && !body.contains("weur"),
        "{body}"
    );
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("PL"),
            "misrouted@example.com",
            PASSWORD,
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("residency_violation")),
        "{}",
        r.json
    );
    assert_eq!(
        regions_holding(&platform, &tenant, "misrouted@example.com").await?,
        Vec::<Region>::new()
    );
    // Reads of users already there are refused too.
    let r = platform
        .sign_in(&tenant, ORIGIN, "before-eeur@example.com", PASSWORD)
        .await?;
    assert_ne!(r.status, 200, "{}", r.json);
    // A best-effort store claiming `eu` is as wrong.
    platform
        .restart_store_with(Region::Wnam, |c| {
            c.jurisdiction = idm_core::Jurisdiction::Eu
        })
        .await?;
    let (status, body) = platform.get_service("user", "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("wnam"), "{body}");
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "claimed-eu@example.com", "region": "wnam"})),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("residency_violation")),
        "{}",
        r.json
    );
    assert_eq!(
        regions_holding(&platform, &tenant, "claimed-eu@example.com").await?,
        Vec::<Region>::new()
    );

    // Configured right again: ready, and serving.
    for region in [Region::Eeur, Region::Wnam] {
        platform
            .restart_store_with(region, |c| c.jurisdiction = region.jurisdiction())
            .await?;
    }
    let (status, body) = platform.get_service("user", "/readyz").await?;
    assert_eq!(status, 200, "{body}");
    let r = platform
        .sign_up(&tenant, ORIGIN, Some("PL"), "after@example.com", PASSWORD)
        .await?;
    assert_eq!(
        (r.status, r.str("/user/region")),
        (201, "eeur".into()),
        "{}",
        r.json
    );
    platform.stop().await
}
