//! `idm_db::migrate` against the machine's PostgreSQL, each test in a
//! database of its own: replicas racing, an interrupted run resuming, and a
//! schema migrated by the pre-sqlx `_migrations` list adopted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idm_db::sqlx::migrate::{Migration, MigrationType, Migrator};
use idm_db::sqlx::{self, AssertSqlSafe, SqlStr};
use idm_db::Db;
use std::borrow::Cow;

fn admin_url() -> String {
    std::env::var("IDM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped by [`Scratch::drop_database`].
struct Scratch {
    admin: Db,
    name: String,
    db: Db,
}

impl Scratch {
    async fn new(tag: &str) -> Self {
        let admin = Db::connect(&admin_url(), 1).unwrap();
        let name = format!("idmt_migrate_{tag}_{}", std::process::id());
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(admin.pool())
                .await
                .unwrap();
        }
        let (base, _) = admin_url()
            .rsplit_once('/')
            .map(|(b, d)| (b.to_owned(), d.to_owned()))
            .unwrap();
        let db = Db::connect(&format!("{base}/{name}"), 4).unwrap();
        Self { admin, name, db }
    }

    async fn drop_database(self) {
        self.db.pool().close().await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(self.admin.pool())
        .await
        .unwrap();
    }

    async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }
}

fn migration(version: i64, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Owned(format!("step {version}")),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        false,
    )
}

fn steps() -> Vec<Migration> {
    vec![
        migration(1, "CREATE TABLE t (id int PRIMARY KEY)"),
        // Unqualified, as the store's are: it lands in the migrated schema.
        migration(2, "INSERT INTO t VALUES (1)"),
        migration(3, "INSERT INTO t VALUES (2)"),
    ]
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    let scratch = Scratch::new("race").await;
    let migrator = Migrator::with_migrations(steps());
    let runs = (0..6).map(|_| idm_db::migrate(&scratch.db, "shared", &migrator));
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
    // Each insert ran once (a second run of step 2 would be a unique violation
    // or a duplicate row), and every step is recorded once.
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM shared.t").await, 2);
    assert_eq!(
        scratch
            .scalar_i64("SELECT count(*) FROM shared._sqlx_migrations WHERE success")
            .await,
        3
    );
    // Another schema gets its own copy, from the same unqualified files.
    idm_db::migrate(&scratch.db, "other", &migrator)
        .await
        .unwrap();
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM other.t").await, 2);
    scratch.drop_database().await;
}

#[tokio::test]
async fn an_interrupted_run_continues_where_it_stopped() {
    let scratch = Scratch::new("resume").await;
    let mut broken = steps();
    broken[2] = migration(3, "INSERT INTO no_such_table VALUES (2)");
    let failed = idm_db::migrate(&scratch.db, "s", &Migrator::with_migrations(broken)).await;
    assert!(failed.is_err(), "a failing migration must fail the run");
    // Steps 1 and 2 committed; the failed step left nothing behind.
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM s.t").await, 1);
    assert_eq!(
        scratch
            .scalar_i64("SELECT count(*) FROM s._sqlx_migrations")
            .await,
        2
    );
    // The fixed release resumes at step 3 only (step 2 again would add a row).
    idm_db::migrate(&scratch.db, "s", &Migrator::with_migrations(steps()))
        .await
        .unwrap();
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM s.t").await, 2);
    // And a second start finds nothing to do.
    idm_db::migrate(&scratch.db, "s", &Migrator::with_migrations(steps()))
        .await
        .unwrap();
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM s.t").await, 2);
    scratch.drop_database().await;
}

#[tokio::test]
async fn a_schema_from_the_old_migrations_list_is_adopted_not_migrated_again() {
    let scratch = Scratch::new("adopt").await;
    // What the pre-sqlx idm_db::migrate left: steps 1 and 2 applied and
    // listed in `_migrations`.
    sqlx::raw_sql(
        "CREATE SCHEMA legacy;
         CREATE TABLE legacy._migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE legacy.t (id int PRIMARY KEY);
         INSERT INTO legacy.t VALUES (1);
         INSERT INTO legacy._migrations (version, name) VALUES (1, 'step 1'), (2, 'step 2');",
    )
    .execute(scratch.db.pool())
    .await
    .unwrap();
    idm_db::migrate(&scratch.db, "legacy", &Migrator::with_migrations(steps()))
        .await
        .unwrap();
    // Only step 3 ran: rerunning 1 would fail (table exists), 2 would add a row.
    assert_eq!(scratch.scalar_i64("SELECT count(*) FROM legacy.t").await, 2);
    assert_eq!(
        scratch
            .scalar_i64("SELECT count(*) FROM legacy._sqlx_migrations WHERE success")
            .await,
        3
    );
    scratch.drop_database().await;
}

#[tokio::test]
async fn unsafe_schema_names_are_refused() {
    let db = Db::connect(&admin_url(), 1).unwrap();
    let migrator = Migrator::with_migrations(steps());
    for bad in ["", "Upper", "a;drop", "1abc", "a-b"] {
        assert!(
            idm_db::migrate(&db, bad, &migrator).await.is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn the_pooled_connection_comes_back_without_the_path_or_the_lock() {
    let scratch = Scratch::new("clean").await;
    let (base, _) = admin_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .unwrap();
    // One connection: the migration and the probes below share it.
    let one = Db::connect(&format!("{base}/{}", scratch.name), 1).unwrap();
    let default_path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(one.pool())
        .await
        .unwrap();
    idm_db::migrate(&one, "clean", &Migrator::with_migrations(steps()))
        .await
        .unwrap();
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(one.pool())
        .await
        .unwrap();
    assert_eq!(path, default_path, "the schema's path leaked into the pool");
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(one.pool())
    .await
    .unwrap();
    assert_eq!(locks, 0, "the migration lock outlived the run");
    one.pool().close().await;
    scratch.drop_database().await;
}
