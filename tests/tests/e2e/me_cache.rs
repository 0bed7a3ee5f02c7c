//! `GET /v1/client/me` answered from the edges' memory (issue 10,
//! docs/PERFORMANCE.md "Hot paths, seventh round"): an answer is remembered
//! per session, every change to the user reaches every edge at once (the
//! store's `user.changed` broadcast, sent before the change is answered), a
//! deletion leaves no edge answering, and memory is never a way around the
//! token's checks (another issuer's key, a revoked session).

use crate::deletion::{delete, status, wait_for};
use crate::factor_kit::{code_at, post, tenant, ORIGIN, PASSWORD};
use crate::sessions::me;
use crate::user_kit::schema_of;
use idm_core::Region;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// The edges these tests read from remember answers for a minute, so an
/// answer seen after a change can only be fresh because the change was
/// announced, never because the memory ran out.
const REMEMBERING: [usize; 2] = [1, 2];

async fn platform_with_long_memory() -> anyhow::Result<Platform> {
    // Behind a loopback proxy: the sign-up's country places the user.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    for _ in REMEMBERING {
        platform
            .add_edge_with(|c| c.me_cache_ttl = Duration::from_secs(60))
            .await?;
    }
    Ok(platform)
}

/// Renames the user in their store behind every edge's back: no broadcast.
async fn rename_unannounced(
    platform: &Platform,
    region: Region,
    tenant: &Tenant,
    user_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    platform
        .region_db(region)
        .await?
        .execute(
            &format!(
                "UPDATE {}.users SET name = $2 WHERE id = $1",
                schema_of(tenant)
            ),
            &[&user_id, &name],
        )
        .await?;
    Ok(())
}

/// What every remembering edge answers for `token`, each asked twice (the
/// second answer is the remembered one when the first was from the store).
async fn on_every_edge(
    platform: &Platform,
    tenant: &Tenant,
    token: &str,
) -> anyhow::Result<Vec<Response>> {
    let mut answers = Vec::new();
    for replica in REMEMBERING {
        for _ in 0..2 {
            answers.push(me(platform, replica, tenant, token).await?);
        }
    }
    Ok(answers)
}

fn memory_answers(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("idm_edge_me_answers_total{") && l.contains("from=\"memory\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn every_edge_shows_a_change_at_once_though_it_remembers_the_user() -> anyhow::Result<()> {
    // Own platform: edges with a minute of memory.
    let platform = platform_with_long_memory().await?;
    let a = tenant(&platform, "Remembered A").await?;
    let b = tenant(&platform, "Remembered B").await?;
    let signed_up = platform
        .sign_up(&a, ORIGIN, Some("jp"), "rem@example.com", PASSWORD)
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);
    assert_eq!(signed_up.json["user"]["region"], json!("apac"));
    let token = signed_up.str("/session_token");
    let user_id = signed_up.str("/user/id");
    let memory_before = memory_answers(&platform.edge_metrics(1).await?);
    for answer in on_every_edge(&platform, &a, &token).await? {
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(answer.json["name"], json!(null));
        assert_eq!(answer.json["mfa_enabled"], json!(false));
    }
    assert!(
        memory_answers(&platform.edge_metrics(1).await?) >= memory_before + 2.0,
        "the second answer of each edge came from memory"
    );

    // Proof that the edges answer from memory: a change made in the store
    // behind every edge's back (no broadcast) is not seen.
    rename_unannounced(&platform, Region::Apac, &a, &user_id, "Unannounced").await?;
    for answer in on_every_edge(&platform, &a, &token).await? {
        assert_eq!(answer.json["name"], json!(null), "{}", answer.json);
    }

    // Memory is no way around the token's checks: another issuer's key
    // with A's remembered session is refused on every edge.
    for replica in [0, 1, 2] {
        let r = me(&platform, replica, &b, &token).await?;
        assert_eq!(r.status, 401, "{}", r.json);
    }

    // Every change through the API is seen by every edge at once, several
    // times over (each answer asked right after the change was answered).
    for round in 0..5 {
        let name = format!("Round {round}");
        let r = platform
            .backend(
                Method::PATCH,
                &format!("/v1/users/{user_id}"),
                &a.secret_key,
                Some(json!({ "name": name, "metadata": { "round": round } })),
            )
            .await?;
        assert_eq!(r.status, 200, "{}", r.json);
        for answer in on_every_edge(&platform, &a, &token).await? {
            assert_eq!(answer.status, 200, "{}", answer.json);
            assert_eq!(answer.json["name"], json!(name), "round {round}");
            assert_eq!(answer.json["metadata"], json!({ "round": round }));
        }
    }

    // A second factor (auth → store) is seen at once too.
    let enrolled = post(
        &platform,
        &a,
        "/v1/client/mfa/totp",
        Some(&token),
        json!({}),
    )
    .await?;
    assert_eq!(enrolled.status, 200, "{}", enrolled.json);
    let code = code_at(&enrolled.str("/secret"), platform.clock.unix())?;
    let confirmed = post(
        &platform,
        &a,
        "/v1/client/mfa/totp/confirm",
        Some(&token),
        json!({ "code": code }),
    )
    .await?;
    assert_eq!(confirmed.status, 200, "{}", confirmed.json);
    for answer in on_every_edge(&platform, &a, &token).await? {
        assert_eq!(answer.json["mfa_enabled"], json!(true), "{}", answer.json);
    }

    // Deleting the user: no edge answers with the user's data from memory
    // once the job is done (its first step revokes the session, its purge
    // announces the change).
    let r = delete(&platform, &a, &user_id).await?;
    assert_eq!(r.status, 202, "{}", r.json);
    wait_for(
        &platform,
        &a,
        &r.str("/id"),
        Duration::from_secs(30),
        |job| status(job) == "completed",
    )
    .await?;
    for answer in on_every_edge(&platform, &a, &token).await? {
        assert_eq!(answer.status, 401, "{}", answer.json);
        assert!(
            !answer.json.to_string().contains("rem@example.com"),
            "{}",
            answer.json
        );
    }
    platform.stop().await
}

