//! Step-up for credential changes (issue 9 §3): a session alone — a stolen
//! cookie — cannot replace or remove TOTP, regenerate backup codes or change
//! the password; the current factor given in the same request can. Each
//! change emits an event with ids only and mails the owner a notice.

use crate::factor_kit::*;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;

const NEW_PASSWORD: &str = "a much longer new passphrase";

async fn remove_totp(
    platform: &Platform,
    tenant: &Tenant,
    session: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Response> {
    call(
        platform,
        tenant,
        Method::DELETE,
        "/v1/client/mfa/totp",
        Some(session),
        body,
    )
    .await
}

fn refused_for_step_up(r: &Response) -> bool {
    r.status == 401 && r.code() == Some("step_up_required")
}

/// A second session of the user (another device): password, then TOTP.
async fn another_session(
    platform: &Platform,
    tenant: &Tenant,
    user: &Enrolled,
) -> anyhow::Result<String> {
    platform.clock.advance(30);
    let token = mfa_token(platform, tenant, &user.email).await?;
    let code = code_at(&user.secret, platform.clock.unix())?;
    let r = verify_totp(platform, tenant, &token, &code).await?;
    anyhow::ensure!(r.status == 200, "second session: {}", r.json);
    Ok(r.str("/session_token"))
}

async fn me(platform: &Platform, tenant: &Tenant, session: &str) -> anyhow::Result<Response> {
    call(
        platform,
        tenant,
        Method::GET,
        "/v1/client/me",
        Some(session),
        None,
    )
    .await
}

async fn subjects(platform: &Platform) -> Vec<String> {
    platform
        .smtp
        .messages()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("subject:"))
                .map(str::to_owned)
        })
        .collect()
}

async fn wait_for_subject(platform: &Platform, fragment: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if subjects(platform)
            .await
            .iter()
            .any(|s| s.contains(fragment))
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("no notice {fragment:?}: {:?}", subjects(platform).await)
}

/// The newest event of `event_type` names the user by id and holds nothing
/// personal.
async fn event_names_only_ids(
    platform: &Platform,
    tenant: &Tenant,
    event_type: &str,
    user: &Enrolled,
) -> anyhow::Result<serde_json::Value> {
    let event = platform
        .last_event(&tenant.issuer_id, event_type)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no {event_type} event"))?;
    anyhow::ensure!(event["data"]["user_id"] == json!(user.user_id), "{event}");
    let text = event.to_string();
    anyhow::ensure!(
        !text.contains(&user.email) && !text.contains(PASSWORD) && !text.contains(NEW_PASSWORD),
        "{event}"
    );
    Ok(event)
}

