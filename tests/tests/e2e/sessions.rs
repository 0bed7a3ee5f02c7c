//! Sessions that defend themselves: rotation, reuse detection, revocation
//! everywhere, timeouts, listings and signing-key rotation.

use crate::factor_kit::tenant;
use anyhow::Context;
use futures::future::join_all;
use idm_core::ErrorCode::{RefreshTokenReused, SessionCompromised, SessionInvalid, SessionRevoked};
use idm_core::Region;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.example.com";
const PASSWORD: &str = "correct horse battery";

pub(crate) async fn set_policy(
    platform: &Platform,
    tenant: &Tenant,
    policy: serde_json::Value,
) -> anyhow::Result<()> {
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &tenant.secret_key,
            Some(json!({ "policy": policy })),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "policy not set: {}", r.json);
    Ok(())
}

/// `GET /v1/client/me` on edge `replica` with the tenant's publishable key.
pub(crate) async fn me(
    platform: &Platform,
    replica: usize,
    tenant: &Tenant,
    token: &str,
) -> anyhow::Result<Response> {
    platform
        .client_call(
            replica,
            tenant,
            Method::GET,
            "/v1/client/me",
            Some(token),
            None,
        )
        .await
}

fn schema(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_compromises_only_its_session() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "A").await?;
    let b = tenant(platform, "B").await?;
    let (ca, cb) = (platform.client(&a), platform.client(&b));
    let signed_up = ca
        .clone()
        .in_country("br")
        .sign_up("rita@example.com", PASSWORD)
        .await?
        .ok()?;
    let first = signed_up.refresh_token.expose();
    assert!(first.starts_with("idmrt_sam_"), "{first}");
    let other = ca.sign_in("rita@example.com", PASSWORD).await?.ok()?;

    // Rotation: a new pair, the presented token consumed.
    let answer = ca.refresh(first).await?;
    assert!(answer.response.headers.get("set-cookie").is_some());
    let rotated = answer.ok()?;
    let second = rotated.refresh_token.expose();
    assert_ne!(second, first);
    assert_eq!(rotated.session_id, signed_up.session_id);
    let me = ca.me(rotated.session_token.expose()).await?.ok()?;
    assert_eq!(me.id, signed_up.user.id);
    // Only hashes are stored.
    let sam = platform.region_db(Region::Sam).await?;
    let plain: i64 = sam
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.refresh_tokens WHERE token_hash = $1 OR token_hash = $2",
                schema(&a)
            ),
            &[&first, &second],
        )
        .await?
        .get(0);
    assert_eq!(plain, 0);

    // Another issuer cannot use it; garbage is refused.
    cb.refresh(second).await?.refused(SessionInvalid)?;
    for junk in [
        "",
        "idmrt_",
        "idmrt_mars_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        &second[..second.len() - 1],
        "x".repeat(300).as_str(),
    ] {
        ca.refresh(junk)
            .await?
            .refused(SessionInvalid)
            .with_context(|| format!("{junk:?}"))?;
    }

    // Reuse: the rotated token again compromises the session…
    ca.refresh(first).await?.refused(RefreshTokenReused)?;
    ca.refresh(second).await?.refused(SessionCompromised)?;
    ca.me(rotated.session_token.expose())
        .await?
        .refused(SessionCompromised)?;
    let event = platform
        .last_event(&a.issuer_id, "session.compromised")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["session_id"], json!(signed_up.session_id));
    assert_eq!(event["issuer_id"], json!(a.issuer_id));
    assert!(
        !event.to_string().contains("rita"),
        "events carry ids, not personal data"
    );

    // …and only that session: the other one still refreshes and works.
    let refreshed = ca.refresh(other.refresh_token.expose()).await?.ok()?;
    ca.me(refreshed.session_token.expose()).await?.ok()?;
    assert!(
        platform
            .count_events(&a.issuer_id, "session.created")
            .await?
            >= 2
    );
    Ok(())
}

#[tokio::test]
async fn twenty_parallel_refreshes_of_one_token_succeed_exactly_once_then_the_session_is_compromised(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Racer").await?;
    let client = platform.client(&a);
    let signed_up = client.sign_up("race@example.com", PASSWORD).await?.ok()?;
    let token = signed_up.refresh_token.expose();
    let answers = join_all((0..20).map(|_| client.refresh(token))).await;
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    for answer in answers {
        let answer = answer?;
        if answer.response.status == 200 {
            winners.push(answer.ok()?);
        } else {
            losers.push(answer.error()?.code);
        }
    }
    assert_eq!(winners.len(), 1, "{losers:?}");
    assert!(
        losers
            .iter()
            .all(|code| matches!(code, RefreshTokenReused | SessionCompromised)),
        "{losers:?}"
    );
    let winner = &winners[0];
    client
        .refresh(winner.refresh_token.expose())
        .await?
        .refused(SessionCompromised)?;
    client
        .me(winner.session_token.expose())
        .await?
        .refused(SessionCompromised)?;
    Ok(())
}

