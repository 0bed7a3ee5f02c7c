//! The platform on a three-node NATS cluster, streams replicated on every
//! node, losing the node that leads the `EVENTS` stream in the middle of
//! sign-ups and magic-link sends: services reconnect to the other nodes,
//! requests caught by the loss fail with a clean 503 `upstream_unavailable`
//! (never a hang, a 500 or a half answer), and nothing the platform
//! acknowledged is lost: every sign-up answered 201 has its
//! `session.created` event in the stream, every magic link answered 202 is
//! delivered. Its own test binary: it runs three nats-servers and the
//! whole platform.

use idm_testkit::{Identity, Options, Platform, Tenant};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ORIGIN: &str = "https://app.example.com";

#[derive(Debug, Clone)]
enum Outcome {
    /// 201 sign-up with the user's id, or 202 magic link with the address.
    SignedUp(String),
    LinkSent(String),
    /// Any other answer: status and error code.
    Failed(u16, String),
}

async fn one_call(platform: &Platform, tenant: &Tenant, n: usize) -> anyhow::Result<Outcome> {
    if n % 3 == 2 {
        let email = format!("link{n}@example.com");
        let r = platform
            .client_call(
                0,
                tenant,
                Method::POST,
                "/v1/client/magic_links",
                None,
                Some(json!({ "email": email, "redirect_url": format!("{ORIGIN}/welcome") })),
            )
            .await?;
        return Ok(if r.status == 202 {
            Outcome::LinkSent(email)
        } else {
            Outcome::Failed(r.status, r.code().unwrap_or_default().to_owned())
        });
    }
    let email = format!("user{n}@example.com");
    let r = platform
        .sign_up(tenant, ORIGIN, None, &email, "correct horse battery")
        .await?;
    Ok(if r.status == 201 {
        Outcome::SignedUp(r.str("/user/id"))
    } else {
        Outcome::Failed(r.status, r.code().unwrap_or_default().to_owned())
    })
}

/// The user ids of every `session.created` event of `issuer` in the stream.
async fn session_created_users(
    platform: &Platform,
    issuer: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let js = async_nats::jetstream::new(platform.nats.connect(Identity::Admin).await?);
    let mut stream = js
        .get_stream(idm_bus::events::stream_name(&platform.prefix))
        .await?;
    let last = stream.info().await?.state.last_sequence;
    let subject = format!("{}.events.{issuer}.session.created", platform.prefix);
    let mut users = BTreeSet::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str() != subject {
            continue;
        }
        let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
        if let Some(user) = event.pointer("/data/user_id").and_then(|v| v.as_str()) {
            users.insert(user.to_owned());
        }
    }
    Ok(users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_nats_node_mid_traffic_loses_no_acknowledged_message() -> anyhow::Result<()> {
    let platform = Platform::start_with(Options {
        nats_cluster_nodes: 3,
        ..Options::default()
    })
    .await?;
    let tenant = platform.create_account("Cluster").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    platform
        .set_waf_policy(
            &tenant,
            json!({ "client": { "limit": 100000, "window_seconds": 60 } }),
        )
        .await?;

    // Both streams keep a copy on every node.
    let admin = async_nats::jetstream::new(platform.nats.connect(Identity::Admin).await?);
    let mut leader = String::new();
    for stream in [idm_bus::Stream::Events, idm_bus::Stream::Mail] {
        let info = admin
            .get_stream(stream.name(&platform.prefix))
            .await?
            .info()
            .await?
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream:?}");
        let cluster = info.cluster.clone().unwrap_or_default();
        assert_eq!(cluster.replicas.len(), 2, "{stream:?}: {cluster:?}");
        if matches!(stream, idm_bus::Stream::Events) {
            leader = cluster.leader.unwrap_or_default();
        }
    }
    // Nodes are named n1, n2, n3: kill the one leading EVENTS, the worst
    // case (its stream must elect a new leader before it stores again).
    let victim: usize = leader
        .strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n - 1)
        .ok_or_else(|| anyhow::anyhow!("unexpected leader name {leader:?}"))?;

    // (when the call returned, since the start; started after the kill; outcome)
    let outcomes: Arc<Mutex<Vec<(Duration, bool, Outcome)>>> = Arc::default();
    let started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let platform = Arc::new(platform);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (platform, tenant, outcomes, stop, killed, counter) = (
            Arc::clone(&platform),
            tenant.clone(),
            Arc::clone(&outcomes),
            Arc::clone(&stop),
            Arc::clone(&killed),
            Arc::clone(&counter),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let after_kill = killed.load(Ordering::Relaxed);
                let outcome = one_call(&platform, &tenant, n).await?;
                outcomes
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((started.elapsed(), after_kill, outcome));
            }
            anyhow::Ok(())
        }));
    }
    // Traffic before, then the node dies, then traffic while the cluster
    // recovers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim_url = platform.nats.node_url(victim).unwrap_or_default();
    platform.nats.kill_node(victim).await?;
    let killed_at = started.elapsed();
    killed.store(true, Ordering::Relaxed);
    eprintln!("killed node {victim} ({victim_url}), leader of EVENTS");
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }

    let outcomes = outcomes
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut signed_up = Vec::new();
    let mut links = Vec::new();
    let mut failures = Vec::new();
    let mut ok_after_kill = 0;
    let mut failed_at = Vec::new();
    for (at, after_kill, outcome) in &outcomes {
        match outcome {
            Outcome::SignedUp(user) => signed_up.push(user.clone()),
            Outcome::LinkSent(email) => links.push(email.clone()),
            Outcome::Failed(status, code) => {
                failures.push((*status, code.clone()));
                failed_at.push(at.as_secs_f64() - killed_at.as_secs_f64());
            }
        }
        if *after_kill && !matches!(outcome, Outcome::Failed(..)) {
            ok_after_kill += 1;
        }
    }
    let mut kinds = std::collections::BTreeMap::new();
    for failure in &failures {
        *kinds.entry(failure.clone()).or_insert(0) += 1;
    }
    let first = failed_at.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = failed_at.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "calls: {} ({} sign-ups, {} magic links answered, {} failed {:?}, answered between {:.1} s and {:.1} s after the kill); {} succeeded after the kill",
        outcomes.len(),
        signed_up.len(),
        links.len(),
        failures.len(),
        kinds,
        first,
        last,
        ok_after_kill
    );
    // Caught by the loss: a clean, retryable 503 and nothing else.
    for (status, code) in &failures {
        assert_eq!((*status, code.as_str()), (503, "upstream_unavailable"));
    }
    // The platform kept serving on the two remaining nodes.
    assert!(ok_after_kill > 0, "nothing succeeded after the kill");
    // Every service is connected again (readiness checks NATS).
    let names: Vec<String> = platform.service_addrs.keys().cloned().collect();
    for name in names {
        let (status, body) = platform.get_service(&name, "/readyz").await?;
        assert_eq!(status, 200, "{name}: {body}");
    }
    // No acknowledged message lost: each 201 sign-up's event is stored...
    let stored = session_created_users(&platform, &tenant.issuer_id).await?;
    let missing: Vec<&String> = signed_up.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(missing.is_empty(), "session.created lost for {missing:?}");
    // ...and each 202 magic link is delivered.
    for email in &links {
        platform
            .smtp
            .wait_for(email, 0, Duration::from_secs(60))
            .await?;
    }
    if let Ok(platform) = Arc::try_unwrap(platform) {
        platform.stop().await?;
    }
    Ok(())
}
