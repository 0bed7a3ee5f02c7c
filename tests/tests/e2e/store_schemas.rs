//! Issuer schemas in the regional stores: created where an issuer first
//! places data, pre-provisioned on the operator's request (resumable),
//! brought up to date by `idm-user-store migrate` (resumable, idempotent),
//! and refused while behind.

use idm_core::Region;
use idm_testkit::{read, Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};

/// The store's last migrations, how to take them back, how to make them
/// fail midway and whether they are in place: whoever adds a store
/// migration updates these (the test checks the newest version a schema
/// holds against `LAST_MIGRATION` and fails loudly otherwise). Migration 7
/// adds the triggers that write the region's revocation log, migration 8
/// the shared rotation function; both are taken back, and the obstacle
/// stands in the way of 7 in one schema only (8's function is shared by
/// the region's schemas, so nothing in one schema can stop it).
const LAST_MIGRATION: i64 = 8;
const TAKEN_BACK: &str = "7, 8";
fn undo_last_migrations(schema: &str) -> String {
    format!(
        "DROP TRIGGER sessions_revocation_log ON {schema}.sessions;
         DROP TRIGGER tombstones_revocation_log ON {schema}.revoked_session_tombstones;
         DROP FUNCTION IF EXISTS public.idm_refresh_rotate"
    )
}
/// An object in the way of migration 7 (a trigger of that name).
fn block_last_migrations(schema: &str) -> String {
    format!(
        "CREATE TRIGGER sessions_revocation_log AFTER DELETE ON {schema}.sessions
         FOR EACH ROW EXECUTE FUNCTION public.idm_log_revocation()"
    )
}
fn unblock_last_migrations(schema: &str) -> String {
    format!("DROP TRIGGER sessions_revocation_log ON {schema}.sessions")
}
/// Whether the last migrations are in place: 7's two triggers, as it makes
/// them (not the obstacle, which fires on DELETE only), and 8's function.
const HAS_LAST_MIGRATIONS: &str =
    "SELECT count(*) = 2 AND to_regprocedure('public.idm_refresh_rotate(text, double precision, text, text, text, text)') IS NOT NULL
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1
       AND t.tgname IN ('sessions_revocation_log', 'tombstones_revocation_log')
       AND t.tgtype & 4 <> 0";

fn schema_of(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

async fn provision(
    platform: &Platform,
    issuer: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    let mut request = platform
        .http
        .post(format!(
            "http://{}/admin/v1/issuers/{issuer}/provision",
            platform.account_addr
        ))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await?).await
}

async fn create_user(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    region: Region,
) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({ "email": email, "region": region.as_str() })),
        )
        .await
}

async fn get_user(platform: &Platform, tenant: &Tenant, id: &str) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::GET,
            &format!("/v1/users/{id}"),
            &tenant.secret_key,
            None,
        )
        .await
}

fn sorted(mut regions: Vec<Region>) -> Vec<Region> {
    regions.sort_by_key(|r| r.as_str());
    regions
}

#[tokio::test]
async fn schemas_appear_on_first_use_and_pre_provisioning_finishes_after_a_region_failed(
) -> anyhow::Result<()> {
    // Own platform: stops a store.
    let mut platform = Platform::start_with(Options::default()).await?;
    platform.stop_service("user-store-sam").await?;

    // Creating an account touches no regional database, so it works while
    // a region is down, and its keys work at once.
    let tenant = platform.create_account("Lazy").await?;
    assert_eq!(
        platform.provisioned_regions(&tenant.issuer_id).await?,
        vec![]
    );

    // Concurrent first users in one region: one schema, every user created.
    let creations = (0..6).map(|i| {
        let (platform, tenant) = (&platform, &tenant);
        async move { create_user(platform, tenant, &format!("u{i}@example.com"), Region::Oc).await }
    });
    for r in futures::future::join_all(creations).await {
        let r = r?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    assert_eq!(
        platform.provisioned_regions(&tenant.issuer_id).await?,
        vec![Region::Oc]
    );
    assert_eq!(
        platform
            .store_count(Region::Oc, &tenant.issuer_id, "users", "true", &[])
            .await?,
        6
    );

    // Pre-provisioning with one region down: the others are done and the
    // failure is named.
    let token = platform.operator_token.clone();
    let r = provision(&platform, &tenant.issuer_id, &token, None).await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("region_unavailable")),
        "{}",
        r.json
    );
    let regions = r.json["error"]["regions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(regions.len(), 8, "{}", r.json);
    for region in &regions {
        let failed = region["region"] == "sam";
        assert_eq!(region["provisioned"], !failed, "{region}");
    }
    let all_but_sam: Vec<Region> = Region::ALL
        .into_iter()
        .filter(|r| *r != Region::Sam)
        .collect();
    assert_eq!(
        sorted(platform.provisioned_regions(&tenant.issuer_id).await?),
        sorted(all_but_sam)
    );

    // Once the region is back, the same call finishes the job; again, it
    // changes nothing.
    platform.start_service("user-store-sam").await?;
    for _ in 0..2 {
        let r = provision(&platform, &tenant.issuer_id, &token, None).await?;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["complete"], true);
        assert_eq!(
            sorted(platform.provisioned_regions(&tenant.issuer_id).await?),
            sorted(Region::ALL.to_vec())
        );
    }
    // Provisioning kept the users that were there.
    assert_eq!(
        platform
            .store_count(Region::Oc, &tenant.issuer_id, "users", "true", &[])
            .await?,
        6
    );

    // Only the operator may ask, only for an issuer that exists, only for
    // regions its policy permits.
    let r = provision(&platform, &tenant.issuer_id, &tenant.secret_key, None).await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("unauthenticated")),
        "{}",
        r.json
    );
    let path = format!("/admin/v1/issuers/{}/provision", tenant.issuer_id);
    let r = platform
        .backend(Method::POST, &path, &tenant.secret_key, Some(json!({})))
        .await?;
    assert_eq!(
        r.status, 404,
        "the public edge has no operator routes: {}",
        r.json
    );
    let r = provision(
        &platform,
        "iss_00000000000000000000000000000000",
        &token,
        None,
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = provision(&platform, "not-an-id", &token, None).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = provision(
        &platform,
        &tenant.issuer_id,
        &token,
        Some(json!({"regions": []})),
    )
    .await?;
    assert_eq!(r.code(), Some("validation_failed"), "{}", r.json);
    let r = provision(
        &platform,
        &tenant.issuer_id,
        &token,
        Some(json!({"regions": ["mars"]})),
    )
    .await?;
    assert_eq!(r.code(), Some("invalid_request"), "{}", r.json);
    let eu_only = platform.create_account("Eu only").await?;
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &eu_only.secret_key,
            Some(json!({ "policy": { "residency": "eu" } })),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = provision(
        &platform,
        &eu_only.issuer_id,
        &token,
        Some(json!({"regions": ["oc"]})),
    )
    .await?;
    assert_eq!(r.code(), Some("residency_violation"), "{}", r.json);
    let r = provision(&platform, &eu_only.issuer_id, &token, None).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        sorted(platform.provisioned_regions(&eu_only.issuer_id).await?),
        sorted(vec![Region::Weur, Region::Eeur]),
        "the default is the regions the policy permits"
    );
    platform.stop().await
}