#[tokio::test]
async fn with_a_leeway_an_immediate_retry_gets_the_same_successor() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Lenient").await?;
    set_policy(platform, &a, json!({"refresh_reuse_leeway_seconds": 30})).await?;
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &a.secret_key,
            Some(json!({"policy": {"refresh_reuse_leeway_seconds": 61}})),
        )
        .await?;
    assert_eq!(r.code(), Some("validation_failed"));
    let client = platform.client(&a);
    let signed_up = client.sign_up("lee@example.com", PASSWORD).await?.ok()?;
    let first = signed_up.refresh_token.expose();

    let answers = join_all((0..20).map(|_| client.refresh(first))).await;
    let mut successors = Vec::new();
    for answer in answers {
        successors.push(answer?.ok()?.refresh_token.expose().to_owned());
    }
    let successor = &successors[0];
    assert!(
        successors.iter().all(|s| s == successor),
        "every retry gets the same successor"
    );

    // Once the successor is used, the old token is reuse again.
    let third = client.refresh(successor).await?.ok()?;
    client.refresh(first).await?.refused(RefreshTokenReused)?;
    client
        .refresh(third.refresh_token.expose())
        .await?
        .refused(SessionCompromised)?;
    Ok(())
}

/// Polls `check` on `replica` until it reports `code`, failing after a second.
async fn revoked_within_a_second(
    platform: &Platform,
    replica: usize,
    tenant: &Tenant,
    token: &str,
    code: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let r = me(platform, replica, tenant, token).await?;
        if r.code() == Some(code) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1),
            "replica {replica} still answers {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revocations_reach_every_edge_within_a_second_and_survive_an_edge_restart(
) -> anyhow::Result<()> {
    // Own platform: adds and restarts edge replicas.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    platform.add_edge().await?;
    let a = tenant(&platform, "Revoker").await?;
    let first = platform
        .sign_up(&a, ORIGIN, Some("de"), "sam@example.com", PASSWORD)
        .await?;
    let second = platform
        .sign_in(&a, ORIGIN, "sam@example.com", PASSWORD)
        .await?;
    let third = platform
        .sign_in(&a, ORIGIN, "sam@example.com", PASSWORD)
        .await?;
    let bystander = platform
        .sign_up(&a, ORIGIN, None, "bystander@example.com", PASSWORD)
        .await?;
    for s in [&first, &second, &third] {
        for replica in 0..2 {
            assert_eq!(
                me(&platform, replica, &a, &s.str("/session_token"))
                    .await?
                    .status,
                200
            );
        }
    }
    let user_id = first.str("/user/id");

    // Sessions are listed with their device, for the user and for the backend.
    let mine = platform
        .client_call(
            0,
            &a,
            Method::GET,
            "/v1/client/sessions",
            Some(&first.str("/session_token")),
            None,
        )
        .await?;
    assert_eq!(
        mine.json["data"].as_array().map(Vec::len),
        Some(3),
        "{}",
        mine.json
    );
    assert_eq!(mine.str("/data/0/user_agent"), "idm-testkit");
    assert_eq!(mine.str("/data/0/ip"), "127.0.0.1");
    assert!(!mine.str("/data/0/last_active_at").is_empty());
    let listed = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user_id}/sessions"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(3));

    // Sign-out on replica 0 is refused on replica 1 too, and the cookie is cleared.
    let out = platform
        .client_call(
            0,
            &a,
            Method::POST,
            "/v1/client/sign_out",
            Some(&first.str("/session_token")),
            None,
        )
        .await?;
    assert_eq!(out.status, 200, "{}", out.json);
    assert!(out
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("Max-Age=0")));
    revoked_within_a_second(
        &platform,
        1,
        &a,
        &first.str("/session_token"),
        "session_revoked",
    )
    .await?;
    let r = platform.refresh(&a, &first.str("/refresh_token")).await?;
    assert_eq!(r.code(), Some("session_revoked"));
    let r = platform
        .backend(
            Method::POST,
            "/v1/sessions/verify",
            &a.secret_key,
            Some(json!({"session_token": first.str("/session_token")})),
        )
        .await?;
    assert_eq!(r.code(), Some("session_revoked"));

    // A backend revokes one session by id.
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/sessions/{}/revoke", second.str("/session_id")),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(!r.str("/revoked_at").is_empty());
    revoked_within_a_second(
        &platform,
        1,
        &a,
        &second.str("/session_token"),
        "session_revoked",
    )
    .await?;
    let event = platform
        .last_event(&a.issuer_id, "session.revoked")
        .await?
        .unwrap_or_default();
    assert_eq!(
        event["data"]["session_id"],
        json!(second.str("/session_id"))
    );

    // Another tenant cannot revoke it (or even find it).
    let b = tenant(&platform, "Other").await?;
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/sessions/{}/revoke", third.str("/session_id")),
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("not_found"));

    // Revoke-all for the user.
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/users/{user_id}/sessions/revoke_all"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(
        r.json["session_ids"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.json
    );
    revoked_within_a_second(
        &platform,
        1,
        &a,
        &third.str("/session_token"),
        "session_revoked",
    )
    .await?;
    let listed = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user_id}/sessions"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        me(&platform, 1, &a, &bystander.str("/session_token"))
            .await?
            .status,
        200,
        "other users are untouched"
    );

    // An edge that starts after the revocations still refuses the tokens.
    platform.stop_service("edge-guard-1").await?;
    let restarted = platform.edges.len();
    platform.add_edge().await?;
    for s in [&first, &second, &third] {
        let r = me(&platform, restarted, &a, &s.str("/session_token")).await?;
        assert_eq!(r.code(), Some("session_revoked"), "{}", r.json);
    }
    assert_eq!(
        me(&platform, restarted, &a, &bystander.str("/session_token"))
            .await?
            .status,
        200
    );
    platform.stop().await
}

