//! TOTP enrollment, MFA sign-in, step replay, backup codes and MFA tokens.

use idm_core::Region;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use totp_rs::{Algorithm, Builder, Secret};

const PASSWORD: &str = "correct horse battery";

fn code_at(secret_base32: &str, unix: i64) -> anyhow::Result<String> {
    let secret = Secret::try_from_base32(secret_base32).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build_noncompliant();
    Ok(totp.generate(u64::try_from(unix)?).to_string())
}

async fn client(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<Response> {
    platform
        .client_call(0, tenant, Method::POST, path, session, Some(body))
        .await
}

async fn mfa_sign_in(platform: &Platform, tenant: &Tenant) -> anyhow::Result<String> {
    let r = platform
        .sign_in(
            tenant,
            "https://app.example.com",
            "otto@example.com",
            PASSWORD,
        )
        .await?;
    anyhow::ensure!(
        r.code() == Some("mfa_required") && r.status == 401,
        "{}",
        r.json
    );
    Ok(r.str("/error/mfa_token"))
}

#[tokio::test]
async fn totp_enrollment_then_mfa_sign_in_with_codes_and_backup_codes_each_once(
) -> anyhow::Result<()> {
    // Own platform: moves the clock.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let a = platform.create_account("Mfa").await?;
    let b = platform.create_account("Other").await?;
    platform.allow_origins(&a, &["app.example.com"]).await?;
    platform.allow_origins(&b, &["app.example.com"]).await?;
    let signed_up = platform
        .sign_up(
            &a,
            "https://app.example.com",
            Some("au"),
            "otto@example.com",
            PASSWORD,
        )
        .await?;
    let session = signed_up.str("/session_token");

    // Enroll: a secret and an otpauth URL; stored only sealed, in the user's region.
    let enrolled = client(
        &platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&session),
        json!({}),
    )
    .await?;
    assert_eq!(enrolled.status, 200, "{}", enrolled.json);
    let secret = enrolled.str("/secret");
    assert!(
        enrolled.str("/otpauth_url").starts_with("otpauth://totp/"),
        "{}",
        enrolled.json
    );
    let oc = platform.region_db(Region::Oc).await?;
    let schema = format!("iss_{}", a.issuer_id.trim_start_matches("iss_"));
    let sealed: String = oc
        .query_one(
            &format!("SELECT totp_pending_sealed FROM {schema}.users"),
            &[],
        )
        .await?
        .get(0);
    assert!(!sealed.contains(&secret) && !sealed.is_empty());

    // Confirm: a wrong code fails; the right one enables MFA and returns 10 backup codes once.
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({"code": "000000"}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"));
    let now = platform.clock.unix();
    let confirmed = client(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({"code": code_at(&secret, now)?}),
    )
    .await?;
    assert_eq!(confirmed.status, 200, "{}", confirmed.json);
    let backups: Vec<String> = confirmed.json["backup_codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(backups.len(), 10);
    let event = platform
        .last_event(&a.issuer_id, "mfa.enabled")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["user_id"], json!(signed_up.str("/user/id")));

    // Sign-in now stops at mfa_required with a token.
    let token = mfa_sign_in(&platform, &a).await?;
    assert_eq!(token.len(), 43);
    // The step used to confirm cannot be used again…
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": code_at(&secret, now)?}),
    )
    .await?;
    assert_eq!(
        r.code(),
        Some("code_already_used"),
        "a used TOTP step is a replay: {}",
        r.json
    );
    assert_eq!(r.status, 422);
    assert!(
        r.str("/error/message").contains("wait for"),
        "the answer says to wait for the next code: {}",
        r.json
    );
    // …the next step can, once; A's token is useless at B.
    platform.clock.advance(30);
    let next = code_at(&secret, platform.clock.unix())?;
    let r = client(
        &platform,
        &b,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": next}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "wrong issuer");
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": next}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.str("/session_token").starts_with("idm1."));
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": next}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "an MFA token works once");
    let token = mfa_sign_in(&platform, &a).await?;
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": next}),
    )
    .await?;
    assert_eq!(
        r.code(),
        Some("code_already_used"),
        "same step, new token: still a replay"
    );

    // Backup codes: each works once.
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "backup_code": backups[0]}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let token = mfa_sign_in(&platform, &a).await?;
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "backup_code": backups[0]}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"));
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "backup_code": backups[1].to_uppercase()}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Bad shapes and exhaustion of an MFA token.
    let token = mfa_sign_in(&platform, &a).await?;
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token}),
    )
    .await?;
    assert_eq!(r.code(), Some("validation_failed"));
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": "1", "backup_code": "x"}),
    )
    .await?;
    assert_eq!(r.code(), Some("validation_failed"));
    // Bad shapes are refused before they count; five wrong codes use it up.
    for _ in 0..5 {
        let r = client(
            &platform,
            &a,
            "/v1/client/mfa/verify",
            None,
            json!({"mfa_token": token, "code": "000000"}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"));
    }
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "code": code_at(&secret, platform.clock.unix() + 30)?}),
    )
    .await?;
    assert_eq!(r.code(), Some("too_many_attempts"));
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": "nope", "code": "123456"}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"));

    // Passwordless sign-in of an MFA user also asks for the second factor.
    // (Otto's address was never proven, so his first email proof would clear
    // what was set up before it: see the takeover suite. Pia proves hers first.)
    let pia = "pia@example.com";
    let email_code = |nth: usize| {
        let platform = &platform;
        let a = &a;
        async move {
            client(
                platform,
                a,
                "/v1/client/email_codes",
                None,
                json!({"email": pia}),
            )
            .await?;
            let mail = platform
                .smtp
                .wait_for(pia, nth, std::time::Duration::from_secs(20))
                .await?;
            anyhow::Ok(idm_testkit::smtp::six_digit_code(&mail).unwrap_or_default())
        }
    };
    let code = email_code(0).await?;
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": pia, "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let session = r.str("/session_token");
    let enrolled = client(
        &platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&session),
        json!({}),
    )
    .await?;
    let pia_secret = enrolled.str("/secret");
    let r = client(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({"code": code_at(&pia_secret, platform.clock.unix())?}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    // Mail 1 was the notice that two-step verification was turned on.
    let code = email_code(2).await?;
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": pia, "code": code}),
    )
    .await?;
    assert_eq!(r.code(), Some("mfa_required"), "{}", r.json);
    platform.stop().await
}

