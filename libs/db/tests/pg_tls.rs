//! TLS to the machine's PostgreSQL, as the URL's `sslmode` asks. Debian's
//! server runs TLS with its "snakeoil" certificate (issued to `localhost`),
//! which serves as the test's own CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idm_db::{sqlx, Db, GenericClient};

fn admin_url() -> String {
    std::env::var("IDM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The admin URL with `localhost` as the host (the name in the certificate).
fn localhost_url(query: &str) -> String {
    let url = url::Url::parse(&admin_url()).unwrap();
    let port = url.port().unwrap_or(5432);
    let user = url.username();
    format!("postgres://{user}@localhost:{port}{}?{query}", url.path())
}

async fn encrypted(db: &Db) -> Result<bool, idm_db::DbError> {
    let client = db.get().await?;
    let ssl = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut *client.conn().await)
        .await?;
    Ok(ssl)
}

async fn setting(db: &Db, name: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_decides_tls_and_the_server_certificate_is_verified() {
    let plain = Db::connect(&admin_url(), 1).unwrap();
    assert!(
        !encrypted(&plain).await.unwrap(),
        "no sslmode: plain TCP as before"
    );
    let disabled = Db::connect(&localhost_url("sslmode=disable"), 1).unwrap();
    assert!(!encrypted(&disabled).await.unwrap());

    if setting(&plain, "ssl").await != "on" {
        // A server without TLS: requiring it must fail, never fall back.
        let required = Db::connect(&localhost_url("sslmode=require"), 1).unwrap();
        assert!(required.ping().await.is_err());
        eprintln!("PostgreSQL has ssl=off: only the refusal was checked");
        return;
    }
    let cert_file = setting(&plain, "ssl_cert_file").await;
    let cert = std::path::Path::new(&cert_file);
    assert!(
        cert.is_absolute() && cert.exists(),
        "server certificate {cert_file} not readable here"
    );

    // Trusting the server's own certificate: an encrypted connection.
    let verified = Db::connect(
        &localhost_url(&format!("sslmode=verify-full&sslrootcert={cert_file}")),
        1,
    )
    .unwrap();
    match encrypted(&verified).await {
        Ok(ssl) => {
            assert!(ssl, "verify-full connected without TLS");
            eprintln!("verify-full: encrypted and verified");
        }
        // A certificate for another name is refused too, as it must be.
        Err(e) => assert!(
            format!("{e:?}").contains("NotValidForName"),
            "unexpected error: {e:?}"
        ),
    }

    // `require` verifies the name as well (sqlx's own `require` would not):
    // the snakeoil certificate is for `localhost`, so 127.0.0.1 is refused.
    let by_address = {
        let url = url::Url::parse(&admin_url()).unwrap();
        let port = url.port().unwrap_or(5432);
        format!(
            "postgres://{}@127.0.0.1:{port}{}?sslmode=require&sslrootcert={cert_file}",
            url.username(),
            url.path()
        )
    };
    let wrong_name = Db::connect(&by_address, 1).unwrap();
    match encrypted(&wrong_name).await {
        Ok(_) => panic!("sslmode=require accepted a certificate for another name"),
        Err(e) => assert!(
            format!("{e:?}").contains("NotValidForName"),
            "unexpected error: {e:?}"
        ),
    }

    // Trusting only unrelated (public) CAs: the self-signed server is refused.
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(bundle).exists() {
        let strangers = Db::connect(
            &localhost_url(&format!("sslmode=require&sslrootcert={bundle}")),
            1,
        )
        .unwrap();
        let refused = strangers.ping().await;
        assert!(
            refused.is_err(),
            "a certificate no trusted CA signed was accepted"
        );
    }
}
