//! How an issuer's schema is chosen, measured (docs/PERFORMANCE.md,
//! "search_path vs schema-qualified statements"). Ignored by default; run:
//!
//! ```sh
//! IDM_BENCH_REQUESTS=20000 cargo test -p idm-user-store --lib \
//!     search_path_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! One "request" is the store's two hottest reads, user by id and session by
//! id, for an issuer picked round-robin over 1 or 1,000 provisioned issuers,
//! from 8 concurrent tasks over a pool of 8 connections (sqlx's per-connection
//! statement cache at its default of 100 unless the variant says otherwise):
//!
//! - `handle`: what the store did when this was measured: a checkout from
//!   the resetting pool, the path set for the session with the schema check
//!   (`IssuerStore::open`), then the reads, with `RESET ALL` when the
//!   connection was released (the store now resets on plain checkouts
//!   only: docs/DESIGN-NOTES.md, "search_path"; this harness's plain
//!   checkout pays that reset instead).
//! - `set_local`: `BEGIN`, `set_config('search_path', $1, true)`, the reads,
//!   `COMMIT` on a plain pool.
//! - `qualified`: `iss_….users` and `iss_….sessions` named in the text, no
//!   session state; every issuer's statements are distinct prepared
//!   statements, so at 1,000 issuers the cache of 100 keeps missing.
//! - `qualified_cache_4096`: the same with a cache big enough for 2,000
//!   statements per connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use idm_core::{IssuerId, SessionId, UserId};
use idm_db::sqlx::{self, AssertSqlSafe, Executor as _};
use idm_db::{Db, GenericClient};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POOL: usize = 8;
const TASKS: usize = 8;

fn admin_url() -> String {
    std::env::var("IDM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

struct Tenant {
    schema: String,
    user: String,
    session: String,
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    Handle,
    SetLocal,
    Qualified,
    QualifiedBigCache,
}

async fn one_request(db: &Db, variant: Variant, t: &Tenant) -> anyhow::Result<()> {
    const USER: &str = "SELECT id, email, email_verified, name, metadata, mfa_enabled, created_at FROM users WHERE id = $1";
    const SESSION: &str = "SELECT id, user_id, created_at, last_active_at, expires_at, revoked_at, revoke_reason, user_agent, ip FROM sessions WHERE id = $1";
    match variant {
        Variant::Handle => {
            let client = db.get().await?;
            let mut conn = client.conn().await;
            sqlx::query("SELECT set_config('search_path', nspname, false) FROM pg_namespace WHERE nspname = $1")
                .bind(&t.schema)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(USER)
                .bind(&t.user)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(SESSION)
                .bind(&t.session)
                .fetch_one(&mut *conn)
                .await?;
        }
        Variant::SetLocal => {
            let mut client = db.get().await?;
            let tx = client.transaction().await?;
            {
                let mut conn = tx.conn().await;
                sqlx::query("SELECT set_config('search_path', $1, true)")
                    .bind(&t.schema)
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query(USER)
                    .bind(&t.user)
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query(SESSION)
                    .bind(&t.session)
                    .fetch_one(&mut *conn)
                    .await?;
            }
            tx.commit().await?;
        }
        Variant::Qualified | Variant::QualifiedBigCache => {
            let client = db.get().await?;
            let mut conn = client.conn().await;
            let schema = idm_db::safe_identifier(&t.schema)?;
            sqlx::query(AssertSqlSafe(
                USER.replace("FROM users", &format!("FROM {schema}.users")),
            ))
            .bind(&t.user)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query(AssertSqlSafe(
                SESSION.replace("FROM sessions", &format!("FROM {schema}.sessions")),
            ))
            .bind(&t.session)
            .fetch_one(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn run(
    url: &str,
    variant: Variant,
    tenants: Arc<Vec<Tenant>>,
    requests: usize,
) -> anyhow::Result<(f64, Duration, Duration)> {
    let db = match variant {
        Variant::Handle => Db::connect_session_resetting(url, POOL, None)?,
        Variant::QualifiedBigCache => {
            Db::connect(&format!("{url}?statement-cache-capacity=4096"), POOL)?
        }
        _ => Db::connect(url, POOL)?,
    };
    // Warm-up: open every connection and touch every issuer once.
    for t in tenants.iter() {
        one_request(&db, variant, t).await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (db, tenants) = (db.clone(), tenants.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests / TASKS);
            for i in 0..requests / TASKS {
                let t = &tenants[(i * TASKS + task) % tenants.len()];
                let one = Instant::now();
                one_request(&db, variant, t).await?;
                latencies.push(one.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok((
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a test: see the module's documentation"]
async fn search_path_bench() -> anyhow::Result<()> {
    let requests: usize = std::env::var("IDM_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let admin = Db::connect(&admin_url(), 1)?;
    let name = format!("idmt_bench_{}", std::process::id());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await?;
    let url = match admin_url().rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("IDM_TEST_PG_URL names no database"),
    };
    let result = async {
        let setup = Db::connect(&url, 4)?;
        let mut tenants = Vec::new();
        for _ in 0..1_000 {
            let issuer = IssuerId::generate();
            super::schemas::provision(&setup, &issuer, &Default::default()).await?;
            let (user, session) = (UserId::generate(), SessionId::generate());
            let schema = issuer.store_schema();
            // Literal ids (generated here, never input) in one batch.
            setup.pool().execute(AssertSqlSafe(format!(
                "INSERT INTO {schema}.users (id, email, email_canonical) VALUES ('{u}', 'a@example.com', 'a@example.com');
                 INSERT INTO {schema}.sessions (id, user_id, expires_at) VALUES ('{s}', '{u}', now() + interval '1 day')",
                u = user.as_str(),
                s = session.as_str()
            )))
            .await?;
            tenants.push(Tenant {
                schema,
                user: user.as_str().to_owned(),
                session: session.as_str().to_owned(),
            });
        }
        let all = Arc::new(tenants);
        let one = Arc::new(vec![Tenant {
            schema: all[0].schema.clone(),
            user: all[0].user.clone(),
            session: all[0].session.clone(),
        }]);
        println!("| variant | issuers | requests/s | p50 | p99 |\n|---|---|---|---|---|");
        for (issuers, tenants) in [(1, &one), (1_000, &all)] {
            for variant in [
                Variant::Handle,
                Variant::SetLocal,
                Variant::Qualified,
                Variant::QualifiedBigCache,
            ] {
                let (rate, p50, p99) = run(&url, variant, tenants.clone(), requests).await?;
                println!(
                    "| {variant:?} | {issuers} | {rate:.0} | {:.2} ms | {:.2} ms |",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(admin.pool())
    .await?;
    result
}