/// The authenticator entry names the tenant (issue 16): the issuer's display
/// name is the otpauth `issuer` and the label's prefix, percent-encoded, so
/// the same address at two tenants gives two entries a person can tell
/// apart; a `:` in a name (the label's separator) becomes a space.
#[tokio::test]
async fn authenticator_entries_name_the_tenant() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Zoë & Co").await?;
    let b = platform.create_account("Shop: Two").await?;
    let mut entries = Vec::new();
    for tenant in [&a, &b] {
        platform.allow_origins(tenant, &["app.example.com"]).await?;
        let signed_up = platform
            .sign_up(
                tenant,
                "https://app.example.com",
                None,
                "sam+mfa@example.com",
                PASSWORD,
            )
            .await?;
        assert_eq!(signed_up.status, 201, "{}", signed_up.json);
        let enrolled = client(
            platform,
            tenant,
            "/v1/client/mfa/totp",
            Some(&signed_up.str("/session_token")),
            json!({}),
        )
        .await?;
        assert_eq!(enrolled.status, 200, "{}", enrolled.json);
        entries.push(enrolled.str("/otpauth_url"));
    }
    let parsed: Vec<totp_rs::Totp> = entries
        .iter()
        .map(|url| totp_rs::Totp::from_url(url).map_err(|e| anyhow::anyhow!("{url}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    // from_url also checks that the label's prefix and `issuer` agree.
    assert_eq!(parsed[0].issuer(), Some("Zoë & Co (live)"));
    assert_eq!(parsed[1].issuer(), Some("Shop Two (live)"));
    for (url, totp) in entries.iter().zip(&parsed) {
        assert_eq!(totp.account_name(), "sam+mfa@example.com");
        assert!(
            !url.contains(' ') && !url["otpauth://totp/".len()..].contains("&Co"),
            "not percent-encoded: {url}"
        );
    }
    assert!(
        entries[0].starts_with("otpauth://totp/Zo%C3%AB%20%26%20Co%20"),
        "{}",
        entries[0]
    );
    assert!(
        entries[0].contains("issuer=Zo%C3%AB%20%26%20Co%20"),
        "{}",
        entries[0]
    );
    assert_ne!(
        entries[0].split('?').next(),
        entries[1].split('?').next(),
        "two tenants, one address: two different entries"
    );
    Ok(())
}
