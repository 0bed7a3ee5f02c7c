//! Redis over TLS (`rediss://`), as auth, session and edge-guard open it:
//! a private redis-server with a throw-away CA, trusted the way a
//! deployment trusts a private CA (`SSL_CERT_FILE`). Its own test binary,
//! because that variable is process-wide.

use std::time::Duration;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

async fn ping(url: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    Ok(redis::cmd("PING").query_async(&mut conn).await?)
}

#[tokio::test]
async fn rediss_urls_are_encrypted_and_verified() -> anyhow::Result<()> {
    let ca = idm_testkit::tls::TestCa::create()?;
    let port = free_port()?;
    let mut server = tokio::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "127.0.0.2"])
        .arg("--tls-cert-file")
        .arg(&ca.cert_file)
        .arg("--tls-key-file")
        .arg(&ca.key_file)
        .arg("--tls-ca-cert-file")
        .arg(&ca.ca_file)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    // SAFETY of the test: this binary has one test, set before any client.
    std::env::set_var("SSL_CERT_FILE", &ca.ca_file);
    let mut answer = Err(anyhow::anyhow!("redis-server did not answer"));
    for _ in 0..50 {
        answer = ping(&format!("rediss://localhost:{port}")).await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer?, "PONG");
    // The certificate names localhost and 127.0.0.1, not this name.
    let wrong_name = ping(&format!("rediss://127.0.0.2:{port}")).await;
    let refusal = format!("{:?}", wrong_name.err());
    assert!(
        refusal.contains("not valid for name"),
        "a certificate for another name must be refused: {refusal}"
    );
    // Plain text to the TLS port gets nowhere.
    let plain = ping(&format!("redis://localhost:{port}")).await;
    assert!(plain.is_err());
    server.kill().await?;
    Ok(())
}