#[tokio::test]
async fn an_unannounced_change_is_seen_once_the_memory_runs_out() -> anyhow::Result<()> {
    // Own platform: edges with 2 s of memory (the default) next to ones
    // with a minute.
    let platform = platform_with_long_memory().await?;
    let a = tenant(&platform, "Forgetting").await?;
    let signed_up = platform
        .sign_up(&a, ORIGIN, Some("jp"), "fade@example.com", PASSWORD)
        .await?;
    assert_eq!(
        signed_up.json["user"]["region"],
        json!("apac"),
        "{}",
        signed_up.json
    );
    let token = signed_up.str("/session_token");
    let user_id = signed_up.str("/user/id");
    let first = me(&platform, 0, &a, &token).await?;
    assert_eq!(first.json["name"], json!(null), "{}", first.json);
    let long = me(&platform, 1, &a, &token).await?;
    assert_eq!(long.json["name"], json!(null), "{}", long.json);
    rename_unannounced(&platform, Region::Apac, &a, &user_id, "Lost broadcast").await?;
    // Edge 0 (2 s) sees the change within its memory's lifetime, with room
    // for a loaded machine; edge 1 (a minute) still answers from memory,
    // which shows the change was not announced.
    let started = Instant::now();
    loop {
        let r = me(&platform, 0, &a, &token).await?;
        if r.json["name"] == json!("Lost broadcast") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(8),
            "still the old answer: {}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let long = me(&platform, 1, &a, &token).await?;
    assert_eq!(long.json["name"], json!(null), "{}", long.json);
    platform.stop().await
}

#[tokio::test]
async fn an_edge_outside_the_eu_never_remembers_an_eu_users_answer() -> anyhow::Result<()> {
    // Own platform: edges with a minute of memory, one of them outside the EU.
    let mut platform = platform_with_long_memory().await?;
    platform
        .add_edge_with(|c| {
            c.me_cache_ttl = Duration::from_secs(60);
            c.jurisdiction = idm_core::Jurisdiction::Global;
        })
        .await?;
    let outside = REMEMBERING.len() + 1;
    let a = tenant(&platform, "Resident").await?;
    let signed_up = platform
        .sign_up(&a, ORIGIN, Some("de"), "eu@example.com", PASSWORD)
        .await?;
    assert_eq!(
        signed_up.json["user"]["region"],
        json!("weur"),
        "{}",
        signed_up.json
    );
    let token = signed_up.str("/session_token");
    let user_id = signed_up.str("/user/id");
    for replica in [1, outside] {
        for _ in 0..2 {
            let r = me(&platform, replica, &a, &token).await?;
            assert_eq!(r.status, 200, "{}", r.json);
        }
    }
    rename_unannounced(&platform, Region::Weur, &a, &user_id, "Asked again").await?;
    // Outside the EU every answer came from the store; the EU edge still
    // answers from memory (the control that memory was on at all).
    let r = me(&platform, outside, &a, &token).await?;
    assert_eq!(r.json["name"], json!("Asked again"), "{}", r.json);
    let r = me(&platform, 1, &a, &token).await?;
    assert_eq!(r.json["name"], json!(null), "{}", r.json);
    platform.stop().await
}
