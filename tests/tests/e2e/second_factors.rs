//! Failure budgets per subject (issue 9 §3): a TOTP budget per user, an
//! email-code and a verification budget per address, shared across tokens,
//! resends and replicas, with back-off, a lock, recovery paths, and a durable
//! copy that outlives Redis.

use crate::factor_kit::*;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Waits for a mail to `to` whose text contains `fragment`.
async fn mail_containing(platform: &Platform, to: &str, fragment: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        if let Some(found) =
            platform.smtp.messages().into_iter().find(|m| {
                m.to_ascii_lowercase().contains(&format!("to: {to}")) && m.contains(fragment)
            })
        {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no mail to {to} with {fragment:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn retry_after(r: &Response) -> Option<i64> {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn ledger_rows(platform: &Platform) -> anyhow::Result<Vec<(String, String, i32, bool)>> {
    Ok(platform
        .global()
        .await?
        .query(
            "SELECT budget, subject_hash, failures, locked FROM auth.failure_ledger",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Lets a client of `tenant` send and check plenty without tripping the
/// edge's own velocity and recipient limits (not what these tests are about).
async fn roomy_waf(platform: &Platform, tenant: &Tenant) -> anyhow::Result<()> {
    platform
        .set_waf_policy(
            tenant,
            json!({
                "client": {"limit": 5000, "window_seconds": 60},
                "verification": {"limit": 5000, "window_seconds": 60},
                "recipient_limit": 1000,
            }),
        )
        .await
}

#[tokio::test]
async fn signing_in_again_buys_no_new_totp_guesses_and_the_lock_outlives_redis(
) -> anyhow::Result<()> {
    // Own platform: moves the clock, flushes Redis.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "A").await?;
    let b = tenant(&platform, "B").await?;
    roomy_waf(&platform, &a).await?;
    let victim = user_with_totp(&platform, &a, "victim.person@example.com").await?;
    let neighbour = user_with_totp(&platform, &a, "neighbour.person@example.com").await?;
    let elsewhere = user_with_totp(&platform, &b, "victim.person@example.com").await?;

    // Five wrong codes, each with a fresh MFA token from a fresh password
    // sign-in: before, every token came with five guesses of its own.
    for attempt in 0..5 {
        let token = mfa_token(&platform, &a, &victim.email).await?;
        let wrong = wrong_totp(&victim.secret, platform.clock.unix())?;
        let r = verify_totp(&platform, &a, &token, &wrong).await?;
        assert_eq!(r.code(), Some("code_invalid"), "{attempt}: {}", r.json);
    }
    // The budget is the user's: a new token backs off, even with the right code.
    let token = mfa_token(&platform, &a, &victim.email).await?;
    let right = code_at(&victim.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &a, &token, &right).await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("too_many_attempts")),
        "{}",
        r.json
    );
    // 30 s from the failure (less the real time the sign-in took since).
    assert!(
        retry_after(&r).is_some_and(|s| (1..=30).contains(&s)),
        "{:?}",
        r.headers
    );
    // Each further failure doubles the wait (the clock is moved, not slept).
    for failures in 5..10u32 {
        platform.clock.advance(30 << (failures - 5));
        let token = mfa_token(&platform, &a, &victim.email).await?;
        let wrong = wrong_totp(&victim.secret, platform.clock.unix())?;
        let r = verify_totp(&platform, &a, &token, &wrong).await?;
        assert_eq!(
            r.code(),
            Some("code_invalid"),
            "failure {}: {}",
            failures + 1,
            r.json
        );
    }
    // Ten failures: locked, whatever the code and however long one waits.
    platform.clock.advance(3600);
    let token = mfa_token(&platform, &a, &victim.email).await?;
    let right = code_at(&victim.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &a, &token, &right).await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("factor_locked")),
        "{}",
        r.json
    );
    let event = platform
        .last_event(&a.issuer_id, "factor.locked")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["user_id"], json!(victim.user_id));
    assert!(!event.to_string().contains("victim.person"), "{event}");
    let notice = mail_containing(&platform, &victim.email, "locked").await?;
    assert!(notice.contains("backup codes"), "{notice}");

    // Nobody else is affected: another user of A, the same address at B.
    platform.clock.advance(30);
    for (tenant, user) in [(&a, &neighbour), (&b, &elsewhere)] {
        let token = mfa_token(&platform, tenant, &user.email).await?;
        let right = code_at(&user.secret, platform.clock.unix())?;
        let r = verify_totp(&platform, tenant, &token, &right).await?;
        assert_eq!(r.status, 200, "{}", r.json);
    }

    // Redis loses everything (a restart without persistence): the lock holds,
    // rebuilt from the ledger, which knows the user only by a keyed hash.
    assert!(platform.flush_redis().await? > 0);
    let token = mfa_token(&platform, &a, &victim.email).await?;
    let right = code_at(&victim.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &a, &token, &right).await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("factor_locked")),
        "{}",
        r.json
    );
    let rows = ledger_rows(&platform).await?;
    assert!(rows
        .iter()
        .any(|(budget, _, failures, locked)| budget == "totp" && *failures == 10 && *locked));
    assert!(rows
        .iter()
        .all(|(_, hash, _, _)| !hash.contains(&victim.user_id) && hash.len() == 64));

    // The recovery path stays open: a backup code signs in and clears the lock.
    let token = mfa_token(&platform, &a, &victim.email).await?;
    let r = post(
        &platform,
        &a,
        "/v1/client/mfa/verify",
        None,
        json!({"mfa_token": token, "backup_code": victim.backup_codes[0]}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let event = platform
        .last_event(&a.issuer_id, "factor.unlocked")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["by"], json!("backup_code"));
    platform.clock.advance(30);
    let token = mfa_token(&platform, &a, &victim.email).await?;
    let right = code_at(&victim.secret, platform.clock.unix())?;
    let r = verify_totp(&platform, &a, &token, &right).await?;
    assert_eq!(r.status, 200, "TOTP works again: {}", r.json);
    assert!(ledger_rows(&platform).await?.is_empty(), "success forgets");
    platform.stop().await
}

/// Fires `tokens.len()` attempts at once, each with its own MFA token.
async fn burst(
    platform: &Platform,
    tenant: &Tenant,
    tokens: &[String],
    code: &str,
) -> anyhow::Result<Vec<Option<String>>> {
    let answers = futures::future::join_all(
        tokens
            .iter()
            .map(|token| verify_totp(platform, tenant, token, code)),
    )
    .await;
    answers
        .into_iter()
        .map(|r| r.map(|r| r.code().map(str::to_owned)))
        .collect()
}

async fn tokens(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(mfa_token(platform, tenant, email).await?);
    }
    Ok(out)
}

