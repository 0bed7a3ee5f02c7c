//! Revocation fails closed (issue 9, section 5): a full revocation set sheds
//! instead of forgetting, and an edge that missed broadcasts while its bus
//! connection was down reloads before it vouches for a session again.

use crate::factor_kit::{tenant, verify};
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const ORIGIN: &str = "https://app.example.com";
const PASSWORD: &str = "correct horse battery";

async fn revoke(platform: &Platform, tenant: &Tenant, session: &Response) -> anyhow::Result<()> {
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/sessions/{}/revoke", session.str("/session_id")),
            &tenant.secret_key,
            None,
        )
        .await?;
    anyhow::ensure!(r.status == 200, "revoke: {}", r.json);
    Ok(())
}

/// Polls `verify` on `replica` until its answer is not `skip`, for `limit`.
async fn settle(
    platform: &Platform,
    replica: usize,
    tenant: &Tenant,
    token: &str,
    skip: impl Fn(&Response) -> bool,
    limit: Duration,
) -> anyhow::Result<Response> {
    let started = Instant::now();
    loop {
        let r = verify(platform, replica, tenant, token).await?;
        if !skip(&r) || started.elapsed() > limit {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_revocation_set_sheds_with_503_instead_of_forgetting() -> anyhow::Result<()> {
    // Own platform: adds an edge replica.
    let mut platform = Platform::start().await?;
    // Replica 1 remembers two revocations at most.
    platform
        .add_edge_with(|c| c.revocation_capacity = 2)
        .await?;
    let a = tenant(&platform, "Revoking").await?;
    let b = tenant(&platform, "Quiet").await?;
    let mut a_sessions = vec![
        platform
            .sign_up(&a, ORIGIN, None, "many@example.com", PASSWORD)
            .await?,
    ];
    for _ in 0..3 {
        a_sessions.push(
            platform
                .sign_in(&a, ORIGIN, "many@example.com", PASSWORD)
                .await?,
        );
    }
    let b_session = platform
        .sign_up(&b, ORIGIN, None, "calm@example.com", PASSWORD)
        .await?;
    for s in &a_sessions {
        assert_eq!(
            verify(&platform, 1, &a, &s.str("/session_token"))
                .await?
                .status,
            200
        );
    }
    // Two revocations fill replica 1's set; the third does not fit.
    for s in &a_sessions[..3] {
        revoke(&platform, &a, s).await?;
    }
    let third = settle(
        &platform,
        1,
        &a,
        &a_sessions[2].str("/session_token"),
        |r| r.status == 200,
        Duration::from_secs(2),
    )
    .await?;
    assert_eq!(
        (third.status, third.code()),
        (503, Some("overloaded")),
        "{}",
        third.json
    );
    let retry_after: u64 = third
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry_after >= 1);
    // Nothing was evicted to make room: the first two are still revoked.
    for s in &a_sessions[..2] {
        let r = verify(&platform, 1, &a, &s.str("/session_token")).await?;
        assert_eq!(r.code(), Some("session_revoked"), "{}", r.json);
    }
    // The issuer whose revocation did not fit is not vouched for at all…
    let r = verify(&platform, 1, &a, &a_sessions[3].str("/session_token")).await?;
    assert_eq!((r.status, r.code()), (503, Some("overloaded")));
    // …other issuers are, and a replica with room answers exactly.
    let r = verify(&platform, 1, &b, &b_session.str("/session_token")).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = verify(&platform, 0, &a, &a_sessions[2].str("/session_token")).await?;
    assert_eq!(r.code(), Some("session_revoked"));
    assert_eq!(
        verify(&platform, 0, &a, &a_sessions[3].str("/session_token"))
            .await?
            .status,
        200
    );
    platform.stop().await
}

/// A TCP relay to the NATS server that the test can cut (closing every
/// connection and refusing new ones) and restore, to force a reconnect.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (is_open, cut_signal) = (Arc::clone(&open), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::Acquire) {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                let mut cut = cut_signal.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, open, cuts })
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

#[tokio::test]
async fn an_edge_that_missed_a_revocation_while_disconnected_reloads_after_reconnecting(
) -> anyhow::Result<()> {
    // Own platform: adds an edge replica behind a proxy it cuts.
    let mut platform = Platform::start().await?;
    let upstream = platform.nats.url.trim_start_matches("nats://").to_owned();
    let relay = Relay::start(upstream).await?;
    // Replica 1 reaches NATS only through the relay.
    let url = relay.url();
    platform
        .add_edge_with(move |c| c.basics.nats_url = url)
        .await?;
    let a = tenant(&platform, "Partitioned").await?;
    let doomed = platform
        .sign_up(&a, ORIGIN, None, "gone@example.com", PASSWORD)
        .await?;
    let kept = platform
        .sign_in(&a, ORIGIN, "gone@example.com", PASSWORD)
        .await?;
    for s in [&doomed, &kept] {
        assert_eq!(
            verify(&platform, 1, &a, &s.str("/session_token"))
                .await?
                .status,
            200
        );
    }
    // A second backend key, cached by replica 1, to be revoked while it is away.
    let created = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({ "kind": "secret", "name": "doomed", "scopes": ["sessions:read"] })),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let doomed_key = Tenant {
        secret_key: created.str("/key"),
        ..a.clone()
    };
    assert_eq!(
        verify(&platform, 1, &doomed_key, &kept.str("/session_token"))
            .await?
            .status,
        200
    );

    // Cut replica 1 off the bus; it stops vouching for sessions it cannot check.
    relay.cut();
    let r = settle(
        &platform,
        1,
        &a,
        &kept.str("/session_token"),
        |r| r.status == 200,
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("upstream_unavailable")),
        "{}",
        r.json
    );
    // Revoked while replica 1 is away: the broadcasts never reach it.
    revoke(&platform, &a, &doomed).await?;
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/api_keys/{}", created.str("/id")),
            &a.secret_key,
            None,
        )
        .await?;
    assert!(r.status < 300, "{} {}", r.status, r.json);
    let r = verify(&platform, 0, &a, &doomed.str("/session_token")).await?;
    assert_eq!(r.code(), Some("session_revoked"));

    // Back on the bus, replica 1 reloads before it answers again.
    relay.restore();
    let r = settle(
        &platform,
        1,
        &a,
        &doomed.str("/session_token"),
        |r| r.status == 503,
        Duration::from_secs(20),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_revoked")),
        "{}",
        r.json
    );
    let r = verify(&platform, 1, &a, &kept.str("/session_token")).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    // The cached API key was dropped too: its revocation holds on replica 1.
    let r = verify(&platform, 1, &doomed_key, &kept.str("/session_token")).await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("invalid_api_key")),
        "{}",
        r.json
    );
    platform.stop().await
}

