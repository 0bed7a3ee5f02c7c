//! Account pre-hijacking, and hiding whether an address has an account
//! (issue 9 §3 and §6), tried end to end as an attacker would.

use crate::factor_kit::*;
use base64::Engine;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

#[tokio::test]
async fn a_pre_hijacked_account_loses_the_attackers_password_sessions_and_totp(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Prehijack").await?;
    // The shared platform's mail sink is every test's: an address of its own.
    let victim = &idm_testkit::unique_email("victim.address");
    const ATTACKER_PASSWORD: &str = "attacker knows this one";

    // The attacker signs up with the victim's address, keeps the session and
    // its refresh token, and even adds an authenticator of their own.
    let r = platform
        .sign_up(&a, ORIGIN, None, victim, ATTACKER_PASSWORD)
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["user"]["email_verified"], json!(false));
    let account = r.str("/user/id");
    let attacker_session = r.str("/session_token");
    let attacker_refresh = r.str("/refresh_token");
    let pending = post(
        platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&attacker_session),
        json!({}),
    )
    .await?;
    assert_eq!(pending.status, 200, "{}", pending.json);
    let attacker_secret = pending.str("/secret");
    let r = post(
        platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&attacker_session),
        json!({"code": code_at(&attacker_secret, platform.clock.unix())?}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // The victim signs in by email code: straight in (the attacker's TOTP is
    // not asked for), and the address is now proven.
    let to_victim = || {
        platform
            .smtp
            .messages()
            .iter()
            .filter(|m| m.contains(victim.as_str()))
            .count()
    };
    let mail_before = to_victim();
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes",
        None,
        json!({"email": victim}),
    )
    .await?;
    assert_eq!(r.status, 202);
    // The TOTP notice went to the victim's inbox too, and it and the code
    // race through the mail queue: take the mail that carries a code.
    let code = {
        let deadline = std::time::Instant::now() + MAIL_WAIT;
        loop {
            let found = platform
                .smtp
                .messages()
                .iter()
                .filter(|m| m.contains(victim.as_str()))
                .find_map(|m| idm_testkit::smtp::six_digit_code(m));
            if let Some(code) = found {
                break code;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no code mailed to the victim"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(to_victim() > mail_before);
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": victim, "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.str("/user/id"), account);
    assert_eq!(
        (
            r.json["user"]["email_verified"].clone(),
            r.json["user"]["mfa_enabled"].clone()
        ),
        (json!(true), json!(false))
    );
    let victim_session = r.str("/session_token");

    // Everything the attacker held is dead: the password, the session, its
    // refresh token, the authenticator.
    let r = platform
        .sign_in(&a, ORIGIN, victim, ATTACKER_PASSWORD)
        .await?;
    assert_eq!(r.code(), Some("invalid_credentials"), "{}", r.json);
    assert_eq!(
        me(platform, &a, &attacker_session).await?.code(),
        Some("session_revoked")
    );
    let r = platform.refresh(&a, &attacker_refresh).await?;
    assert_eq!(r.status, 401, "{}", r.json);
    let r = me(platform, &a, &victim_session).await?;
    assert_eq!(
        (r.status, r.json["mfa_enabled"].clone()),
        (200, json!(false))
    );
    let event = platform
        .last_event(&a.issuer_id, "mfa.disabled")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["reason"], json!("unproven_address"));

    // The owner sets a password of their own (no password, no TOTP: an email
    // code is the proof), and later email proofs leave it alone.
    let r = post(
        platform,
        &a,
        "/v1/client/password",
        Some(&victim_session),
        json!({"new_password": PASSWORD}),
    )
    .await?;
    assert_eq!(
        r.json["error"]["accepted_proofs"],
        json!(["email_code"]),
        "{}",
        r.json
    );
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes",
        None,
        json!({"email": victim}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let code = {
        let mail = platform.smtp.wait_for(victim, 2, MAIL_WAIT).await?;
        idm_testkit::smtp::six_digit_code(&mail).unwrap_or_default()
    };
    let r = post(
        platform,
        &a,
        "/v1/client/password",
        Some(&victim_session),
        json!({"new_password": PASSWORD, "email_code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        platform.sign_in(&a, ORIGIN, victim, PASSWORD).await?.status,
        200
    );
    let code = email_code(platform, &a, victim, 4).await?;
    let r = post(
        platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": victim, "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(me(platform, &a, &victim_session).await?.status, 200);
    assert_eq!(
        platform.sign_in(&a, ORIGIN, victim, PASSWORD).await?.status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn an_issuer_may_refuse_password_sign_in_until_the_address_is_proven() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let strict = tenant(platform, "Strict").await?;
    let lenient = tenant(platform, "Lenient").await?;
    set_policy(
        platform,
        &strict,
        json!({"require_verified_email_for_password": true}),
    )
    .await?;
    for t in [&strict, &lenient] {
        let r = platform
            .sign_up(t, ORIGIN, None, "unproven@example.com", PASSWORD)
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    // Refused exactly like a wrong password (same code, no faster).
    let started = Instant::now();
    let r = platform
        .sign_in(&strict, ORIGIN, "unproven@example.com", PASSWORD)
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("invalid_credentials")),
        "{}",
        r.json
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let wrong = platform
        .sign_in(
            &strict,
            ORIGIN,
            "unproven@example.com",
            "not the password at all",
        )
        .await?;
    assert_eq!(wrong.json["error"]["message"], r.json["error"]["message"]);
    let r = platform
        .sign_in(&lenient, ORIGIN, "unproven@example.com", PASSWORD)
        .await?;
    assert_eq!(r.status, 200, "the policy is per issuer: {}", r.json);
    Ok(())
}

/// The set of JSON pointers of every field in `value`, with array items
/// collapsed, so two answers can be compared by shape.
fn shape(value: &Value, at: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{at}/{k}");
                out.insert(format!("{path}:{}", kind(v)));
                shape(v, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{at}/*"), out);
            }
        }
        _ => {}
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shape_of(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    shape(value, "", &mut out);
    out
}

/// The parts of a session token a client could look at: version, key id and
/// the claims' field names.
fn token_shape(token: &str) -> anyhow::Result<(String, String, BTreeSet<String>, usize)> {
    let parts: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(parts.len() == 4, "{token}");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2])?,
    )?;
    Ok((
        parts[0].to_owned(),
        parts[1].to_owned(),
        shape_of(&claims),
        parts[3].len(),
    ))
}

async fn timed_sign_up(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    password: &str,
) -> anyhow::Result<(Response, Duration)> {
    let started = Instant::now();
    let r = platform
        .sign_up(tenant, ORIGIN, None, email, password)
        .await?;
    Ok((r, started.elapsed()))
}

#[tokio::test]
async fn hiding_account_existence_makes_a_taken_address_answer_like_a_fresh_one(
) -> anyhow::Result<()> {
    // Own platform: compares answer times, which other tests' load would blur.
    let platform = Platform::start().await?;
    let hiding = tenant(&platform, "Hiding").await?;
    let plain = tenant(&platform, "Plain").await?;
    set_policy(&platform, &hiding, json!({"hide_account_existence": true})).await?;
    let owner = "taken.address@example.com";
    const INTRUDER_PASSWORD: &str = "intruder tries this one";

    // Default mode: a taken address is a conflict.
    assert_eq!(
        platform
            .sign_up(&plain, ORIGIN, None, owner, PASSWORD)
            .await?
            .status,
        201
    );
    let r = platform
        .sign_up(&plain, ORIGIN, None, owner, INTRUDER_PASSWORD)
        .await?;
    assert_eq!((r.status, r.code()), (409, Some("conflict")));

    // Hiding mode: the owner exists; a fresh address and the taken one answer
    // alike, in status, headers, body shape, token shape and minimum time.
    let (existing, _) = timed_sign_up(&platform, &hiding, owner, PASSWORD).await?;
    assert_eq!(existing.status, 201);
    let (fresh, fresh_took) =
        timed_sign_up(&platform, &hiding, "fresh.address@example.com", PASSWORD).await?;
    let (taken, taken_took) = timed_sign_up(&platform, &hiding, owner, INTRUDER_PASSWORD).await?;
    assert_eq!((fresh.status, taken.status), (201, 201), "{}", taken.json);
    assert_eq!(
        shape_of(&fresh.json),
        shape_of(&taken.json),
        "{}\n{}",
        fresh.json,
        taken.json
    );
    for header in ["set-cookie", "cache-control", "content-type"] {
        assert_eq!(
            fresh.headers.get(header).is_some(),
            taken.headers.get(header).is_some(),
            "{header}"
        );
    }
    assert!(fresh_took >= Duration::from_millis(300) && taken_took >= Duration::from_millis(300));
    let (fv, fk, fclaims, fmac) = token_shape(&fresh.str("/session_token"))?;
    let (tv, tk, tclaims, tmac) = token_shape(&taken.str("/session_token"))?;
    assert_eq!((fv, fk, fclaims, fmac), (tv, tk, tclaims, tmac));
    assert_eq!(
        fresh.str("/refresh_token").len(),
        taken.str("/refresh_token").len()
    );
    // Nothing of the existing account shows: a new-looking id, unverified.
    assert_ne!(taken.str("/user/id"), existing.str("/user/id"));
    assert_eq!(taken.str("/user/email"), owner);
    assert_eq!(taken.json["user"]["email_verified"], json!(false));
    assert_eq!(taken.str("/user/region"), fresh.str("/user/region"));
    // Timestamps look alike too (a stored time has at most microseconds).
    let fraction = |t: String| {
        t.split('.')
            .nth(1)
            .map_or(0, |f| f.trim_end_matches('Z').len())
    };
    assert!(
        fraction(taken.str("/user/created_at")) <= 6,
        "{}",
        taken.json
    );
    assert!(
        fraction(fresh.str("/user/created_at")) <= 6,
        "{}",
        fresh.json
    );
    let existing_created = existing.str("/user/created_at");
    assert_ne!(taken.str("/user/created_at"), existing_created);

    // But it is no session: not for the existing account, not for anyone.
    let r = me(&platform, &hiding, &taken.str("/session_token")).await?;
    assert_eq!(r.status, 401, "{}", r.json);
    let r = platform
        .refresh(&hiding, &taken.str("/refresh_token"))
        .await?;
    assert_eq!(r.status, 401, "{}", r.json);
    assert_eq!(
        me(&platform, &hiding, &fresh.str("/session_token"))
            .await?
            .status,
        200
    );
    // The owner's account is untouched and gets a notice; the intruder's
    // password opens nothing; no third user was created.
    let r = platform.sign_in(&hiding, ORIGIN, owner, PASSWORD).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .sign_in(&hiding, ORIGIN, owner, INTRUDER_PASSWORD)
        .await?;
    assert_eq!(r.code(), Some("invalid_credentials"));
    let notice = platform.smtp.wait_for(owner, 0, MAIL_WAIT).await?;
    assert!(notice.contains("Someone tried to sign up"), "{notice}");
    assert!(!notice.contains(INTRUDER_PASSWORD));
    // Trying again does not flood the owner: one notice per hour.
    let (again, _) = timed_sign_up(&platform, &hiding, owner, INTRUDER_PASSWORD).await?;
    assert_eq!(again.status, 201);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let notices = platform
        .smtp
        .messages()
        .iter()
        .filter(|m| m.contains(owner) && m.contains("Someone tried to sign up"))
        .count();
    assert_eq!(notices, 1);
    let users: i64 = platform
        .global()
        .await?
        .query_one(
            "SELECT count(*) FROM directory.users WHERE issuer_id = $1",
            &[&hiding.issuer_id],
        )
        .await?
        .get(0);
    assert_eq!(users, 2);
    platform.stop().await
}
