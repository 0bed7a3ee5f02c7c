//! Refresh in one bus hop (issue 10, docs/SESSIONS.md): the edge rotates the
//! refresh token at the store its token names and signs with the issuer's
//! ring. What that must not change, tried as an attacker would: a retry
//! within the leeway across a key rotation, another issuer's key or a
//! forged region spending nothing, a reuse found at one edge refused at
//! every other, and a successor sealed by the earlier release (the session
//! service's master key) still honoured.

use crate::factor_kit::{tenant, verify};
use crate::sessions::set_policy;
use base64::Engine;
use idm_core::ErrorCode::{RefreshTokenReused, SessionCompromised, SessionInvalid};
use idm_core::Region;
use idm_testkit::{Platform, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

fn kid(token: &str) -> String {
    token.split('.').nth(1).unwrap_or_default().to_owned()
}

fn schema(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

async fn allow_retries(platform: &Platform, tenant: &Tenant) -> anyhow::Result<()> {
    set_policy(
        platform,
        tenant,
        json!({ "refresh_reuse_leeway_seconds": 30 }),
    )
    .await
}

/// The successor stored for `predecessor`, as the store keeps it.
async fn stored_successor(
    platform: &Platform,
    tenant: &Tenant,
    region: Region,
    predecessor: &str,
) -> anyhow::Result<String> {
    let row = platform
        .region_db(region)
        .await?
        .query_one(
            &format!(
                "SELECT successor_sealed FROM {}.refresh_tokens WHERE token_hash = $1",
                schema(tenant)
            ),
            &[&idm_crypto::refresh_token::hash(predecessor)],
        )
        .await?;
    Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
}

#[tokio::test]
async fn a_retry_within_the_leeway_gets_its_successor_across_a_key_rotation() -> anyhow::Result<()>
{
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Rotating retries").await?;
    allow_retries(platform, &a).await?;
    let client = platform.client(&a).in_country("br");
    let signed_up = client.sign_up("retry@example.com", PASSWORD).await?.ok()?;
    let first = signed_up.refresh_token.expose();
    let rotated = client.refresh(first).await?.ok()?;
    let successor = rotated.refresh_token.expose();

    // Sealed under the issuer's ring key, which the store never holds.
    let sealed = stored_successor(platform, &a, Region::Sam, first).await?;
    assert_eq!(
        idm_crypto::refresh_token::successor_kid(&sealed),
        Some(kid(rotated.session_token.expose()).as_str()),
        "{sealed}"
    );
    assert!(!sealed.contains(successor) && !sealed.contains("idmrt_"));

    let r = platform
        .backend(Method::POST, "/v1/session_keys/rotate", &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let new_kid = r.str("/kid");

    // The retry opens the successor sealed under the rotated-out key and is
    // signed with the new one.
    let retried = client.refresh(first).await?.ok()?;
    assert_eq!(retried.refresh_token.expose(), successor);
    assert_eq!(retried.session_id, signed_up.session_id);
    assert_eq!(kid(retried.session_token.expose()), new_kid);
    client.me(retried.session_token.expose()).await?.ok()?;

    // The successor works once; the first token is then reuse.
    let next = client.refresh(successor).await?.ok()?;
    client.refresh(first).await?.refused(RefreshTokenReused)?;
    client
        .me(next.session_token.expose())
        .await?
        .refused(SessionCompromised)?;
    Ok(())
}

#[tokio::test]
async fn another_issuers_key_or_a_forged_region_spends_nothing() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Owner").await?;
    let b = tenant(platform, "Intruder").await?;
    let (ca, cb) = (platform.client(&a).in_country("br"), platform.client(&b));
    let signed_up = ca.sign_up("spend@example.com", PASSWORD).await?.ok()?;
    let token = signed_up.refresh_token.expose();
    let body = token
        .strip_prefix("idmrt_sam_")
        .ok_or_else(|| anyhow::anyhow!("{token}"))?;

    // B's key with A's live token, many times over, in parallel.
    let tries = futures::future::join_all((0..8).map(|_| cb.refresh(token))).await;
    for answer in tries {
        answer?.refused(SessionInvalid)?;
    }
    // The same secret sent to every other region (and to none).
    for region in Region::ALL.into_iter().filter(|r| *r != Region::Sam) {
        ca.refresh(&format!("idmrt_{region}_{body}"))
            .await?
            .refused(SessionInvalid)?;
    }
    ca.refresh(&format!("idmrt_{body}"))
        .await?
        .refused(SessionInvalid)?;

    // Nothing was spent: A's token rotates, once.
    let rotated = ca.refresh(token).await?.ok()?;
    ca.me(rotated.session_token.expose()).await?.ok()?;
    assert_eq!(
        platform
            .count_events(&a.issuer_id, "session.compromised")
            .await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn a_reuse_found_at_one_edge_is_refused_at_the_other_within_a_second() -> anyhow::Result<()> {
    // Own platform: adds an edge replica.
    let mut platform = Platform::start().await?;
    platform.add_edge().await?;
    let a = tenant(&platform, "Two edges").await?;
    let at_first = platform.client(&a);
    let at_second = platform.client(&a).on(1);
    let signed_up = at_first
        .sign_up("twice@example.com", PASSWORD)
        .await?
        .ok()?;
    let first = signed_up.refresh_token.expose();
    // The thief rotates at one edge…
    let stolen = at_second.refresh(first).await?.ok()?;
    let stolen_token = stolen.session_token.expose();
    assert_eq!(verify(&platform, 1, &a, stolen_token).await?.status, 200);
    // …the user's retry of the same token at the other is reuse, and the
    // edge that signed the thief's token stops vouching for it (stateless
    // verification: only the broadcast can tell it).
    at_first.refresh(first).await?.refused(RefreshTokenReused)?;
    let started = Instant::now();
    loop {
        let r = verify(&platform, 1, &a, stolen_token).await?;
        if r.code() == Some("session_compromised") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1),
            "the other edge still answers {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    at_second
        .refresh(stolen.refresh_token.expose())
        .await?
        .refused(SessionCompromised)?;
    let event = platform
        .last_event(&a.issuer_id, "session.compromised")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["session_id"], json!(signed_up.session_id));
    platform.stop().await
}

#[tokio::test]
async fn a_successor_sealed_by_the_earlier_release_is_still_given_back() -> anyhow::Result<()> {
    // Own platform: reads the session service's master key.
    let mut platform = Platform::start().await?;
    let a = tenant(&platform, "Upgraded").await?;
    allow_retries(&platform, &a).await?;
    let master = platform.sealing_keys("session")?;
    let client = platform.client(&a).in_country("br");
    let signed_up = client.sign_up("legacy@example.com", PASSWORD).await?.ok()?;
    let first = signed_up.refresh_token.expose();
    let rotated = client.refresh(first).await?.ok()?;
    let successor = rotated.refresh_token.expose().to_owned();

    // What the session service of the earlier release stored: the successor
    // under its master key, bound to the predecessor's hash, in base64.
    let predecessor_hash = idm_crypto::refresh_token::hash(first);
    let region = idm_core::proto::session::refresh_token_region(first)
        .ok_or_else(|| anyhow::anyhow!("{first}"))?;
    let legacy = base64::engine::general_purpose::STANDARD
        .encode(master.seal(successor.as_bytes(), predecessor_hash.as_bytes())?);
    assert_eq!(idm_crypto::refresh_token::successor_kid(&legacy), None);
    let updated = platform
        .region_db(region)
        .await?
        .execute(
            &format!(
                "UPDATE {}.refresh_tokens SET successor_sealed = $1 WHERE token_hash = $2",
                schema(&a)
            ),
            &[&legacy, &predecessor_hash],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(updated, 1);

    let through_session = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("idm_edge_refreshes_total{") && l.contains("path=\"session\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = through_session(&platform.edge_metrics(0).await?);
    let retried = client.refresh(first).await?.ok()?;
    assert_eq!(retried.refresh_token.expose(), successor);
    client.me(retried.session_token.expose()).await?.ok()?;
    assert_eq!(
        through_session(&platform.edge_metrics(0).await?),
        before + 1.0,
        "the edge cannot open it; the session service does"
    );
    // The ordinary path rotated everything else here.
    let metrics = platform.edge_metrics(0).await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("idm_edge_refreshes_total{") && l.contains("path=\"store\"")),
        "{metrics}"
    );

    // An edge of the earlier release refreshes through the session service,
    // which seals under the ring too: a retry at an edge of this release
    // opens that successor itself.
    let earlier_edge = platform.bus(idm_bus::Identity::EdgeGuard).await?;
    let policy = idm_core::IssuerPolicy {
        refresh_reuse_leeway_seconds: 30,
        ..Default::default()
    };
    let through_service = earlier_edge
        .send(&idm_core::proto::session::Refresh {
            issuer_id: idm_core::IssuerId::parse(&a.issuer_id)?,
            policy,
            refresh_token: idm_core::proto::SecretText::new(successor.clone()),
            device: Default::default(),
        })
        .await?;
    let sealed = stored_successor(&platform, &a, region, &successor).await?;
    assert!(
        idm_crypto::refresh_token::successor_kid(&sealed).is_some(),
        "{sealed}"
    );
    let before = through_session(&platform.edge_metrics(0).await?);
    let retried = client.refresh(&successor).await?.ok()?;
    assert_eq!(
        retried.refresh_token.expose(),
        through_service.refresh_token.expose()
    );
    assert_eq!(through_session(&platform.edge_metrics(0).await?), before);
    client.me(retried.session_token.expose()).await?.ok()?;
    platform.stop().await
}

/// `session.v1.report_reuse` revokes nothing it is not pointed at exactly:
/// another issuer's id, the wrong region or a made-up session is refused
/// and the real session lives on; no identity but the edge may send it.
#[tokio::test]
async fn a_reuse_report_for_the_wrong_issuer_region_or_session_revokes_nothing(
) -> anyhow::Result<()> {
    use idm_core::proto::session::ReportReuse;
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Reported").await?;
    let b = tenant(platform, "Reporter").await?;
    let client = platform.client(&a);
    let signed_up = client.sign_up("report@example.com", PASSWORD).await?.ok()?;
    let token = signed_up.refresh_token.expose();
    let region = idm_core::proto::session::refresh_token_region(token)
        .ok_or_else(|| anyhow::anyhow!("{token}"))?;
    let other_region = Region::ALL
        .into_iter()
        .find(|r| *r != region)
        .ok_or_else(|| anyhow::anyhow!("one region"))?;
    let edge = platform.bus(idm_bus::Identity::EdgeGuard).await?;
    let a_id = idm_core::IssuerId::parse(&a.issuer_id)?;
    let b_id = idm_core::IssuerId::parse(&b.issuer_id)?;
    for (issuer, region, session) in [
        (b_id, region, signed_up.session_id.clone()),
        (a_id.clone(), other_region, signed_up.session_id.clone()),
        (a_id.clone(), region, idm_core::SessionId::generate()),
    ] {
        let answer = edge
            .send(&ReportReuse {
                issuer_id: issuer,
                region,
                session_id: session,
            })
            .await;
        assert!(answer.is_err(), "{answer:?}");
    }
    // Not the edge: refused before it is sent.
    let auth = platform.bus(idm_bus::Identity::Auth).await?;
    let denied = auth
        .send(&ReportReuse {
            issuer_id: a_id,
            region,
            session_id: signed_up.session_id.clone(),
        })
        .await;
    assert_eq!(
        denied.err().map(|e| e.code),
        Some(idm_core::ErrorCode::CallerNotAllowed)
    );
    // The session was never touched.
    let rotated = client.refresh(token).await?.ok()?;
    client.me(rotated.session_token.expose()).await?.ok()?;
    assert_eq!(
        platform
            .count_events(&a.issuer_id, "session.compromised")
            .await?,
        0
    );
    Ok(())
}