#[tokio::test]
async fn an_edge_that_cannot_load_a_regions_revocations_refuses_only_that_regions_sessions(
) -> anyhow::Result<()> {
    // Own platform: stops a regional store.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let a = tenant(&platform, "Unsure").await?;
    // One user placed in wnam (a US sign-up), one in weur (the default).
    let west = platform
        .sign_up(&a, ORIGIN, Some("MX"), "west@example.com", PASSWORD)
        .await?;
    assert_eq!(west.status, 201, "{}", west.json);
    assert_eq!(west.str("/user/region"), "wnam");
    let gone = platform
        .sign_in(&a, ORIGIN, "west@example.com", PASSWORD)
        .await?;
    revoke(&platform, &a, &gone).await?;
    let eu = platform
        .sign_up(&a, ORIGIN, None, "eu@example.com", PASSWORD)
        .await?;

    // wnam's store is down when a new replica starts: it cannot know what
    // was revoked there, so it vouches for no wnam session…
    platform.stop_service("user-store-wnam").await?;
    platform.add_edge().await?;
    for s in [&west, &gone] {
        let r = verify(&platform, 1, &a, &s.str("/session_token")).await?;
        assert_eq!(
            (r.status, r.code()),
            (503, Some("upstream_unavailable")),
            "{}",
            r.json
        );
        assert!(r.headers.get("retry-after").is_some());
    }
    // …while weur's sessions and everything else are answered as usual.
    let r = verify(&platform, 1, &a, &eu.str("/session_token")).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .send_to(
            1,
            Method::GET,
            "/v1/issuer",
            &[("authorization", &format!("Bearer {}", a.secret_key))],
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // The store comes back: the replica loads wnam within a few seconds.
    platform.start_service("user-store-wnam").await?;
    let r = settle(
        &platform,
        1,
        &a,
        &gone.str("/session_token"),
        |r| r.status == 503,
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_revoked")),
        "{}",
        r.json
    );
    let r = verify(&platform, 1, &a, &west.str("/session_token")).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    platform.stop().await
}

async fn me(platform: &Platform, tenant: &Tenant, token: &str) -> anyhow::Result<Response> {
    platform
        .client_call(0, tenant, Method::GET, "/v1/client/me", Some(token), None)
        .await
}

/// Issue 15's regression: revocations live in the regional stores, so
/// neither an empty Redis nor a restarted edge brings a session back.
#[tokio::test]
async fn a_signed_out_session_stays_refused_after_redis_and_the_edge_restart() -> anyhow::Result<()>
{
    // Own platform: flushes Redis, restarts the edge.
    let mut platform = Platform::start().await?;
    let a = tenant(&platform, "Leaving").await?;
    let left = platform
        .sign_up(&a, ORIGIN, None, "leaver@example.com", PASSWORD)
        .await?;
    let stolen = platform
        .sign_in(&a, ORIGIN, "leaver@example.com", PASSWORD)
        .await?;
    let token = left.str("/session_token");
    assert_eq!(me(&platform, &a, &token).await?.status, 200);
    let out = platform
        .client_call(
            0,
            &a,
            Method::POST,
            "/v1/client/sign_out",
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(out.status, 200, "{}", out.json);
    assert_eq!(
        me(&platform, &a, &token).await?.code(),
        Some("session_revoked")
    );
    // A second session is compromised by a reused refresh token.
    let refresh = stolen.str("/refresh_token");
    assert_eq!(platform.refresh(&a, &refresh).await?.status, 200);
    let r = platform.refresh(&a, &refresh).await?;
    assert_eq!(r.code(), Some("refresh_token_reused"), "{}", r.json);

    // Redis loses everything, then the edge restarts.
    platform.flush_redis().await?;
    platform.stop_service("edge-guard-0").await?;
    platform.start_service("edge-guard-0").await?;

    let r = me(&platform, &a, &token).await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_revoked")),
        "{}",
        r.json
    );
    let r = me(&platform, &a, &stolen.str("/session_token")).await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_compromised")),
        "{}",
        r.json
    );
    // A session nobody revoked is still fine.
    let fresh = platform
        .sign_in(&a, ORIGIN, "leaver@example.com", PASSWORD)
        .await?;
    assert_eq!(
        me(&platform, &a, &fresh.str("/session_token"))
            .await?
            .status,
        200
    );
    platform.stop().await
}