#[tokio::test]
async fn a_schema_behind_is_refused_until_the_migrate_command_brings_it_up_and_a_failed_run_resumes(
) -> anyhow::Result<()> {
    // Own platform: restarts a store with other settings.
    let mut platform = Platform::start_with(Options::default()).await?;
    let a = platform.create_account("Alpha").await?;
    let b = platform.create_account("Beta").await?;
    let user_a = create_user(&platform, &a, "a@example.com", Region::Oc).await?;
    assert_eq!(user_a.status, 201, "{}", user_a.json);
    let user_b = create_user(&platform, &b, "b@example.com", Region::Oc).await?;
    assert_eq!(user_b.status, 201, "{}", user_b.json);
    let (user_a, user_b) = (user_a.str("/id"), user_b.str("/id"));

    // Both schemas go back one version, as if this build had just added
    // its last migration; B also holds an object that makes that migration
    // fail, standing for a crash or an error midway through a run.
    let oc = platform.region_db(Region::Oc).await?;
    let (schema_a, schema_b) = (schema_of(&a), schema_of(&b));
    for schema in [&schema_a, &schema_b] {
        let newest: i64 = oc
            .query_one(
                &format!("SELECT max(version) FROM {schema}._sqlx_migrations"),
                &[],
            )
            .await?
            .get(0);
        assert_eq!(
            newest, LAST_MIGRATION,
            "a new store migration: update LAST_MIGRATION and how it is taken back"
        );
        oc.batch_execute(&format!(
            "{}; DELETE FROM {schema}._sqlx_migrations WHERE version IN ({TAKEN_BACK})",
            undo_last_migrations(schema)
        ))
        .await?;
    }
    oc.batch_execute(&block_last_migrations(&schema_b)).await?;
    // A region that migrates by job rather than at start-up.
    platform
        .restart_store_with(Region::Oc, |config| config.migrate_on_start = false)
        .await?;

    // Behind: refused, not served against a schema it does not match.
    for (tenant, user) in [(&a, &user_a), (&b, &user_b)] {
        let r = get_user(&platform, tenant, user).await?;
        assert_eq!(
            (r.status, r.code()),
            (503, Some("region_unavailable")),
            "{}",
            r.json
        );
    }

    // The command migrates what it can and names what it could not.
    let config = platform.store_config(Region::Oc)?;
    let report = idm_user_store::migrate(&config).await?;
    assert_eq!(report.schemas, 2, "{report:?}");
    assert_eq!(report.migrated, 1, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, schema_b, "{report:?}");
    let r = get_user(&platform, &a, &user_a).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = get_user(&platform, &b, &user_b).await?;
    assert_eq!(r.code(), Some("region_unavailable"), "{}", r.json);

    // With the cause gone, running it again finishes the job; once more
    // changes nothing.
    oc.batch_execute(&unblock_last_migrations(&schema_b))
        .await?;
    let report = idm_user_store::migrate(&config).await?;
    assert_eq!((report.migrated, report.failed.len()), (1, 0), "{report:?}");
    let report = idm_user_store::migrate(&config).await?;
    assert_eq!((report.migrated, report.failed.len()), (0, 0), "{report:?}");
    for (tenant, user) in [(&a, &user_a), (&b, &user_b)] {
        let r = get_user(&platform, tenant, user).await?;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    for schema in [&schema_a, &schema_b] {
        let made: bool = oc.query_one(HAS_LAST_MIGRATIONS, &[schema]).await?.get(0);
        assert!(
            made,
            "{schema} lacks the last migrations' triggers or function"
        );
    }
    platform.stop().await
}