#[tokio::test]
async fn parallel_wrong_codes_cannot_slip_past_the_limit() -> anyhow::Result<()> {
    // Own platform: moves the clock, flushes Redis.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Parallel").await?;
    roomy_waf(&platform, &a).await?;
    let victim = user_with_totp(&platform, &a, "burst.target@example.com").await?;
    let count = |answers: &[Option<String>], code: &str| {
        answers
            .iter()
            .filter(|a| a.as_deref() == Some(code))
            .count()
    };

    // Twenty guesses at once: exactly five are checked, the rest are refused
    // before they are looked at.
    let wrong = wrong_totp(&victim.secret, platform.clock.unix())?;
    let batch = tokens(&platform, &a, &victim.email, 20).await?;
    let answers = burst(&platform, &a, &batch, &wrong).await?;
    assert_eq!(count(&answers, "code_invalid"), 5, "{answers:?}");
    assert_eq!(count(&answers, "too_many_attempts"), 15, "{answers:?}");

    // Each time the wait is over, a burst gets exactly one more guess, until
    // the tenth failure locks the factor.
    let mut checked = 5;
    while checked < 10 {
        platform.clock.advance(900);
        let wrong = wrong_totp(&victim.secret, platform.clock.unix())?;
        let batch = tokens(&platform, &a, &victim.email, 6).await?;
        let answers = burst(&platform, &a, &batch, &wrong).await?;
        assert_eq!(count(&answers, "code_invalid"), 1, "{answers:?}");
        checked += 1;
    }
    platform.clock.advance(600);
    let right = code_at(&victim.secret, platform.clock.unix())?;
    let batch = tokens(&platform, &a, &victim.email, 8).await?;
    let answers = burst(&platform, &a, &batch, &right).await?;
    assert_eq!(count(&answers, "factor_locked"), 8, "{answers:?}");
    let rows = ledger_rows(&platform).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].2, rows[0].3), (10, true));
    platform.stop().await
}

