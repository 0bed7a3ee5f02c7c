//! Magic links, email codes and the mail courier.

use crate::factor_kit::tenant;
use idm_testkit::smtp::{magic_code, six_digit_code};
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const MAIL_WAIT: Duration = Duration::from_secs(20);

async fn client(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Response> {
    platform
        .client_call(0, tenant, Method::POST, path, None, Some(body))
        .await
}

/// Redis keys of this platform whose name contains `kind`.
async fn redis_keys(platform: &Platform, kind: &str) -> anyhow::Result<Vec<String>> {
    let mut redis = redis::Client::open(idm_testkit::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}{kind}*", platform.redis_prefix))
        .query_async(&mut redis)
        .await?;
    Ok(keys)
}

#[tokio::test]
async fn magic_links_sign_in_once_per_issuer_and_only_back_to_allowed_origins() -> anyhow::Result<()>
{
    // Own platform: moves the clock, reads every magic-link key in Redis.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "A").await?;
    let b = tenant(&platform, "B").await?;
    let link = json!({"email": "Mia@Example.com", "redirect_url": "https://app.example.com/welcome?from=mail"});
    let r = client(&platform, &a, "/v1/client/magic_links", link.clone()).await?;
    assert_eq!(r.status, 202, "{}", r.json);
    let mail = platform
        .smtp
        .wait_for("mia@example.com", 0, MAIL_WAIT)
        .await?;
    assert!(
        mail.contains("https://app.example.com/welcome?from=mail&idm_magic_code="),
        "{mail}"
    );
    let code = magic_code(&mail).unwrap_or_default();
    assert_eq!(code.len(), 43);
    assert_eq!(redis_keys(&platform, "magic").await?.len(), 1);
    assert!(
        redis_keys(&platform, "")
            .await?
            .iter()
            .all(|k| !k.contains(&code) && !k.to_lowercase().contains("mia")),
        "keys hold hashes only"
    );

    // Another issuer cannot redeem it; it still works at its own issuer, once.
    let r = client(
        &platform,
        &b,
        "/v1/client/magic_links/verify",
        json!({"code": code}),
    )
    .await?;
    assert_eq!((r.status, r.code()), (422, Some("code_invalid")));
    let r = client(
        &platform,
        &a,
        "/v1/client/magic_links/verify",
        json!({"code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (
            r.str("/user/email"),
            r.json["user"]["email_verified"].as_bool()
        ),
        ("Mia@example.com".into(), Some(true))
    );
    assert!(r.headers.get("set-cookie").is_some());
    let started = Instant::now();
    let r = client(
        &platform,
        &a,
        "/v1/client/magic_links/verify",
        json!({"code": code}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "a link works once");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "failures take the minimum time"
    );
    assert!(redis_keys(&platform, "magic").await?.is_empty());

    // The redirect must be one of the issuer's origins; nothing is sent otherwise.
    for bad in [
        "https://evil.com/",
        "https://app.example.com.evil.com/x",
        "javascript:alert(1)",
        "https://user@app.example.com/",
    ] {
        let r = client(
            &platform,
            &a,
            "/v1/client/magic_links",
            json!({"email": "mia@example.com", "redirect_url": bad}),
        )
        .await?;
        assert_eq!(r.code(), Some("validation_failed"), "{bad}");
    }
    // Malformed codes.
    for bad in ["", "short", &"x".repeat(43), &"y".repeat(200)] {
        let r = client(
            &platform,
            &a,
            "/v1/client/magic_links/verify",
            json!({"code": bad}),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "{bad}");
    }
    // Expiry, by moving the clock instead of sleeping: the entry is erased.
    client(&platform, &a, "/v1/client/magic_links", link).await?;
    let code = magic_code(
        &platform
            .smtp
            .wait_for("mia@example.com", 1, MAIL_WAIT)
            .await?,
    )
    .unwrap_or_default();
    platform.clock.advance(15 * 60 + 1);
    let r = client(
        &platform,
        &a,
        "/v1/client/magic_links/verify",
        json!({"code": code}),
    )
    .await?;
    assert_eq!(r.code(), Some("code_expired"));
    assert!(redis_keys(&platform, "magic").await?.is_empty());

    // No sign-up allowed: unknown addresses get the same answer and no mail.
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &b.secret_key,
            Some(json!({"policy": {"allow_sign_up": false}})),
        )
        .await?;
    assert_eq!(r.status, 200);
    let before = platform.smtp.messages().len();
    let r = client(
        &platform,
        &b,
        "/v1/client/magic_links",
        json!({"email": "stranger@example.com", "redirect_url": "https://app.example.com/"}),
    )
    .await?;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform.smtp.messages().len(), before);
    platform.stop().await
}

