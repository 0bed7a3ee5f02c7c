//! Users (issue 11): password reset by email, setting a password for a
//! passwordless user, removing a password. Every change emits
//! `password.changed`.

use crate::factor_kit::{tenant, MAIL_WAIT, ORIGIN, PASSWORD};
use crate::user_kit::*;
use idm_testkit::smtp::six_digit_code;
use idm_testkit::{unique_email, Platform, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const NEW_PASSWORD: &str = "a much better passphrase";

async fn post(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<idm_testkit::Response> {
    platform
        .client_call(0, tenant, Method::POST, path, session, Some(body))
        .await
}

async fn me(platform: &Platform, tenant: &Tenant, session: &str) -> anyhow::Result<u16> {
    Ok(platform
        .client_call(0, tenant, Method::GET, "/v1/client/me", Some(session), None)
        .await?
        .status)
}

#[tokio::test]
async fn a_reset_code_is_single_use_and_ends_the_other_sessions() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Reset A").await?;
    let b = tenant(platform, "Reset B").await?;
    let email = unique_email("forgot");
    let up = platform.sign_up(&a, ORIGIN, None, &email, PASSWORD).await?;
    assert_eq!(up.status, 201, "{}", up.json);
    let user = up.str("/user/id");
    let first = up.str("/session_token");
    let second = platform.sign_in(&a, ORIGIN, &email, PASSWORD).await?;
    let second = second.str("/session_token");

    // Unknown addresses get the same answer, and no mail.
    let nobody = unique_email("nobody");
    let r = post(
        platform,
        &a,
        "/v1/client/password_resets",
        None,
        json!({"email": nobody}),
    )
    .await?;
    assert_eq!((r.status, r.json.clone()), (202, json!({"sent": true})));
    let r = post(
        platform,
        &a,
        "/v1/client/password_resets",
        None,
        json!({"email": email, "redirect_url": "https://app.example.com/reset"}),
    )
    .await?;
    assert_eq!((r.status, r.json.clone()), (202, json!({"sent": true})));
    let mail = nth_mail_with(platform, &email, RESET_MAIL, 0, MAIL_WAIT).await?;
    assert!(
        mail.contains("https://app.example.com/reset?idm_reset_code="),
        "{mail}"
    );
    let code = long_code(&mail, "idm_reset_code").unwrap_or_default();
    assert_eq!(code.len(), 43);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(platform
        .smtp
        .wait_for(&nobody, 0, Duration::from_millis(100))
        .await
        .is_err());

    let confirm = "/v1/client/password_resets/confirm";
    // A weak password is refused before the code is used.
    let r = post(
        platform,
        &a,
        confirm,
        None,
        json!({"code": code, "new_password": "short"}),
    )
    .await?;
    refused(&r, 422, "weak_password");
    // Wrong codes, and the right one with another issuer's key.
    for bad in ["x", &"B".repeat(43)] {
        let r = post(
            platform,
            &a,
            confirm,
            None,
            json!({"code": bad, "new_password": NEW_PASSWORD}),
        )
        .await?;
        refused(&r, 422, "code_invalid");
    }
    let r = post(
        platform,
        &b,
        confirm,
        None,
        json!({"code": code, "new_password": NEW_PASSWORD}),
    )
    .await?;
    refused(&r, 422, "code_invalid");
    let r = post(platform, &a, confirm, None, json!({"code": code})).await?;
    refused(&r, 400, "invalid_request");

    let r = post(
        platform,
        &a,
        confirm,
        None,
        json!({"code": code, "new_password": NEW_PASSWORD}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.str("/user/id"), user);
    let fresh = r.str("/session_token");
    assert!(!fresh.is_empty());
    // The other sessions ended; the new one works.
    assert_eq!(me(platform, &a, &first).await?, 401);
    assert_eq!(me(platform, &a, &second).await?, 401);
    assert_eq!(me(platform, &a, &fresh).await?, 200);
    // (The address was unproven until the code: its first proof already
    // ended every session, as any first proof does; see docs/SECURITY.md.)
    let event = platform
        .last_event(&a.issuer_id, "password.changed")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["user_id"], json!(user));
    // Single use; the old password is gone, the new one signs in.
    let r = post(
        platform,
        &a,
        confirm,
        None,
        json!({"code": code, "new_password": NEW_PASSWORD}),
    )
    .await?;
    refused(&r, 422, "code_invalid");
    let r = platform.sign_in(&a, ORIGIN, &email, PASSWORD).await?;
    refused(&r, 401, "invalid_credentials");
    let r = platform.sign_in(&a, ORIGIN, &email, NEW_PASSWORD).await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // A reset may keep the other sessions when asked.
    let r = post(
        platform,
        &a,
        "/v1/client/password_resets",
        None,
        json!({"email": email}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = nth_mail_with(platform, &email, RESET_MAIL, 1, MAIL_WAIT).await?;
    let code = long_code(&mail, "idm_reset_code").unwrap_or_default();
    assert_eq!(code.len(), 43, "{mail}");
    let r = post(
        platform,
        &a,
        confirm,
        None,
        json!({"code": code, "new_password": PASSWORD, "revoke_other_sessions": false}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(me(platform, &a, &fresh).await?, 200);
    let event = platform
        .last_event(&a.issuer_id, "password.changed")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["revoked_sessions"], json!(0));

    // Now that the address is proven, a reset counts what it ends.
    let live = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}/sessions"),
            &a.secret_key,
            None,
        )
        .await?;
    let live = ids(&live.json).len();
    assert!(live >= 3, "{live}");
    let r = post(
        platform,
        &a,
        "/v1/client/password_resets",
        None,
        json!({"email": email}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = nth_mail_with(platform, &email, RESET_MAIL, 2, MAIL_WAIT).await?;
    let code = long_code(&mail, "idm_reset_code").unwrap_or_default();
    let r = post(
        platform,
        &a,
        confirm,
        None,
        json!({"code": code, "new_password": NEW_PASSWORD}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let event = platform
        .last_event(&a.issuer_id, "password.changed")
        .await?
        .unwrap_or_default();
    assert_eq!(
        event["data"],
        json!({"user_id": user, "revoked_sessions": live})
    );
    assert_eq!(me(platform, &a, &fresh).await?, 401);

    // Bad requests.
    for (body, status, code) in [
        (json!({}), 400, "invalid_request"),
        (json!({"email": "not-an-address"}), 422, "invalid_email"),
        (json!({"email": email, "extra": 1}), 400, "invalid_request"),
        (
            json!({"email": email, "redirect_url": "https://evil.example.net/"}),
            422,
            "validation_failed",
        ),
    ] {
        let r = post(
            platform,
            &a,
            "/v1/client/password_resets",
            None,
            body.clone(),
        )
        .await?;
        assert_eq!(
            (r.status, r.code()),
            (status, Some(code)),
            "{body}: {}",
            r.json
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_password_is_set_and_removed_only_with_step_up_and_while_another_way_in_remains(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Set and remove").await?;
    // A passwordless user signs in with an email code (the address is proven).
    let email = unique_email("nopass");
    let created = create_user(platform, &a, json!({"email": email})).await?;
    let user = created["id"].as_str().unwrap_or_default().to_owned();
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes",
        None,
        json!({"email": email}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = nth_mail_with(platform, &email, "Enter this code to sign in", 0, MAIL_WAIT).await?;
    let code = six_digit_code(&mail).unwrap_or_default();
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let session = r.str("/session_token");

    // Setting a password needs a proof too: here a fresh email code.
    let r = post(
        platform,
        &a,
        "/v1/client/password",
        Some(&session),
        json!({"new_password": PASSWORD}),
    )
    .await?;
    refused(&r, 401, "step_up_required");
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes",
        None,
        json!({"email": email}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = nth_mail_with(platform, &email, "Enter this code to sign in", 1, MAIL_WAIT).await?;
    let code = six_digit_code(&mail).unwrap_or_default();
    let r = post(
        platform,
        &a,
        "/v1/client/password",
        Some(&session),
        json!({"new_password": PASSWORD, "email_code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let before = platform
        .count_events(&a.issuer_id, "password.changed")
        .await?;
    assert_eq!(before, 1);
    let r = platform.sign_in(&a, ORIGIN, &email, PASSWORD).await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Removing it: a proof is needed, a wrong one is refused.
    let remove = |body: Option<serde_json::Value>| {
        let session = session.clone();
        let a = a.clone();
        async move {
            platform
                .client_call(
                    0,
                    &a,
                    Method::DELETE,
                    "/v1/client/password",
                    Some(&session),
                    body,
                )
                .await
        }
    };
    refused(&remove(None).await?, 401, "step_up_required");
    refused(
        &remove(Some(json!({"current_password": "wrong password!"}))).await?,
        401,
        "invalid_credentials",
    );
    refused(
        &remove(Some(json!({"pin": 1}))).await?,
        400,
        "invalid_request",
    );
    let r = remove(Some(json!({"current_password": PASSWORD}))).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["changed"], json!(true));
    assert_eq!(
        platform
            .count_events(&a.issuer_id, "password.changed")
            .await?,
        2
    );
    let event = platform
        .last_event(&a.issuer_id, "password.changed")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["user_id"], json!(user));
    let r = platform.sign_in(&a, ORIGIN, &email, PASSWORD).await?;
    refused(&r, 401, "invalid_credentials");
    // Nothing left to remove.
    refused(
        &remove(Some(json!({"current_password": PASSWORD}))).await?,
        409,
        "conflict",
    );
    // The store holds no hash any more (in the user's region only).
    let region = idm_core::Region::parse(created["region"].as_str().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let db = platform.region_db(region).await?;
    let hash: Option<String> = db
        .query_one(
            &format!(
                "SELECT password_hash FROM {}.users WHERE id = $1",
                schema_of(&a)
            ),
            &[&user],
        )
        .await?
        .get(0);
    assert_eq!(hash, None);

    // An unproven address keeps its password: removing it would lock the
    // user out.
    let other = unique_email("unproven");
    let up = platform.sign_up(&a, ORIGIN, None, &other, PASSWORD).await?;
    let other_session = up.str("/session_token");
    let r = platform
        .client_call(
            0,
            &a,
            Method::DELETE,
            "/v1/client/password",
            Some(&other_session),
            Some(json!({"current_password": PASSWORD})),
        )
        .await?;
    refused(&r, 409, "conflict");
    let r = platform.sign_in(&a, ORIGIN, &other, PASSWORD).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    Ok(())
}

#[tokio::test]
async fn a_reset_does_not_skip_the_second_factor() -> anyhow::Result<()> {
    use crate::factor_kit::{code_at, email_code, verify_totp};
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Reset with TOTP").await?;
    // A proven address (email-code sign-in), then TOTP.
    let email = unique_email("totp");
    create_user(platform, &a, json!({"email": email, "password": PASSWORD})).await?;
    let code = email_code(platform, &a, &email, 0).await?;
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": email, "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let session = r.str("/session_token");
    let enrolled = post(
        platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&session),
        json!({}),
    )
    .await?;
    assert_eq!(enrolled.status, 200, "{}", enrolled.json);
    let secret = enrolled.str("/secret");
    let r = post(
        platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({"code": code_at(&secret, platform.clock.unix())?}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    platform.clock.advance(30);

    let r = post(
        platform,
        &a,
        "/v1/client/password_resets",
        None,
        json!({"email": email}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = nth_mail_with(platform, &email, RESET_MAIL, 0, MAIL_WAIT).await?;
    let code = long_code(&mail, "idm_reset_code").unwrap_or_default();
    let r = post(
        platform,
        &a,
        "/v1/client/password_resets/confirm",
        None,
        json!({"code": code, "new_password": NEW_PASSWORD}),
    )
    .await?;
    refused(&r, 401, "mfa_required");
    let token = r.str("/error/mfa_token");
    assert!(!token.is_empty(), "{}", r.json);
    // The password did change; the session needs the second factor.
    let r = verify_totp(
        platform,
        &a,
        &token,
        &code_at(&secret, platform.clock.unix())?,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform.sign_in(&a, ORIGIN, &email, NEW_PASSWORD).await?;
    refused(&r, 401, "mfa_required");
    // The session that enrolled TOTP was ended by the reset.
    assert_eq!(me(platform, &a, &session).await?, 401);
    Ok(())
}