#[tokio::test]
async fn resending_an_email_code_buys_no_new_guesses_and_a_magic_link_recovers(
) -> anyhow::Result<()> {
    // Own platform: moves the clock, flushes Redis.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Codes").await?;
    let b = tenant(&platform, "Other").await?;
    roomy_waf(&platform, &a).await?;
    let owner = "code.owner@example.com";
    let verify = |code: &str| json!({ "email": owner, "code": code });
    let mut sent = 0;

    // Ten wrong codes, a fresh code mailed before each one.
    for failures in 0..10u32 {
        if failures >= 5 {
            platform.clock.advance(30 << (failures - 5));
        }
        let code = email_code(&platform, &a, owner, sent).await?;
        sent += 1;
        let r = post(
            &platform,
            &a,
            "/v1/client/email_codes/verify",
            None,
            verify(not(&code)),
        )
        .await?;
        assert_eq!(
            r.code(),
            Some("code_invalid"),
            "failure {}: {}",
            failures + 1,
            r.json
        );
        if failures == 4 {
            // Backing off now, and a resend does not reset it.
            let code = email_code(&platform, &a, owner, sent).await?;
            sent += 1;
            let r = post(
                &platform,
                &a,
                "/v1/client/email_codes/verify",
                None,
                verify(&code),
            )
            .await?;
            assert_eq!(
                (r.status, r.code()),
                (429, Some("too_many_attempts")),
                "{}",
                r.json
            );
        }
    }
    let code = email_code(&platform, &a, owner, sent).await?;
    sent += 1;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        verify(&code),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("factor_locked")),
        "{}",
        r.json
    );

    // Another address of A, and the same address at B, are untouched.
    let other = email_code(&platform, &a, "someone.else@example.com", 0).await?;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        json!({"email": "someone.else@example.com", "code": other}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = post(
        &platform,
        &b,
        "/v1/client/email_codes",
        None,
        json!({"email": owner}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = platform.smtp.wait_for(owner, sent, MAIL_WAIT).await?;
    sent += 1;
    let code_b = idm_testkit::smtp::six_digit_code(&mail).unwrap_or_default();
    let r = post(
        &platform,
        &b,
        "/v1/client/email_codes/verify",
        None,
        verify(&code_b),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Redis comes back empty: still locked (the ledger rebuilt it).
    platform.flush_redis().await?;
    let code = email_code(&platform, &a, owner, sent).await?;
    sent += 1;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        verify(&code),
    )
    .await?;
    assert_eq!(r.code(), Some("factor_locked"), "{}", r.json);
    assert_redis_never_holds(&platform, &a.issuer_id, owner).await?;

    // A magic link (unguessable) still signs the owner in, and clears the lock.
    let r = post(
        &platform,
        &a,
        "/v1/client/magic_links",
        None,
        json!({"email": owner, "redirect_url": "https://app.example.com/in"}),
    )
    .await?;
    assert_eq!(r.status, 202);
    let mail = platform.smtp.wait_for(owner, sent, MAIL_WAIT).await?;
    sent += 1;
    let link = idm_testkit::smtp::magic_code(&mail).unwrap_or_default();
    let r = post(
        &platform,
        &a,
        "/v1/client/magic_links/verify",
        None,
        json!({"code": link}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let code = email_code(&platform, &a, owner, sent).await?;
    let r = post(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        None,
        verify(&code),
    )
    .await?;
    assert_eq!(r.status, 200, "codes work again: {}", r.json);
    platform.stop().await
}

async fn start_verification(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    nth: usize,
) -> anyhow::Result<(String, String)> {
    let r = platform
        .backend(
            Method::POST,
            "/v1/verifications",
            &tenant.secret_key,
            Some(json!({ "email": email })),
        )
        .await?;
    anyhow::ensure!(r.status == 202, "start: {}", r.json);
    let mail = platform.smtp.wait_for(email, nth, MAIL_WAIT).await?;
    let code = idm_testkit::smtp::six_digit_code(&mail).unwrap_or_default();
    Ok((r.str("/id"), code))
}

async fn check(
    platform: &Platform,
    tenant: &Tenant,
    id: &str,
    email: &str,
    code: &str,
) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::POST,
            "/v1/verifications/check",
            &tenant.secret_key,
            Some(json!({ "id": id, "email": email, "code": code })),
        )
        .await
}

#[tokio::test]
async fn verification_budgets_span_resends_hold_through_redis_loss_and_expire() -> anyhow::Result<()>
{
    // Own platform: moves the clock, flushes Redis.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Verify").await?;
    roomy_waf(&platform, &a).await?;
    let target = "verified.target@example.com";
    let attacker = "attacker.inbox@example.com";
    let mut sent = 0;

    // An id started for one address cannot spend another address's budget:
    // presenting the target's address with the attacker's id never counts.
    let (theirs, _) = start_verification(&platform, &a, attacker, 0).await?;
    for _ in 0..5 {
        let r = check(&platform, &a, &theirs, target, "123456").await?;
        assert_eq!(r.code(), Some("code_invalid"));
    }
    assert!(ledger_rows(&platform).await?.is_empty());

    // Ten wrong codes over ten verifications of the target: locked.
    for failures in 0..10u32 {
        if failures >= 5 {
            platform.clock.advance(30 << (failures - 5));
        }
        let (id, code) = start_verification(&platform, &a, target, sent).await?;
        sent += 1;
        let r = check(&platform, &a, &id, target, not(&code)).await?;
        assert_eq!(
            r.code(),
            Some("code_invalid"),
            "{}: {}",
            failures + 1,
            r.json
        );
    }
    let (id, code) = start_verification(&platform, &a, target, sent).await?;
    sent += 1;
    let r = check(&platform, &a, &id, target, &code).await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("factor_locked")),
        "{}",
        r.json
    );
    // The attacker's own address is fine; the lock survives losing Redis.
    let (id, code) = start_verification(&platform, &a, attacker, 1).await?;
    assert_eq!(
        check(&platform, &a, &id, attacker, &code).await?.status,
        200
    );
    platform.flush_redis().await?;
    let (id, code) = start_verification(&platform, &a, target, sent).await?;
    sent += 1;
    let r = check(&platform, &a, &id, target, &code).await?;
    assert_eq!(r.code(), Some("factor_locked"), "{}", r.json);

    // An address lock ends when the failure memory (24 h) has passed.
    platform.clock.advance(24 * 3600 + 1);
    let (id, code) = start_verification(&platform, &a, target, sent).await?;
    let r = check(&platform, &a, &id, target, &code).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_redis_never_holds(&platform, &a.issuer_id, target).await?;
    platform.stop().await
}