#[tokio::test]
async fn email_codes_expire_die_after_five_attempts_and_work_once() -> anyhow::Result<()> {
    // Own platform: moves the clock.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Codes").await?;
    let b = tenant(&platform, "Other").await?;
    let send = |email: &str| json!({ "email": email });
    let verify = |email: &str, code: &str| json!({ "email": email, "code": code });

    // Sign-up by code: the user is created, verified, and signed in.
    client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("noah@example.com"),
    )
    .await?;
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("noah@example.com", 0, MAIL_WAIT)
            .await?,
    )
    .unwrap_or_default();
    let r = client(
        &platform,
        &b,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "another issuer");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", wrong),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"));
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("NOAH@example.com", &code),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["user"]["email_verified"], json!(true));
    let user_id = r.str("/user/id");
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "replay");

    // Malformed codes never match.
    for bad in ["12345", "1234567", "12a456", " 123456", ""] {
        let r = client(
            &platform,
            &a,
            "/v1/client/email_codes/verify",
            verify("noah@example.com", bad),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"), "{bad:?}");
    }

    // Five wrong attempts kill the code: even the right one is refused after.
    client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("noah@example.com"),
    )
    .await?;
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("noah@example.com", 1, MAIL_WAIT)
            .await?,
    )
    .unwrap_or_default();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = client(
            &platform,
            &a,
            "/v1/client/email_codes/verify",
            verify("noah@example.com", wrong),
        )
        .await?;
        assert_eq!(r.code(), Some("code_invalid"));
    }
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!((r.status, r.code()), (429, Some("too_many_attempts")));
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!(r.code(), Some("code_invalid"), "the dead code is gone");

    // Expiry with the controllable clock; the existing user signs in again by code.
    client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("noah@example.com"),
    )
    .await?;
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("noah@example.com", 2, MAIL_WAIT)
            .await?,
    )
    .unwrap_or_default();
    platform.clock.advance(601);
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!(r.code(), Some("code_expired"));
    client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("noah@example.com"),
    )
    .await?;
    let code = six_digit_code(
        &platform
            .smtp
            .wait_for("noah@example.com", 3, MAIL_WAIT)
            .await?,
    )
    .unwrap_or_default();
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        verify("noah@example.com", &code),
    )
    .await?;
    assert_eq!((r.status, r.str("/user/id")), (200, user_id));
    assert!(redis_keys(&platform, "emailcode").await?.is_empty());
    platform.stop().await
}

#[tokio::test]
async fn mail_survives_an_smtp_outage() -> anyhow::Result<()> {
    // Own platform: stops the mail sink.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Outage").await?;
    platform.smtp.stop();
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes",
        json!({"email": "patient@example.com"}),
    )
    .await?;
    assert_eq!(r.status, 202, "sending does not wait for SMTP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(platform.smtp.messages().is_empty());
    // While it waits in the queue, the message is sealed: no address, no code.
    let js = async_nats::jetstream::new(platform.nats.connect(idm_testkit::Identity::Admin).await?);
    let stream = js
        .get_stream(format!("{}_MAIL", platform.prefix.to_ascii_uppercase()))
        .await?;
    let queued = stream
        .get_last_raw_message_by_subject(&format!("{}.mail.outgoing", platform.prefix))
        .await?;
    let raw = String::from_utf8_lossy(&queued.payload).to_lowercase();
    assert!(!queued.payload.is_empty());
    assert!(
        !raw.contains("patient") && !raw.contains("example.com") && !raw.contains("code"),
        "queued mail must be sealed"
    );
    platform.smtp.resume().await?;
    let mail = platform
        .smtp
        .wait_for("patient@example.com", 0, Duration::from_secs(40))
        .await?;
    let code = six_digit_code(&mail).unwrap_or_default();
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes/verify",
        json!({"email": "patient@example.com", "code": code}),
    )
    .await?;
    assert_eq!(r.status, 200, "the delayed code still works: {}", r.json);
    platform.stop().await
}

