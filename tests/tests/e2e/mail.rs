//! Mail through an SMTP relay not written here (issue 16): aiosmtpd from
//! PyPI (tests/tools/smtp_relay.py) with STARTTLS on a throw-away CA and
//! AUTH. The courier requires STARTTLS and logs in; a relay that offers no
//! STARTTLS, or refuses the password, gets nothing and the message waits in
//! the `MAIL` queue until a relay takes it: it arrives once, intact (strict
//! parse, tenant's name, a code that works).
//!
//! Needs `python3` with `aiosmtpd` (ops/test.sh installs it); without it
//! the test says SKIPPED, except under CI where it fails.

use crate::factor_kit::{post, tenant};
use idm_testkit::tls::TestCa;
use idm_testkit::{Options, Platform};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const RELAY_PASSWORD: &str = "relay-secret-9f2c";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether python3 can import `module`; under CI a missing one is an error.
fn python_has(module: &str) -> anyhow::Result<bool> {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    anyhow::ensure!(
        ok || std::env::var("CI").is_err(),
        "python3 cannot import {module} (python3 -m pip install {module})"
    );
    if !ok {
        eprintln!("SKIPPED: python3 cannot import {module} (python3 -m pip install {module})");
    }
    Ok(ok)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// A running relay; stopped when dropped (its stdin closes, and it is killed).
struct Relay {
    _child: tokio::process::Child,
}

impl Relay {
    async fn start(
        port: u16,
        out: &Path,
        password_file: &Path,
        tls: Option<&TestCa>,
    ) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(repo_file("tools/smtp_relay.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(out)
            .arg("--password-file")
            .arg(password_file);
        if let Some(ca) = tls {
            cmd.arg("--cert")
                .arg(&ca.cert_file)
                .arg("--key")
                .arg(&ca.key_file);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("relay stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
        anyhow::ensure!(
            ready.as_deref().is_some_and(|l| l.starts_with("READY")),
            "relay did not start: {ready:?}"
        );
        // Keep reading (its AUTH lines) so the pipe never fills.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("relay: {line}");
            }
        });
        Ok(Self { _child: child })
    }
}

fn delivered(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    Ok(files)
}

async fn queued(platform: &Platform) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(platform.nats.connect(idm_testkit::Identity::Admin).await?);
    let mut stream = js
        .get_stream(format!("{}_MAIL", platform.prefix.to_ascii_uppercase()))
        .await?;
    Ok(stream.info().await?.state.messages)
}

#[tokio::test]
async fn mail_reaches_a_real_relay_over_starttls_with_auth_and_waits_when_refused(
) -> anyhow::Result<()> {
    if !python_has("aiosmtpd")? {
        return Ok(());
    }
    let ca = TestCa::create()?;
    let out = ca.dir.join("delivered");
    std::fs::create_dir_all(&out)?;
    let password_file = ca.dir.join("relay-password");
    std::fs::write(&password_file, "not-the-one")?;
    let port = free_port()?;
    // Own platform: its mail goes to this relay, not to the test kit's sink.
    let platform = Platform::start_with(Options {
        auth_mail: Some(idm_auth::MailTransport::Smtp(idm_auth::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: idm_auth::SmtpTls::StartTls,
            username: Some("idmesh".into()),
            password: Some(secrecy::SecretString::from(RELAY_PASSWORD)),
            ca_file: Some(ca.ca_file.clone()),
        })),
        ..Options::default()
    })
    .await?;
    let a = tenant(&platform, "Relay Books").await?;

    // 1. A relay that offers no STARTTLS: the courier will not speak in
    //    the clear, so nothing is handed over and the message waits.
    let plain = Relay::start(port, &out, &password_file, None).await?;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes",
        None,
        json!({ "email": "rita@example.com" }),
    )
    .await?;
    assert_eq!(r.status, 202, "{}", r.json);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(delivered(&out)?.is_empty(), "sent without STARTTLS");
    assert_eq!(
        queued(&platform).await?,
        1,
        "the message waits in the queue"
    );
    drop(plain);

    // 2. STARTTLS, but the relay refuses the password: still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _relay = Relay::start(port, &out, &password_file, Some(&ca)).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        delivered(&out)?.is_empty(),
        "accepted with a wrong password"
    );
    assert_eq!(queued(&platform).await?, 1, "the message still waits");

    // 3. The relay now takes the password: the message arrives, once.
    std::fs::write(&password_file, RELAY_PASSWORD)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&out)?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "no delivery within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files = delivered(&out)?;
    let check = std::process::Command::new("python3")
        .arg(repo_file("../services/auth/tests/mail_check.py"))
        .args(["--expect-name", "Relay Books (live)"])
        .args(&files)
        .output()?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let raw = std::fs::read_to_string(&files[0])?;
    let code = idm_testkit::smtp::six_digit_code(&idm_testkit::smtp::decoded(&raw))
        .ok_or_else(|| anyhow::anyhow!("no code in {raw}"))?;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({ "email": "rita@example.com", "code": code }),
    )
    .await?;
    assert_eq!(r.status, 200, "the delivered code works: {}", r.json);
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued(&platform).await? != 0 {
        anyhow::ensure!(Instant::now() < deadline, "delivered but still queued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered(&out)?.len(), 1, "delivered exactly once");
    platform.stop().await
}
