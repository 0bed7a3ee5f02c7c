//! A session-resetting pool (`Db::connect_session_resetting`, what the
//! regional stores use) on ONE connection, so every checkout below reuses
//! the same PostgreSQL session: a schema-scoped checkout sees only its
//! schema whatever the one before set, and a plain checkout starts from the
//! server's defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idm_db::sqlx::{self, AssertSqlSafe};
use idm_db::{Db, GenericClient as _};

fn admin_url() -> String {
    std::env::var("IDM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn run(db: &Db, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(db.pool())
        .await
        .unwrap();
}

async fn show(client: &idm_db::Client, setting: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(format!("SHOW {setting}")))
        .fetch_one(&mut *client.conn().await)
        .await
        .unwrap()
}

async fn value_of_t(client: &idm_db::Client) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut *client.conn().await)
        .await
}

#[tokio::test]
async fn no_checkout_sees_what_the_one_before_set() {
    let admin = Db::connect(&admin_url(), 1).unwrap();
    let name = format!("idmt_session_reset_{}", std::process::id());
    run(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    run(&admin, &format!("CREATE DATABASE {name}")).await;
    let (base, _) = admin_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .unwrap();
    let db = Db::connect_session_resetting(&format!("{base}/{name}"), 1, None).unwrap();
    run(
        &db,
        "CREATE SCHEMA iss_a; CREATE TABLE iss_a.t (v text); INSERT INTO iss_a.t VALUES ('a');
         CREATE SCHEMA iss_b; CREATE TABLE iss_b.t (v text); INSERT INTO iss_b.t VALUES ('b');",
    )
    .await;
    let default_path = show(&db.get().await.unwrap(), "search_path").await;

    {
        let as_a = db
            .get_in_schema("iss_a")
            .await
            .unwrap()
            .expect("iss_a exists");
        assert_eq!(value_of_t(&as_a).await.unwrap(), "a");
        // Something a handle should never do, left behind on purpose.
        run_on(&as_a, "SET statement_timeout = '1234ms'").await;
    }
    {
        // The same connection, now for B: B's rows only.
        let as_b = db
            .get_in_schema("iss_b")
            .await
            .unwrap()
            .expect("iss_b exists");
        assert_eq!(show(&as_b, "search_path").await, "iss_b");
        assert_eq!(value_of_t(&as_b).await.unwrap(), "b");
    }
    // No schema: no connection, and nothing of B's reaches the next plain checkout.
    assert!(db.get_in_schema("iss_missing").await.unwrap().is_none());
    let plain = db.get().await.unwrap();
    assert_eq!(show(&plain, "search_path").await, default_path);
    assert_eq!(show(&plain, "statement_timeout").await, "0");
    assert!(
        value_of_t(&plain).await.is_err(),
        "a plain checkout reached an issuer's table"
    );
    drop(plain);

    db.pool().close().await;
    run(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
}

async fn run_on(client: &idm_db::Client, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *client.conn().await)
        .await
        .unwrap();
}