#[tokio::test]
async fn recipient_limits_share_one_budget_per_inbox_and_the_quota_stops_mail_before_it_is_queued(
) -> anyhow::Result<()> {
    // Own platform: counts every mail sent.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Budget").await?;
    platform.set_waf_policy(&a, json!({"recipient_limit": 2, "recipient_window_seconds": 3600, "monthly_email_quota": 5})).await?;
    let send = |email: &str| json!({ "email": email });

    // Sub-addresses, dots and googlemail.com are one Gmail inbox: one budget.
    for email in ["a.b+1@gmail.com", "ab+2@googlemail.com"] {
        let r = client(&platform, &a, "/v1/client/email_codes", send(email)).await?;
        assert_eq!(r.status, 202, "{email}: {}", r.json);
    }
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("A.B@gmail.com"),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("rate_limited")),
        "{}",
        r.json
    );
    assert!(r.headers.get("retry-after").is_some());
    let r = call_verification(&platform, &a, "a.b+3@gmail.com").await?;
    assert_eq!(
        r.code(),
        Some("rate_limited"),
        "verifications share the recipient budget"
    );

    // Three more recipients reach the monthly quota of five; the sixth send is refused.
    for email in ["x@example.com", "y@example.com", "z@example.com"] {
        let r = client(
            &platform,
            &a,
            "/v1/client/magic_links",
            json!({"email": email, "redirect_url": "https://app.example.com/"}),
        )
        .await?;
        assert_eq!(r.status, 202, "{email}: {}", r.json);
    }
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("w@example.com"),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (429, Some("quota_exceeded")),
        "{}",
        r.json
    );
    let r = call_verification(&platform, &a, "v@example.com").await?;
    assert_eq!(r.code(), Some("quota_exceeded"));

    // Exactly the five accepted sends were delivered; nothing refused was queued.
    platform
        .smtp
        .wait_for("z@example.com", 0, MAIL_WAIT)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform.smtp.messages().len(), 5);

    // Disposable domains are refused before anything else.
    let r = client(
        &platform,
        &a,
        "/v1/client/email_codes",
        send("someone@mailinator.com"),
    )
    .await?;
    assert_eq!(r.code(), Some("disposable_email"));
    platform.stop().await
}

async fn call_verification(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::POST,
            "/v1/verifications",
            &tenant.secret_key,
            Some(json!({ "email": email })),
        )
        .await
}

#[tokio::test]
async fn magic_link_redirects_are_held_to_the_strictness_of_origins() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Redirects").await?;
    platform
        .allow_origins(&a, &["app.example.com", "localhost"])
        .await?;
    // The mail sink is the shared platform's: a recipient of this test's own.
    let rita = idm_testkit::unique_email("rita");
    let link = |url: &str| json!({"email": rita, "redirect_url": url});
    for bad in [
        // not on an allowed origin, or hiding another host
        "https://evil.example.net/",
        "https://app.example.com.evil.example.net/",
        "https://app.example.com@evil.example.net/",
        "https:\\\\evil.example.net/",
        // not written the way a browser writes the origin
        "https://APP.example.com/",
        "https://app.example.com:443/",
        "https://app%2Eexample.com/",
        "https://app.exa\tmple.com/",
        " https://app.example.com/",
        // a second code smuggled in ahead of the real one
        "https://app.example.com/in?idm_magic_code=attackers-own-code",
        "https://app.example.com/in?next=%2F&IDM_MAGIC_CODE=x",
        "https://app.example.com/in?idm%5Fmagic%5Fcode=x",
        "https://app.example.com/in#idm_magic_code=x",
        "javascript:alert(document.domain)",
    ] {
        let r = client(platform, &a, "/v1/client/magic_links", link(bad)).await?;
        assert_eq!(r.code(), Some("validation_failed"), "{bad:?}: {}", r.json);
    }
    let r = client(
        platform,
        &a,
        "/v1/client/magic_links",
        link("http://app.example.com/in"),
    )
    .await?;
    assert_eq!(
        r.status, 202,
        "plain http is allowed by default: {}",
        r.json
    );

    // With require_https_origins, plain http is refused (localhost excepted).
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &a.secret_key,
            Some(json!({"policy": {"require_https_origins": true}})),
        )
        .await?;
    assert_eq!(r.status, 200);
    let r = client(
        platform,
        &a,
        "/v1/client/magic_links",
        link("http://app.example.com/in"),
    )
    .await?;
    assert_eq!(r.code(), Some("validation_failed"), "{}", r.json);
    for good in [
        "https://app.example.com/in?next=%2Fhome",
        "http://localhost:3000/cb",
    ] {
        let r = client(platform, &a, "/v1/client/magic_links", link(good)).await?;
        assert_eq!(r.status, 202, "{good}: {}", r.json);
    }
    // Only the accepted ones were mailed, each with exactly one code (the
    // link appears in the text and the HTML part, always with that code).
    platform.smtp.wait_for(&rita, 2, MAIL_WAIT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails: Vec<String> = platform
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.contains(&rita))
        .collect();
    assert_eq!(mails.len(), 3);
    for mail in &mails {
        let codes: std::collections::BTreeSet<String> = mail
            .match_indices("idm_magic_code=")
            .filter_map(|(at, _)| idm_testkit::smtp::magic_code(&mail[at..]))
            .collect();
        assert_eq!(codes.len(), 1, "{codes:?} in {mail}");
    }
    Ok(())
}
