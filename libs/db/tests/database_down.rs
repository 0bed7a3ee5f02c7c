//! With the database unreachable, callers are refused at once after the
//! first failed connection instead of each waiting out the pool.

use idm_db::{Db, DbError, GenericClient as _};

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[tokio::test]
async fn an_unreachable_database_is_refused_at_once_after_the_first_failure() -> anyhow::Result<()>
{
    let port = closed_port()?;
    let db = Db::connect(&format!("postgres://nobody@127.0.0.1:{port}/none"), 4)?;

    // The first caller tries to connect and fails: unavailable (a 503 to
    // clients, never a 500).
    let first = db.get().await.err();
    assert!(
        matches!(&first, Some(DbError::Sqlx(_))),
        "the first caller tried the server: {first:?}"
    );
    assert!(first.as_ref().is_some_and(DbError::is_unavailable));

    // The next ones are refused without trying again.
    for _ in 0..3 {
        let next = db.get().await.err();
        assert!(matches!(next, Some(DbError::Down)), "{next:?}");
        assert!(next.as_ref().is_some_and(DbError::is_unavailable));
    }

    // After the hold, one caller tries the server again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let retried = db.get().await.err();
    assert!(matches!(retried, Some(DbError::Sqlx(_))), "{retried:?}");
    Ok(())
}

#[tokio::test]
async fn a_database_that_comes_back_is_used_again_within_the_hold() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("IDM_TEST_PG_URL") else {
        // The suite's runner always sets it (ops/test.sh).
        anyhow::bail!("IDM_TEST_PG_URL is not set");
    };
    let server = url::Url::parse(&url)?;
    let upstream = format!(
        "{}:{}",
        server.host_str().unwrap_or("127.0.0.1"),
        server.port().unwrap_or(5432)
    );
    // The pool's address has nothing behind it at first: the server is down.
    let port = closed_port()?;
    let mut through = server.clone();
    through
        .set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("cannot set a port on {url}"))?;
    let db = Db::connect(through.as_str(), 1)?;
    assert!(db.get().await.is_err());
    assert!(matches!(db.get().await.err(), Some(DbError::Down)));

    // The server comes back (a forwarder on that address).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let forwarding = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let result = db.ping().await;
    forwarding.abort();
    result?;
    Ok(())
}

async fn backend_pid(db: &Db) -> anyhow::Result<i32> {
    let client = db.get().await?;
    let pid = idm_db::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *client.conn().await)
        .await?;
    Ok(pid)
}

/// A pooled connection is pinged before use only after sitting idle (one
/// used moments ago was pinged when it came back), so a connection whose
/// server session ended while it sat idle, as in a database restart, is
/// replaced before anyone is handed it.
#[tokio::test]
async fn a_connection_whose_session_ended_while_idle_is_replaced_unseen() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("IDM_TEST_PG_URL") else {
        anyhow::bail!("IDM_TEST_PG_URL is not set");
    };
    let db = Db::connect(&url, 1)?;
    let admin = Db::connect(&url, 1)?;
    let first = backend_pid(&db).await?;
    // Used again at once: the same session.
    assert_eq!(backend_pid(&db).await?, first);

    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let client = admin.get().await?;
    let ended: bool = idm_db::sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut *client.conn().await)
        .await?;
    drop(client);
    assert!(ended);
    // The caller never sees the dead session.
    let second = backend_pid(&db).await?;
    assert_ne!(second, first);
    Ok(())
}