#[tokio::test]
async fn a_stolen_session_alone_changes_no_credential_but_the_current_factor_does(
) -> anyhow::Result<()> {
    // Own platform: moves the clock.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "StepUp").await?;
    let b = tenant(&platform, "Elsewhere").await?;
    let user = user_with_totp(&platform, &a, "careful.owner@example.com").await?;
    let stolen = user.session.clone();

    // The session alone: refused, and told which proofs would count (the
    // password is not one of them for the second factor).
    let r = remove_totp(&platform, &a, &stolen, None).await?;
    assert!(refused_for_step_up(&r), "{}", r.json);
    assert_eq!(
        r.json["error"]["accepted_proofs"],
        json!(["totp_code", "backup_code"])
    );
    let r = remove_totp(
        &platform,
        &a,
        &stolen,
        Some(json!({"current_password": PASSWORD})),
    )
    .await?;
    assert!(
        refused_for_step_up(&r),
        "a password does not remove TOTP: {}",
        r.json
    );
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/backup_codes",
        Some(&stolen),
        json!({}),
    )
    .await?;
    assert!(refused_for_step_up(&r), "{}", r.json);
    let r = post(
        &platform,
        &a,
        "/v1/client/password",
        Some(&stolen),
        json!({"new_password": NEW_PASSWORD}),
    )
    .await?;
    assert!(refused_for_step_up(&r), "{}", r.json);
    assert_eq!(
        r.json["error"]["accepted_proofs"],
        json!(["current_password", "totp_code", "backup_code", "email_code"])
    );
    // Re-enrolling: starting is harmless (a pending secret), confirming is not.
    let pending = post(
        &platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&stolen),
        json!({}),
    )
    .await?;
    assert_eq!(pending.status, 200, "{}", pending.json);
    let attacker_secret = pending.str("/secret");
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&stolen),
        json!({"code": code_at(&attacker_secret, platform.clock.unix())?}),
    )
    .await?;
    assert!(refused_for_step_up(&r), "{}", r.json);

    // Wrong or doubled proofs fail as themselves, and change nothing.
    let wrong = wrong_totp(&user.secret, platform.clock.unix())?;
    let r = remove_totp(&platform, &a, &stolen, Some(json!({"totp_code": wrong}))).await?;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("code_invalid")),
        "{}",
        r.json
    );
    let r = post(
        &platform,
        &a,
        "/v1/client/password",
        Some(&stolen),
        json!({"new_password": NEW_PASSWORD, "current_password": "not the password"}),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("invalid_credentials")),
        "{}",
        r.json
    );
    let r = remove_totp(
        &platform,
        &a,
        &stolen,
        Some(json!({"totp_code": "123456", "backup_code": "abcde-fghij"})),
    )
    .await?;
    assert_eq!(r.code(), Some("validation_failed"), "{}", r.json);
    let r = remove_totp(&platform, &a, &stolen, Some(json!({"session": "x"}))).await?;
    assert_eq!(r.code(), Some("invalid_request"), "{}", r.json);

    // Another tenant's key never accepts this session; a foreign origin is
    // refused before anything else.
    let r = platform
        .client_call(
            0,
            &b,
            Method::DELETE,
            "/v1/client/mfa/totp",
            Some(&stolen),
            None,
        )
        .await?;
    assert_eq!(r.status, 401, "{}", r.json);
    assert_ne!(r.code(), Some("step_up_required"));
    let bearer = format!("Bearer {stolen}");
    let r = platform
        .send(
            Method::POST,
            "/v1/client/password",
            &[
                ("idm-api-key", a.restricted_key.as_str()),
                ("origin", "https://evil.example.net"),
                ("authorization", bearer.as_str()),
            ],
            Some(json!({"new_password": NEW_PASSWORD, "current_password": PASSWORD})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("origin_not_allowed")));
    let r = me(&platform, &a, &stolen).await?;
    assert_eq!(r.json["mfa_enabled"], json!(true), "still on: {}", r.json);
    let old_device = another_session(&platform, &a, &user).await?;

    // With the current factor in the request, each change goes through.
    // New backup codes (proof: a TOTP code); the old codes stop working.
    platform.clock.advance(30);
    let proof = code_at(&user.secret, platform.clock.unix())?;
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/backup_codes",
        Some(&stolen),
        json!({"totp_code": proof}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let backups = strings(&r.json["backup_codes"]);
    assert_eq!(backups.len(), 10);
    event_names_only_ids(&platform, &a, "mfa.backup_codes_regenerated", &user).await?;
    wait_for_subject(&platform, "New backup codes").await?;
    let token = mfa_token(&platform, &a, &user.email).await?;
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "backup_code": user.backup_codes[1]}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "old backup codes are gone");

    // Replace the authenticator (proof: one of the new backup codes).
    let pending = post(
        &platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&stolen),
        json!({}),
    )
    .await?;
    assert_eq!(pending.status, 200, "{}", pending.json);
    let new_secret = pending.str("/secret");
    platform.clock.advance(30);
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&stolen),
        json!({"code": code_at(&new_secret, platform.clock.unix())?, "backup_code": backups[0]}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let event = event_names_only_ids(&platform, &a, "mfa.enabled", &user).await?;
    assert_eq!(event["data"]["replaced"], json!(true));
    wait_for_subject(&platform, "authenticator app was replaced").await?;
    platform.clock.advance(30);
    let token = mfa_token(&platform, &a, &user.email).await?;
    let r = verify_totp(
        &platform,
        &a,
        &token,
        &code_at(&user.secret, platform.clock.unix())?,
    )
    .await?;
    assert_eq!(
        r.code(),
        Some("code_invalid"),
        "the old authenticator is gone"
    );
    let r = verify_totp(
        &platform,
        &a,
        &token,
        &code_at(&new_secret, platform.clock.unix())?,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Change the password (proof: the current password): other sessions end,
    // this one stays.
    let r = post(
        &platform,
        &a,
        "/v1/client/password",
        Some(&stolen),
        json!({"new_password": NEW_PASSWORD, "current_password": PASSWORD}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["revoked_sessions"].as_u64() >= Some(2), "{}", r.json);
    assert_eq!(
        me(&platform, &a, &old_device).await?.code(),
        Some("session_revoked")
    );
    assert_eq!(me(&platform, &a, &stolen).await?.status, 200);
    event_names_only_ids(&platform, &a, "password.changed", &user).await?;
    wait_for_subject(&platform, "Your password was changed").await?;
    let r = platform.sign_in(&a, ORIGIN, &user.email, PASSWORD).await?;
    assert_eq!(r.code(), Some("invalid_credentials"));
    let r = platform
        .sign_in(&a, ORIGIN, &user.email, NEW_PASSWORD)
        .await?;
    assert_eq!(r.code(), Some("mfa_required"));

    // Remove TOTP (proof: a code of the new authenticator).
    platform.clock.advance(30);
    let r = remove_totp(
        &platform,
        &a,
        &stolen,
        Some(json!({"totp_code": code_at(&new_secret, platform.clock.unix())?})),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    event_names_only_ids(&platform, &a, "mfa.disabled", &user).await?;
    wait_for_subject(&platform, "Two-step verification was turned off").await?;
    let r = platform
        .sign_in(&a, ORIGIN, &user.email, NEW_PASSWORD)
        .await?;
    assert_eq!(r.status, 200, "no second step any more: {}", r.json);
    let r = remove_totp(&platform, &a, &stolen, None).await?;
    assert_eq!(r.code(), Some("not_found"), "nothing left to remove");
    platform.stop().await
}

#[tokio::test]
async fn operators_unlock_their_own_users_only() -> anyhow::Result<()> {
    // Own platform: moves the clock.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Operator").await?;
    let b = tenant(&platform, "Stranger").await?;
    let user = user_with_totp(&platform, &a, "locked.out@example.com").await?;
    for failures in 0..10u32 {
        if failures >= 5 {
            platform.clock.advance(30 << (failures - 5));
        }
        let token = mfa_token(&platform, &a, &user.email).await?;
        let wrong = wrong_totp(&user.secret, platform.clock.unix())?;
        let r = verify_totp(&platform, &a, &token, &wrong).await?;
        assert_eq!(r.code(), Some("code_invalid"), "{}", r.json);
    }
    let path = format!("/v1/users/{}/factors/unlock", user.user_id);
    let locked = || async {
        platform.clock.advance(30);
        let token = mfa_token(&platform, &a, &user.email).await?;
        let right = code_at(&user.secret, platform.clock.unix())?;
        anyhow::Ok(
            verify_totp(&platform, &a, &token, &right).await?.code() == Some("factor_locked"),
        )
    };
    assert!(locked().await?);

    // A restricted key, another tenant's key, and a key without users:manage
    // are all refused, and the lock stays.
    let r = platform
        .client_call(0, &a, Method::POST, &path, None, Some(json!({})))
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"), "{}", r.json);
    let r = platform
        .backend(Method::POST, &path, &b.secret_key, Some(json!({})))
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "support", "scopes": ["users:write"]})),
        )
        .await?;
    assert_eq!(reader.status, 201, "{}", reader.json);
    let r = platform
        .backend(Method::POST, &path, &reader.str("/key"), Some(json!({})))
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"), "{}", r.json);
    assert!(locked().await?);

    let r = platform
        .backend(Method::POST, &path, &a.secret_key, Some(json!({})))
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["cleared"], json!(true));
    assert!(!locked().await?, "unlocked");
    let event = platform
        .last_event(&a.issuer_id, "factor.unlocked")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["by"], json!("operator"));
    platform.stop().await
}
