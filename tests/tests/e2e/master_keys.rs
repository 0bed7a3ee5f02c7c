//! Master-key rotation (issue 14, operations guide "Keys and their
//! rotation"): session, user and auth restarted with a new master key and
//! the old one as previous keep every sealed value and derived hash working,
//! their re-seal passes move every row to the new key, and once the previous
//! key is gone nothing needs it. A wrong or missing previous key opens
//! nothing and fails with an error, never a panic or a silent fallback.

use crate::factor_kit::*;
use base64::Engine;
use idm_testkit::{Platform, Response, Tenant};
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// The sealed values of `tenant` that `service` keeps, as stored.
async fn sealed_rows(
    platform: &mut Platform,
    service: &str,
    tenant: &Tenant,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let issuer = idm_core::IssuerId::parse(&tenant.issuer_id)?;
    Ok(match service {
        "session" => platform
            .global()
            .await?
            .query(
                "SELECT sealed_secret FROM session_keys.keys WHERE issuer_id = $1",
                &[&tenant.issuer_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        "user" => platform
            .global()
            .await?
            .query(
                "SELECT sealed_key FROM directory.issuer_keys WHERE issuer_id = $1",
                &[&tenant.issuer_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        _ => {
            let sql = format!(
                "SELECT totp_secret_sealed FROM {}.users WHERE totp_secret_sealed IS NOT NULL",
                issuer.store_schema()
            );
            let rows = platform
                .region_db(idm_core::Region::Weur)
                .await?
                .query(&sql, &[])
                .await?;
            rows.iter()
                .map(|r| {
                    let text: String = r.get(0);
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(anyhow::Error::from)
                })
                .collect::<anyhow::Result<_>>()?
        }
    })
}

/// How many of the tenant's sealed values `service` holds under its
/// current master key (tagged with its key id), of how many.
async fn under_current(
    platform: &mut Platform,
    service: &str,
    tenant: &Tenant,
) -> anyhow::Result<(usize, usize)> {
    let keys = platform.sealing_keys(service)?;
    let rows = sealed_rows(platform, service, tenant).await?;
    Ok((
        rows.iter().filter(|r| keys.is_current(r)).count(),
        rows.len(),
    ))
}

/// `idm_sealed_rows_previous_key` of `service` as its `/metrics` shows it
/// (summed over its kinds of rows); `None` before its first pass.
async fn previous_key_rows(platform: &Platform, service: &str) -> anyhow::Result<Option<f64>> {
    let (status, metrics) = platform.get_service(service, "/metrics").await?;
    anyhow::ensure!(status == 200, "{service} /metrics: {status}");
    let label = format!("service=\"{service}\"");
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("idm_sealed_rows_previous_key{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    Ok((!values.is_empty()).then(|| values.iter().sum()))
}

/// Waits until every sealed value of the tenant in `service` is under its
/// current key and its gauge says no row needs the previous key.
async fn resealed(platform: &mut Platform, service: &str, tenant: &Tenant) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (current, total) = under_current(platform, service, tenant).await?;
        let gauge = previous_key_rows(platform, service).await?;
        if total > 0 && current == total && gauge == Some(0.0) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{service}: {current} of {total} rows under the current key, gauge {gauge:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn signs_in(platform: &Platform, tenant: &Tenant, email: &str) -> anyhow::Result<Response> {
    platform.sign_in(tenant, ORIGIN, email, PASSWORD).await
}

/// A TOTP user signs in all the way (password, then a fresh code).
async fn totp_sign_in(
    platform: &Platform,
    tenant: &Tenant,
    user: &Enrolled,
) -> anyhow::Result<Response> {
    platform.clock.advance(30);
    let token = mfa_token(platform, tenant, &user.email).await?;
    let code = code_at(&user.secret, platform.clock.unix())?;
    verify_totp(platform, tenant, &token, &code).await
}

#[tokio::test]
async fn master_keys_rotate_online_and_everything_sealed_before_still_works() -> anyhow::Result<()>
{
    // Own platform: restarts session, user and auth with other master keys,
    // stops the mail sink and moves the clock.
    let mut platform = Platform::start().await?;
    let tenant = tenant(&platform, "Rotation").await?;
    platform
        .set_waf_policy(
            &tenant,
            json!({
                "client": {"limit": 5000, "window_seconds": 60},
                "verification": {"limit": 5000, "window_seconds": 60},
                "recipient_limit": 1000,
            }),
        )
        .await?;

    // Under key A: a password user with a session, two TOTP users, five
    // failed TOTP codes (the user backs off), and an email code whose mail
    // is still queued (the mail sink is down).
    let plain = "plain.person@example.com";
    let signed_up = platform
        .sign_up(&tenant, ORIGIN, None, plain, PASSWORD)
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);
    let old_token = signed_up.str("/session_token");
    let old_refresh = signed_up.str("/refresh_token");
    let totp = user_with_totp(&platform, &tenant, "totp.person@example.com").await?;
    let idle = user_with_totp(&platform, &tenant, "idle.person@example.com").await?;
    for attempt in 0..5 {
        let token = mfa_token(&platform, &tenant, &totp.email).await?;
        let wrong = wrong_totp(&totp.secret, platform.clock.unix())?;
        let r = verify_totp(&platform, &tenant, &token, &wrong).await?;
        assert_eq!(r.code(), Some("code_invalid"), "{attempt}: {}", r.json);
    }
    let outstanding_mfa = mfa_token(&platform, &tenant, &totp.email).await?;
    // (A new address: a code proving the plain user's address would, by
    // design, void its unproven password: account pre-hijacking.)
    let newcomer = "new.person@example.com";
    platform.smtp.stop();
    let r = post(
        &platform,
        &tenant,
        "/v1/client/email_codes",
        None,
        json!({ "email": newcomer }),
    )
    .await?;
    assert_eq!(r.status, 202, "{}", r.json);

    // The rotation: B current, A previous, in session, user and auth.
    let mut old = Vec::new();
    for service in ["session", "user", "auth"] {
        let (a, previous) = platform.master_keys(service)?;
        assert!(previous.is_none());
        let b = idm_testkit::master_key();
        platform
            .restart_with_master_keys(service, b.clone(), Some(a.clone()))
            .await?;
        old.push((service, a, b));
    }

    // Everything sealed or derived under A still works.
    let r = verify(&platform, 0, &tenant, &old_token).await?;
    assert_eq!(r.status, 200, "a session from before verifies: {}", r.json);
    let r = platform.refresh(&tenant, &old_refresh).await?;
    assert_eq!(r.status, 200, "its refresh token rotates: {}", r.json);
    let r = signs_in(&platform, &tenant, plain).await?;
    assert_eq!(r.status, 200, "sign-in by email (blind index): {}", r.json);
    let fresh = r.str("/session_token");
    let r = verify(&platform, 0, &tenant, &fresh).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    // The failure budget survived: still backing off, even with the right
    // code, on an MFA token issued before the rotation.
    let right = code_at(&totp.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &tenant, &outstanding_mfa, &right).await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("too_many_attempts")),
        "the failures before the rotation still count: {}",
        r.json
    );
    // Once the back-off is over, TOTP sign-in works (secret sealed under A).
    platform.clock.advance(60);
    let r = totp_sign_in(&platform, &tenant, &totp).await?;
    assert_eq!(r.status, 200, "TOTP sign-in: {}", r.json);
    // The mail queued under A is sent, and its code (MAC'd under A) verifies.
    platform.smtp.resume().await?;
    let mail = platform
        .smtp
        .wait_for(newcomer, 0, Duration::from_secs(40))
        .await?;
    let code = idm_testkit::smtp::six_digit_code(&mail).unwrap_or_default();
    let r = post(
        &platform,
        &tenant,
        "/v1/client/email_codes/verify",
        None,
        json!({ "email": newcomer, "code": code }),
    )
    .await?;
    assert_eq!(r.status, 200, "the outstanding email code: {}", r.json);

    // The re-seal passes move every row to B (the idle TOTP user's secret,
    // never read since, included) and the gauges reach 0.
    for service in ["session", "user", "auth"] {
        resealed(&mut platform, service, &tenant).await?;
    }

    // The operator removes A: everything still works with B alone.
    for (service, _, b) in &old {
        platform
            .restart_with_master_keys(service, b.clone(), None)
            .await?;
    }
    let r = signs_in(&platform, &tenant, plain).await?;
    assert_eq!(r.status, 200, "with B alone: {}", r.json);
    let r = verify(&platform, 0, &tenant, &r.str("/session_token")).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = totp_sign_in(&platform, &tenant, &idle).await?;
    assert_eq!(
        r.status, 200,
        "the idle user's TOTP with B alone: {}",
        r.json
    );
    let r = totp_sign_in(&platform, &tenant, &totp).await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // A wrong rotation of the user service: C without B. Nothing opens, the
    // sign-in fails with an error (not a panic, not a fallback), and the
    // stored key is left as it was.
    let (b_user, _) = platform.master_keys("user")?;
    let before = sealed_rows(&mut platform, "user", &tenant).await?;
    let c = idm_testkit::master_key();
    platform
        .restart_with_master_keys("user", c.clone(), None)
        .await?;
    let r = signs_in(&platform, &tenant, plain).await?;
    assert!(
        r.status >= 500 && r.json["error"]["code"].is_string(),
        "without the previous key: {} {}",
        r.status,
        r.json
    );
    // An attacker's guess at the previous key opens nothing either.
    platform
        .restart_with_master_keys("user", c.clone(), Some(idm_testkit::master_key()))
        .await?;
    let r = signs_in(&platform, &tenant, plain).await?;
    assert!(
        r.status >= 500,
        "a wrong previous key: {} {}",
        r.status,
        r.json
    );
    assert_eq!(sealed_rows(&mut platform, "user", &tenant).await?, before);
    // The operator corrects it: C with B as previous works again.
    platform
        .restart_with_master_keys("user", c, Some(b_user))
        .await?;
    let r = signs_in(&platform, &tenant, plain).await?;
    assert_eq!(r.status, 200, "with the right previous key: {}", r.json);
    resealed(&mut platform, "user", &tenant).await?;

    // The same for auth's TOTP secrets: D alone cannot open them.
    let (b_auth, _) = platform.master_keys("auth")?;
    platform
        .restart_with_master_keys("auth", idm_testkit::master_key(), None)
        .await?;
    platform.clock.advance(30);
    let token = mfa_token(&platform, &tenant, &idle.email).await?;
    let code = code_at(&idle.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &tenant, &token, &code).await?;
    assert!(
        r.status >= 500 && r.json["error"]["code"].is_string(),
        "a TOTP secret under a key auth no longer has: {} {}",
        r.status,
        r.json
    );
    drop(b_auth);
    platform.stop().await
}