/// The authoritative list the edges rebuild from: every issuer of a region,
/// page by page without gaps or repeats, compromise kept, live sessions left
/// out; readable by edge-guard alone.
#[tokio::test]
async fn the_regional_revocation_list_pages_through_every_issuer() -> anyhow::Result<()> {
    use idm_core::proto::session;
    use idm_core::Region;
    use idm_testkit::Identity;
    // Own platform: pages through every issuer's revocations.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Pages A").await?;
    let b = tenant(&platform, "Pages B").await?;
    let mut revoked = Vec::new();
    let mut live = Vec::new();
    for (tenant, name) in [(&a, "a"), (&b, "b")] {
        let email = format!("pager-{name}@example.com");
        let first = platform
            .sign_up(tenant, ORIGIN, None, &email, PASSWORD)
            .await?;
        live.push(first.str("/session_id"));
        for _ in 0..3 {
            let s = platform.sign_in(tenant, ORIGIN, &email, PASSWORD).await?;
            revoke(&platform, tenant, &s).await?;
            revoked.push((tenant.issuer_id.clone(), s.str("/session_id"), false));
        }
        // One more, compromised by reusing its refresh token.
        let s = platform.sign_in(tenant, ORIGIN, &email, PASSWORD).await?;
        let refresh = s.str("/refresh_token");
        assert_eq!(platform.refresh(tenant, &refresh).await?.status, 200);
        assert_eq!(
            platform.refresh(tenant, &refresh).await?.code(),
            Some("refresh_token_reused")
        );
        revoked.push((tenant.issuer_id.clone(), s.str("/session_id"), true));
    }
    revoked.sort();

    // The edge's call, two at a time.
    let edge = platform.bus(Identity::EdgeGuard).await?;
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = edge
            .send(&session::RevokedSessions {
                region: Region::Weur,
                after: after.clone(),
                limit: 2,
                since: None,
            })
            .await?;
        pages += 1;
        assert!(page.data.len() <= 2);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for r in &page.data {
            // A day (the longest token lifetime) and a minute of clock slack.
            assert!(r.until > now && r.until <= now + 86_400 + 61, "{r:?}");
            seen.push((
                r.issuer_id.to_string(),
                r.session_id.to_string(),
                r.compromised,
            ));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        anyhow::ensure!(pages < 20, "the pages never end");
    }
    assert_eq!(seen, revoked, "in (issuer, session) order, each once");
    assert!(pages >= 4);
    assert!(seen.iter().all(|(_, id, _)| !live.contains(id)));
    // Another region has none of them.
    let other = edge
        .send(&session::RevokedSessions {
            region: Region::Apac,
            after: None,
            limit: 100,
            since: None,
        })
        .await?;
    assert!(other.data.is_empty() && other.next.is_none());

    // Only what was revoked after `since` (an edge catching up).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (since, expected) in [(now - 3600, revoked.len()), (now + 3600, 0)] {
        let page = edge
            .send(&session::RevokedSessions {
                region: Region::Weur,
                after: None,
                limit: 100,
                since: Some(since),
            })
            .await?;
        assert_eq!(page.data.len(), expected, "since {since}");
    }

    // The list reads the region's revocation log, never the issuers'
    // tables (walking every schema made the catch-up grow with tenants):
    // with both issuers' session tables locked against everyone, it still
    // answers, in full.
    let mut weur = platform.region_db(Region::Weur).await?;
    let locks = weur.transaction().await?;
    for tenant in [&a, &b] {
        let schema = format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"));
        locks
            .batch_execute(&format!(
                "LOCK TABLE {schema}.sessions, {schema}.revoked_session_tombstones IN ACCESS EXCLUSIVE MODE"
            ))
            .await?;
    }
    let page = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        edge.send(&session::RevokedSessions {
            region: Region::Weur,
            after: None,
            limit: 100,
            since: None,
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the revocation list waited for an issuer's table"))??;
    assert_eq!(page.data.len(), revoked.len());
    locks.rollback().await?;

    // Nobody else may read it (the bus table): refused before sending.
    let auth = platform.bus(Identity::Auth).await?;
    let refused = auth
        .send(&session::RevokedSessions {
            region: Region::Weur,
            after: None,
            limit: 100,
            since: None,
        })
        .await
        .err()
        .map(|e| e.code);
    assert_eq!(refused, Some(idm_core::ErrorCode::CallerNotAllowed));
    platform.stop().await
}

/// A revocation recorded in its store whose broadcast never went out (the
/// session service died in between) still reaches every edge: each reads
/// the revocations made lately every ten seconds.
#[tokio::test]
async fn a_revocation_whose_broadcast_was_lost_reaches_the_edges_anyway() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Unannounced").await?;
    let s = platform
        .sign_up(&a, ORIGIN, None, "quiet@example.com", PASSWORD)
        .await?;
    let token = s.str("/session_token");
    assert_eq!(verify(platform, 0, &a, &token).await?.status, 200);
    // Revoked in the store only, as a session service that died between
    // its store call and its broadcast would leave it.
    let db = platform.region_db(idm_core::Region::Weur).await?;
    let updated = db
        .execute(
            &format!(
                "UPDATE {}.sessions SET revoked_at = now(), revoke_reason = 'sign_out' WHERE id = $1",
                a.issuer_id
            ),
            &[&s.str("/session_id")],
        )
        .await?;
    assert_eq!(updated, 1);
    let r = settle(
        platform,
        0,
        &a,
        &token,
        |r| r.status == 200,
        // Ten seconds between catch-ups; generous for a loaded machine.
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_revoked")),
        "{}",
        r.json
    );
    Ok(())
}