#[tokio::test]
async fn a_refresh_racing_a_revocation_never_outlives_it() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Racing").await?;
    let client = platform.client(&a);
    client.sign_up("racer@example.com", PASSWORD).await?.ok()?;
    for _ in 0..8 {
        let s = client.sign_in("racer@example.com", PASSWORD).await?.ok()?;
        let path = format!("/v1/sessions/{}/revoke", s.session_id);
        let (refreshed, revoked) = tokio::join!(
            client.refresh(s.refresh_token.expose()),
            platform.backend(Method::POST, &path, &a.secret_key, None)
        );
        assert_eq!(revoked?.status, 200);
        let refreshed = refreshed?;
        if refreshed.response.status == 200 {
            // The refresh won the lock first; the revocation still ends it.
            let refreshed = refreshed.ok()?;
            client
                .refresh(refreshed.refresh_token.expose())
                .await?
                .refused(SessionRevoked)?;
            client
                .me(refreshed.session_token.expose())
                .await?
                .refused(SessionRevoked)?;
        } else {
            refreshed.refused(SessionRevoked)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions_at_refresh() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Timeouts").await?;
    set_policy(platform, &a, json!({"session_idle_timeout_seconds": 3600, "session_absolute_timeout_seconds": 86400, "session_lifetime_seconds": 600})).await?;
    let client = platform.client(&a);
    let idle = client
        .clone()
        .in_country("jp")
        .sign_up("idle@example.com", PASSWORD)
        .await?
        .ok()?;
    let absolute = client.sign_in("idle@example.com", PASSWORD).await?.ok()?;
    // Time travel in the user's regional store instead of sleeping.
    let apac = platform.region_db(Region::Apac).await?;
    let sessions = format!("{}.sessions", schema(&a));
    apac.execute(
        &format!(
            "UPDATE {sessions} SET last_active_at = now() - interval '61 minutes' WHERE id = $1"
        ),
        &[&idle.session_id.to_string()],
    )
    .await?;
    apac.execute(
        &format!("UPDATE {sessions} SET expires_at = now() - interval '1 second' WHERE id = $1"),
        &[&absolute.session_id.to_string()],
    )
    .await?;
    for s in [&idle, &absolute] {
        client
            .refresh(s.refresh_token.expose())
            .await?
            .refused(SessionInvalid)?;
    }
    // A fresh session's token never outlives the session itself.
    let fresh = client.sign_in("idle@example.com", PASSWORD).await?.ok()?;
    apac.execute(
        &format!("UPDATE {sessions} SET expires_at = now() + interval '2 minutes' WHERE id = $1"),
        &[&fresh.session_id.to_string()],
    )
    .await?;
    let refreshed = client.refresh(fresh.refresh_token.expose()).await?.ok()?;
    assert!(
        refreshed.expires_at
            <= time::OffsetDateTime::now_utc()
                + time::Duration::minutes(2)
                + time::Duration::seconds(1)
    );
    Ok(())
}

#[tokio::test]
async fn signing_keys_rotate_per_issuer_and_old_tokens_verify_until_they_expire(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Rotator").await?;
    let b = tenant(platform, "Bystander").await?;
    let kid = |token: &str| token.split('.').nth(1).unwrap_or_default().to_owned();
    let before = platform
        .sign_up(&a, ORIGIN, None, "k@example.com", PASSWORD)
        .await?;
    let b_before = platform
        .sign_up(&b, ORIGIN, None, "k@example.com", PASSWORD)
        .await?;

    let r = platform
        .backend(Method::POST, "/v1/session_keys/rotate", &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let new_kid = r.str("/kid");
    assert_ne!(new_kid, kid(&before.str("/session_token")));

    let after = platform
        .sign_in(&a, ORIGIN, "k@example.com", PASSWORD)
        .await?;
    assert_eq!(
        kid(&after.str("/session_token")),
        new_kid,
        "new tokens use the new key"
    );
    assert_eq!(
        me(platform, 0, &a, &before.str("/session_token"))
            .await?
            .status,
        200,
        "old tokens still verify"
    );
    assert_eq!(
        me(platform, 0, &a, &after.str("/session_token"))
            .await?
            .status,
        200
    );
    // B is untouched.
    let b_after = platform
        .sign_in(&b, ORIGIN, "k@example.com", PASSWORD)
        .await?;
    assert_eq!(
        kid(&b_after.str("/session_token")),
        kid(&b_before.str("/session_token"))
    );
    assert_eq!(
        me(platform, 0, &b, &b_before.str("/session_token"))
            .await?
            .status,
        200
    );
    // A's new key does not verify at B.
    let r = me(platform, 0, &b, &after.str("/session_token")).await?;
    assert_eq!(r.code(), Some("session_invalid"));
    // Keys are stored sealed, one row per key.
    let keys: i64 = platform
        .global()
        .await?
        .query_one(
            "SELECT count(*) FROM session_keys.keys WHERE issuer_id = $1",
            &[&a.issuer_id],
        )
        .await?
        .get(0);
    assert_eq!(keys, 2);
    let r = platform
        .send(
            Method::POST,
            "/v1/session_keys/rotate",
            &[
                ("authorization", &format!("Bearer {}", a.restricted_key)),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"));
    Ok(())
}

/// `GET /v1/client/me` asks the user's regional store directly (issue 10):
/// the store is the authority on the session, so a revocation this edge
/// never heard of (written in the store, no broadcast) is refused there;
/// the token of one issuer read with another issuer's key is refused at
/// the edge before any store is asked; a live session gets its own user
/// with the region the token names.
#[tokio::test]
async fn me_is_answered_by_the_sessions_own_store() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Me A").await?;
    let b = tenant(platform, "Me B").await?;
    let client = platform.client(&a).in_country("jp");
    let signed_up = client.sign_up("mei@example.com", PASSWORD).await?.ok()?;
    let other = client.sign_in("mei@example.com", PASSWORD).await?.ok()?;
    let user = client.me(signed_up.session_token.expose()).await?.ok()?;
    assert_eq!(user.id, signed_up.user.id);
    assert_eq!(user.region, Region::Apac);

    // Another issuer's key with A's token: refused, whoever the user is.
    let r = me(platform, 0, &b, signed_up.session_token.expose()).await?;
    assert_eq!(r.status, 401, "{}", r.json);

    // Revoked in the store behind the edges' backs (no broadcast): refused
    // by the store once the edge's memory of the answer (2 s) runs out.
    platform
        .region_db(Region::Apac)
        .await?
        .execute(
            &format!(
                "UPDATE {}.sessions SET revoked_at = now(), revoke_reason = 'test' WHERE id = $1",
                schema(&a)
            ),
            &[&signed_up.session_id.to_string()],
        )
        .await?;
    let started = std::time::Instant::now();
    loop {
        let r = me(platform, 0, &a, signed_up.session_token.expose()).await?;
        if r.status != 200 {
            assert_eq!(
                (r.status, r.code()),
                (401, Some("session_revoked")),
                "{}",
                r.json
            );
            break;
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "still answered after the edge's memory ran out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The user's other session is untouched.
    let still = client.me(other.session_token.expose()).await?.ok()?;
    assert_eq!(still.id, signed_up.user.id);
    Ok(())
}
