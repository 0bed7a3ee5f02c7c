//! Helpers for the users suites (profiles, password reset, devices,
//! consents): creating users, reading codes out of mail, and finding where a
//! value is stored across every regional database and the global one.

use idm_core::Region;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::Value;

/// The schema of `tenant`'s identity store in every region.
pub fn schema_of(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

/// `POST /v1/users` with the secret key; fails the test unless `201`.
pub async fn create_user(
    platform: &Platform,
    tenant: &Tenant,
    body: Value,
) -> anyhow::Result<Value> {
    let r = platform
        .backend(Method::POST, "/v1/users", &tenant.secret_key, Some(body))
        .await?;
    anyhow::ensure!(r.status == 201, "user creation: {} {}", r.status, r.json);
    Ok(r.json)
}

/// The 43-character code after `param=` in a mail (reset and address-change
/// links), or else the first 43-character code word of its body.
pub fn long_code(mail: &str, param: &str) -> Option<String> {
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    };
    if let Some(at) = mail.find(&format!("{param}=")) {
        return Some(word(&mail[at + param.len() + 1..]));
    }
    let body = mail.split_once("\n\n").map_or(mail, |(_, b)| b);
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| w.len() == 43)
        .map(str::to_owned)
}

/// Every place (`database/schema.table.column`) holding `needle` in text:
/// each region's database (the tenant's store schema only: other issuers'
/// schemas are apart by construction) and every schema of the global one.
pub async fn places_of(
    platform: &Platform,
    tenant: &Tenant,
    needle: &str,
) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let pattern = format!("%{needle}%");
    let mut seen_dbs = Vec::new();
    let mut targets: Vec<(String, Option<Region>, Option<String>)> = Vec::new();
    for region in Region::ALL {
        let db_name = platform.region_dbs[&region].clone();
        if seen_dbs.contains(&db_name) {
            continue;
        }
        seen_dbs.push(db_name.clone());
        targets.push((
            format!("{region}:{db_name}"),
            Some(region),
            Some(schema_of(tenant)),
        ));
    }
    targets.push(("global".into(), None, None));
    for (label, region, schema) in targets {
        let db = match region {
            Some(region) => platform.region_db(region).await?,
            None => platform.global().await?,
        };
        let columns = db
            .query(
                "SELECT c.table_schema::text, c.table_name::text, c.column_name::text
                   FROM information_schema.columns c
                   JOIN information_schema.tables t
                     ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                  WHERE t.table_type = 'BASE TABLE'
                    AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'inet', 'cidr')
                    AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
                    AND c.table_schema NOT LIKE 'pg\\_%'
                    AND ($1::text IS NULL OR c.table_schema = $1)
                    AND ($1::text IS NOT NULL OR c.table_schema NOT LIKE 'iss\\_%')",
                &[&schema],
            )
            .await?;
        for row in columns {
            let (s, t, c): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            let n: i64 = db
                .query_one(
                    &format!("SELECT count(*) FROM \"{s}\".\"{t}\" WHERE \"{c}\"::text ILIKE $1"),
                    &[&pattern],
                )
                .await?
                .get(0);
            if n > 0 {
                found.push(format!("{label}/{s}.{t}.{c}"));
            }
        }
    }
    Ok(found)
}

/// The region label `places_of` gives a region's database.
pub fn db_label(platform: &Platform, region: Region) -> String {
    format!("{region}:{}", platform.region_dbs[&region])
}

/// Rows of `table` in the tenant's store schema of `region` for `user`.
pub async fn rows_in(
    platform: &Platform,
    tenant: &Tenant,
    region: Region,
    table: &str,
    user: &str,
) -> anyhow::Result<i64> {
    let db = platform.region_db(region).await?;
    let schema = schema_of(tenant);
    let exists: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(db
        .query_one(
            &format!("SELECT count(*) FROM {schema}.{table} WHERE user_id = $1"),
            &[&user],
        )
        .await?
        .get(0))
}

/// A call with the restricted key: what every backend route refuses.
pub async fn with_restricted_key(
    platform: &Platform,
    tenant: &Tenant,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    platform
        .send(
            method,
            path,
            &[
                (
                    "authorization",
                    &format!("Bearer {}", tenant.restricted_key),
                ),
                ("origin", "https://app.example.com"),
            ],
            body,
        )
        .await
}

/// Asserts the answer is the error `code` (with its status).
pub fn refused(r: &Response, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.code()),
        (status, Some(code)),
        "expected {status} {code}: {}",
        r.json
    );
}

/// `GET path?query` with `key`, for each `(query, status, code)`: each is
/// refused with exactly that status and code.
pub async fn bad_queries(
    platform: &Platform,
    key: &str,
    path: &str,
    cases: &[(&str, u16, &str)],
) -> anyhow::Result<()> {
    for &(query, status, code) in cases {
        let r = platform
            .backend(Method::GET, &format!("{path}?{query}"), key, None)
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (status, Some(code)),
            "{path}?{query}: {}",
            r.json
        );
    }
    Ok(())
}

/// Every page of a backend list (`path` without a query), `per_page` at a
/// time, following `starting_after` until `has_more` is false: the bodies
/// of the pages, each `200`, none longer than asked for. Fails the test
/// after `max_pages` pages (a list that never ends).
pub async fn every_page(
    platform: &Platform,
    key: &str,
    path: &str,
    per_page: u32,
    max_pages: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            None => format!("{path}?limit={per_page}"),
            Some(id) => format!("{path}?limit={per_page}&starting_after={id}"),
        };
        let r = platform.backend(Method::GET, &url, key, None).await?;
        anyhow::ensure!(r.status == 200, "{url}: {} {}", r.status, r.json);
        let page = ids(&r.json);
        anyhow::ensure!(page.len() <= per_page as usize, "{url}: {}", r.json);
        let more = r.json["has_more"]
            .as_bool()
            .ok_or_else(|| anyhow::anyhow!("{url}: no has_more: {}", r.json))?;
        after = page.last().cloned();
        pages.push(r.json);
        if !more {
            return Ok(pages);
        }
        anyhow::ensure!(after.is_some(), "{url}: an empty page with more to come");
        anyhow::ensure!(pages.len() < max_pages, "{path}: the pages do not end");
    }
}

pub fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// A short random tag (hex) to make markers unique.
pub fn tag() -> String {
    let email = idm_testkit::unique_email("t");
    email
        .trim_start_matches("t-")
        .split('@')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The `n`th mail (from 0) to `to` whose decoded text contains `needle`,
/// waiting up to `wait` for it (notices to the same address are skipped).
pub async fn nth_mail_with(
    platform: &Platform,
    to: &str,
    needle: &str,
    n: usize,
    wait: std::time::Duration,
) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let found: Vec<String> = platform
            .smtp
            .messages()
            .into_iter()
            .filter(|m| {
                m.lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to))
                    && m.contains(needle)
            })
            .collect();
        if let Some(mail) = found.into_iter().nth(n) {
            return Ok(mail);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no mail {n} with {needle:?} to {to}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What every reset mail says.
pub const RESET_MAIL: &str = "Use this code to choose a new one";
