//! Faults survived (issue 15): a steady mixed load (sign-up, sign-in,
//! refresh, verify, sign-out, an email code) runs against a platform on its
//! own PostgreSQL servers, Redis and NATS while, one at a time, a regional
//! store is killed, NATS restarts, Redis restarts empty, the global and one
//! regional PostgreSQL restart (crash-style), and the edge and the auth
//! service are killed mid-request. After each fault:
//!
//! - every write that was acknowledged is still there (users, sessions and
//!   revocations in their regional stores, `session.*` events; queued mail
//!   is checked at the end: every acknowledged code reaches the mailbox);
//! - no revoked session was accepted, during the fault or after it (every
//!   acknowledged sign-out is refused by every edge);
//! - every error was clean: a 503 with a stable code and `Retry-After`,
//!   never a 500, never a request hanging past `HANG` (a dropped connection
//!   only from an edge while it was killed);
//! - the platform answers normally again within `RECOVERY_BOUND` of the
//!   dependency's return. The measured times are printed (and recorded in
//!   docs/FAULTS.md).
//!
//! Run it alone with `cargo test -p idm-e2e --test faults -- --nocapture`.

use idm_core::Region;
use idm_testkit::{Options, OwnServers, Platform, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ORIGIN: &str = "https://app.example.com";
const PASSWORD: &str = "correct horse battery";
/// The platform's bus request timeout is 5 s; a request waits on at most
/// two calls in a row when a service vanishes under it. Longer is a hang.
const HANG: Duration = Duration::from_secs(11);
/// After a dependency is back, the platform answers normally within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// A sign-out reaches every edge within this (docs/SESSIONS.md).
const REVOCATION_REACH: Duration = Duration::from_secs(1);
/// How long each dependency stays away.
const OUTAGE: Duration = Duration::from_secs(3);
/// Load workers.
const WORKERS: usize = 3;
/// Stable codes a clean 503 may carry.
const CLEAN_503: [&str; 3] = ["upstream_unavailable", "region_unavailable", "overloaded"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SignUp,
    SignIn,
    Refresh,
    Verify,
    SignOut,
    VerifyRevoked,
    EmailCode,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: bool,
    json: Value,
}

impl Answer {
    fn str(&self, pointer: &str) -> String {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// One request of the load, as it went.
#[derive(Debug)]
struct Outcome {
    op: Op,
    replica: usize,
    started: Instant,
    elapsed: Duration,
    /// `Err`: no HTTP answer at all (connection refused or dropped).
    answer: Result<(u16, Option<String>, bool), String>,
}

struct Revoked {
    token: String,
    session_id: String,
    region: String,
}

/// What the load was told succeeded, and everything it saw.
#[derive(Default)]
struct Ledger {
    /// Region → user ids.
    users: BTreeMap<String, Vec<String>>,
    /// Region → session ids.
    sessions: BTreeMap<String, Vec<String>>,
    revoked: Vec<Revoked>,
    /// Addresses an email code was accepted for (one each).
    mails: Vec<String>,
    outcomes: Vec<Outcome>,
    /// Revoked sessions accepted after their revocation was acknowledged.
    accepted_revoked: Vec<String>,
    /// Live sessions refused with something other than a clean 503.
    refused_live: Vec<String>,
    /// The longest an edge took to refuse a session after its sign-out was
    /// acknowledged.
    revocation_lag: Duration,
}

/// A window during which an edge replica was down (connection errors to it
/// are expected then).
struct Down {
    replica: usize,
    from: Instant,
    until: Instant,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    edges: Vec<SocketAddr>,
    tenant: Tenant,
    ledger: Arc<Mutex<Ledger>>,
}

impl Client {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call(
        &self,
        op: Op,
        replica: usize,
        path: &str,
        session: Option<&str>,
        country: Option<&str>,
        body: Value,
    ) -> Option<Answer> {
        let mut request = self
            .http
            .post(format!("http://{}{path}", self.edges[replica]))
            .timeout(HANG * 2)
            .json(&body);
        if op == Op::Verify || op == Op::VerifyRevoked {
            request = request.bearer_auth(&self.tenant.secret_key);
        } else {
            request = request
                .header("idm-api-key", &self.tenant.restricted_key)
                .header("origin", ORIGIN);
            if let Some(token) = session {
                request = request.bearer_auth(token);
            }
        }
        if let Some(country) = country {
            request = request.header("cf-ipcountry", country);
        }
        let started = Instant::now();
        let sent = request.send().await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                match response.bytes().await {
                    Ok(bytes) => {
                        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        let code = json
                            .pointer("/error/code")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        Ok(Answer {
                            status,
                            code,
                            retry_after,
                            json,
                        })
                    }
                    Err(e) => Err(format!("body: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        self.ledger().outcomes.push(Outcome {
            op,
            replica,
            started,
            elapsed: started.elapsed(),
            answer: match &answer {
                Ok(a) => Ok((a.status, a.code.clone(), a.retry_after)),
                Err(e) => Err(e.clone()),
            },
        });
        answer.ok()
    }

    async fn verify(&self, op: Op, replica: usize, token: &str) -> Option<Answer> {
        self.call(
            op,
            replica,
            "/v1/sessions/verify",
            None,
            None,
            json!({ "session_token": token }),
        )
        .await
    }

    /// One round of the mixed load for a fresh user.
    async fn round(&self, worker: usize, n: usize) {
        let replica = (worker + n) % self.edges.len();
        let country = if n.is_multiple_of(2) { "DE" } else { "MX" };
        let email = format!("w{worker}-{n}@example.com");
        let credentials = json!({ "email": email, "password": PASSWORD });
        let up = self
            .call(
                Op::SignUp,
                replica,
                "/v1/client/sign_up",
                None,
                Some(country),
                credentials.clone(),
            )
            .await;
        let Some(up) = up.filter(|a| a.status == 201) else {
            // As a client honouring Retry-After would, only sooner.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        };
        let first = up.str("/session_token");
        let region = up.str("/user/region");
        {
            let mut ledger = self.ledger();
            ledger
                .users
                .entry(region.clone())
                .or_default()
                .push(up.str("/user/id"));
            ledger
                .sessions
                .entry(region.clone())
                .or_default()
                .push(up.str("/session_id"));
        }
        let Some(second) = self
            .call(
                Op::SignIn,
                replica,
                "/v1/client/sign_in",
                None,
                None,
                credentials,
            )
            .await
            .filter(|a| a.status == 200)
        else {
            return;
        };
        self.ledger()
            .sessions
            .entry(region.clone())
            .or_default()
            .push(second.str("/session_id"));
        // A refresh the load never retries (a lost answer would make a
        // retry a reuse).
        self.call(
            Op::Refresh,
            replica,
            "/v1/client/token/refresh",
            None,
            None,
            json!({ "refresh_token": second.str("/refresh_token") }),
        )
        .await;
        if let Some(a) = self.verify(Op::Verify, replica, &first).await {
            if a.status != 200 && !(a.status == 503 && a.code.is_some()) {
                self.ledger()
                    .refused_live
                    .push(format!("{email}: {} {:?}", a.status, a.code));
            }
        }
        let token = second.str("/session_token");
        let out = self
            .call(
                Op::SignOut,
                replica,
                "/v1/client/sign_out",
                Some(&token),
                None,
                json!({}),
            )
            .await;
        if out.is_some_and(|a| a.status == 200) {
            self.ledger().revoked.push(Revoked {
                token: token.clone(),
                session_id: second.str("/session_id"),
                region: region.clone(),
            });
            // Revocation reaches every edge within a second (SESSIONS.md):
            // past that, an edge that still accepts the token is a failure.
            let acknowledged = Instant::now();
            let other = (replica + 1) % self.edges.len();
            for r in [replica, other] {
                loop {
                    let accepted = self
                        .verify(Op::VerifyRevoked, r, &token)
                        .await
                        .is_some_and(|a| a.status == 200);
                    if !accepted {
                        let mut ledger = self.ledger();
                        ledger.revocation_lag = ledger.revocation_lag.max(acknowledged.elapsed());
                        break;
                    }
                    if acknowledged.elapsed() > REVOCATION_REACH {
                        self.ledger().accepted_revoked.push(format!(
                            "{} on edge {r} {:?} after its sign-out",
                            second.str("/session_id"),
                            acknowledged.elapsed()
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let sent = self
            .call(
                Op::EmailCode,
                replica,
                "/v1/client/email_codes",
                None,
                None,
                json!({ "email": email }),
            )
            .await;
        if sent.is_some_and(|a| (200..300).contains(&a.status)) {
            self.ledger().mails.push(email);
        }
    }
}

/// Runs rounds until `stop`.
fn spawn_load(client: Client, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WORKERS)
        .map(|worker| {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    client.round(worker, n).await;
                }
            })
        })
        .collect()
}

/// Problems in the outcomes since `from`: 500s, unclean 503s, hangs, and
/// connection errors outside an edge's down window.
fn unclean(ledger: &Ledger, from: usize, down: &[Down]) -> Vec<String> {
    let mut problems = Vec::new();
    for o in &ledger.outcomes[from..] {
        if o.elapsed > HANG {
            problems.push(format!(
                "{:?} on edge {} hung for {:?}",
                o.op, o.replica, o.elapsed
            ));
        }
        match &o.answer {
            Ok((status, code, retry_after)) => {
                let clean_503 = *status == 503
                    && code.as_deref().is_some_and(|c| CLEAN_503.contains(&c))
                    && *retry_after;
                if *status >= 500 && !clean_503 {
                    problems.push(format!(
                        "{:?} on edge {} answered {status} {code:?} (Retry-After: {retry_after})",
                        o.op, o.replica
                    ));
                }
                if (400..500).contains(status) && o.op != Op::VerifyRevoked {
                    // The load never sends anything a healthy platform refuses.
                    problems.push(format!(
                        "{:?} on edge {} answered {status} {code:?}",
                        o.op, o.replica
                    ));
                }
            }
            Err(e) => {
                let end = o.started + o.elapsed;
                let expected = down.iter().any(|d| {
                    d.replica == o.replica
                        && o.started <= d.until + Duration::from_secs(1)
                        && end >= d.from
                });
                if !expected {
                    problems.push(format!(
                        "{:?} on edge {} got no answer: {e}",
                        o.op, o.replica
                    ));
                }
            }
        }
    }
    problems
}

/// A user of `region` made before the load, for recovery probes.
struct ProbeUser {
    email: String,
}

/// Until a sign-in of each probe user and a verification of its session
/// succeed on every edge; returns how long that took.
async fn recovered(client: &Client, users: &[ProbeUser]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut ok = true;
        'probe: for user in users {
            for replica in 0..client.edges.len() {
                let signed = client
                    .http
                    .post(format!(
                        "http://{}/v1/client/sign_in",
                        client.edges[replica]
                    ))
                    .header("idm-api-key", &client.tenant.restricted_key)
                    .header("origin", ORIGIN)
                    .timeout(HANG)
                    .json(&json!({ "email": user.email, "password": PASSWORD }))
                    .send()
                    .await;
                let token = match signed {
                    Ok(r) if r.status() == 200 => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["session_token"].as_str().map(str::to_owned)),
                    _ => None,
                };
                let Some(token) = token else {
                    ok = false;
                    break 'probe;
                };
                let verified = client
                    .http
                    .post(format!(
                        "http://{}/v1/sessions/verify",
                        client.edges[replica]
                    ))
                    .bearer_auth(&client.tenant.secret_key)
                    .timeout(HANG)
                    .json(&json!({ "session_token": token }))
                    .send()
                    .await;
                if !verified.is_ok_and(|r| r.status() == 200) {
                    ok = false;
                    break 'probe;
                }
            }
        }
        if ok {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < RECOVERY_BOUND,
            "not recovered within {RECOVERY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every acknowledged write is in its store, every acknowledged revocation
/// is refused by every edge, and the event stream holds an event for each.
async fn acknowledged_writes_hold(platform: &Platform, client: &Client) -> anyhow::Result<()> {
    let (users, sessions, revoked) = {
        let ledger = client.ledger();
        (
            ledger.users.clone(),
            ledger.sessions.clone(),
            ledger
                .revoked
                .iter()
                .map(|r| (r.token.clone(), r.session_id.clone(), r.region.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let schema = client.tenant.issuer_id.clone();
    for (region, ids) in &users {
        let db = platform.region_db(Region::parse(region)?).await?;
        let found: i64 = db
            .query_one(
                &format!("SELECT count(*) FROM {schema}.users WHERE id = ANY($1)"),
                &[ids],
            )
            .await?
            .get(0);
        anyhow::ensure!(
            found == ids.len() as i64,
            "{region}: {found} of {} acknowledged users are stored",
            ids.len()
        );
    }
    for (region, ids) in &sessions {
        let db = platform.region_db(Region::parse(region)?).await?;
        let found: i64 = db
            .query_one(
                &format!("SELECT count(*) FROM {schema}.sessions WHERE id = ANY($1)"),
                &[ids],
            )
            .await?
            .get(0);
        anyhow::ensure!(
            found == ids.len() as i64,
            "{region}: {found} of {} acknowledged sessions are stored",
            ids.len()
        );
    }
    let mut by_region: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, id, region) in &revoked {
        by_region.entry(region).or_default().push(id.clone());
    }
    for (region, ids) in &by_region {
        let db = platform.region_db(Region::parse(region)?).await?;
        let found: i64 = db
            .query_one(
                &format!(
                    "SELECT count(*) FROM {schema}.sessions WHERE id = ANY($1) AND revoked_at IS NOT NULL"
                ),
                &[ids],
            )
            .await?
            .get(0);
        anyhow::ensure!(
            found == ids.len() as i64,
            "{region}: {found} of {} acknowledged revocations are stored",
            ids.len()
        );
    }
    for (token, id, _) in &revoked {
        for replica in 0..client.edges.len() {
            let a = client.verify(Op::VerifyRevoked, replica, token).await;
            anyhow::ensure!(
                a.as_ref().is_some_and(|a| a.status == 401),
                "revoked session {id} on edge {replica}: {:?}",
                a.map(|a| (a.status, a.code))
            );
        }
    }
    let session_count: usize = sessions.values().map(Vec::len).sum();
    let created = platform
        .count_events(&client.tenant.issuer_id, "session.created")
        .await?;
    anyhow::ensure!(
        created >= session_count as u64,
        "{created} session.created events for {session_count} acknowledged sessions"
    );
    let revoked_events = platform
        .count_events(&client.tenant.issuer_id, "session.revoked")
        .await?;
    anyhow::ensure!(
        revoked_events >= revoked.len() as u64,
        "{revoked_events} session.revoked events for {} acknowledged sign-outs",
        revoked.len()
    );
    Ok(())
}

/// One fault's record.
struct Measured {
    fault: &'static str,
    started: Instant,
    recovery: Duration,
}

/// Per fault, the requests started between its start and the next one's:
/// (requests, clean 503s, answered by no one, slowest).
fn tally(ledger: &Ledger, measured: &[Measured]) -> Vec<(usize, usize, usize, Duration)> {
    measured
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let end = measured.get(i + 1).map(|n| n.started);
            let window: Vec<&Outcome> = ledger
                .outcomes
                .iter()
                .filter(|o| o.started >= m.started && end.is_none_or(|e| o.started < e))
                .collect();
            (
                window.len(),
                window
                    .iter()
                    .filter(|o| matches!(o.answer, Ok((503, _, _))))
                    .count(),
                window.iter().filter(|o| o.answer.is_err()).count(),
                window.iter().map(|o| o.elapsed).max().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_platform_survives_one_fault_at_a_time() -> anyhow::Result<()> {
    let mut platform = Platform::start_with(Options {
        edge_replicas: 2,
        edge_trusted_proxies: idm_testkit::loopback_proxy(),
        own_servers: Some(OwnServers {
            separate_regions: vec![Region::Weur],
        }),
        ..Options::default()
    })
    .await?;
    let tenant = platform.create_account("Faults").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    // The load is one client address: lift the per-address limits out of its way.
    platform
        .set_waf_policy(
            &tenant,
            json!({
                "client": { "limit": 1_000_000, "window_seconds": 60 },
                "backend": { "limit": 1_000_000, "window_seconds": 60 },
                "recipient_limit": 1000,
            }),
        )
        .await?;
    let mut probes = Vec::new();
    for (country, region) in [("DE", "weur"), ("MX", "wnam")] {
        let email = format!("probe-{region}@example.com");
        let r = platform
            .sign_up(&tenant, ORIGIN, Some(country), &email, PASSWORD)
            .await?;
        anyhow::ensure!(r.str("/user/region") == region, "probe user: {}", r.json);
        probes.push((region, ProbeUser { email }));
    }
    let all_probes: Vec<ProbeUser> = probes
        .iter()
        .map(|(_, p)| ProbeUser {
            email: p.email.clone(),
        })
        .collect();
    let weur_probe = [ProbeUser {
        email: probes[0].1.email.clone(),
    }];
    // An address that failed five email codes before the faults: it must
    // still be backing off after Redis restarts empty.
    let guessed = "guessed@example.com";
    let client = Client {
        http: reqwest::Client::builder()
            .user_agent("idm-faults")
            .build()?,
        edges: platform.edges.clone(),
        tenant: tenant.clone(),
        ledger: Arc::new(Mutex::new(Ledger::default())),
    };
    let backing_off = fail_email_codes(&platform, &tenant, guessed).await?;
    anyhow::ensure!(
        backing_off == Some("too_many_attempts".to_owned()),
        "{backing_off:?}"
    );

    let stop = CancellationToken::new();
    let load = spawn_load(client.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut down: Vec<Down> = Vec::new();
    let mut measured: Vec<Measured> = Vec::new();
    let faults: [&'static str; 8] = [
        "regional store killed (weur)",
        "NATS restarted",
        "Redis restarted empty",
        "global PostgreSQL restarted",
        "regional PostgreSQL restarted (weur)",
        "edge killed mid-request",
        "auth killed mid-request",
        "session killed mid-request",
    ];
    for fault in faults {
        let from = client.ledger().outcomes.len();
        let fault_started = Instant::now();
        let back = match fault {
            "regional store killed (weur)" => {
                platform.kill_service("user-store-weur").await?;
                tokio::time::sleep(OUTAGE).await;
                platform.start_service("user-store-weur").await?;
                Instant::now()
            }
            "NATS restarted" => {
                platform.nats.shut_down().await;
                let (readyz, answer, took) = while_the_bus_is_down(&platform, &client).await?;
                anyhow::ensure!(readyz != 200, "edge /readyz answered {readyz} without NATS");
                // Fail fast: not a wait for the request timeout.
                anyhow::ensure!(
                    answer == (503, Some("upstream_unavailable".to_owned()), true)
                        && took < Duration::from_secs(5),
                    "a sign-in without NATS: {answer:?} after {took:?}"
                );
                println!("without NATS: /readyz {readyz}, a sign-in {answer:?} in {took:?}");
                tokio::time::sleep(OUTAGE).await;
                platform.nats.start_again().await?;
                Instant::now()
            }
            "Redis restarted empty" => {
                let servers = platform.servers.as_mut().ok_or_else(no_servers)?;
                servers.redis.kill().await?;
                tokio::time::sleep(OUTAGE).await;
                servers.redis.start_again().await?;
                Instant::now()
            }
            "global PostgreSQL restarted" => {
                let servers = platform.servers.as_mut().ok_or_else(no_servers)?;
                servers.global_pg.kill().await?;
                tokio::time::sleep(OUTAGE).await;
                servers.global_pg.start_again().await?;
                Instant::now()
            }
            "regional PostgreSQL restarted (weur)" => {
                let servers = platform.servers.as_mut().ok_or_else(no_servers)?;
                let pg = servers.pg_of(Region::Weur);
                pg.kill().await?;
                tokio::time::sleep(OUTAGE).await;
                pg.start_again().await?;
                Instant::now()
            }
            "edge killed mid-request" => {
                let started = Instant::now();
                let burst = mid_request_burst(&client, 0);
                tokio::time::sleep(Duration::from_millis(50)).await;
                platform.kill_service("edge-guard-0").await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                platform.start_service("edge-guard-0").await?;
                let _ = futures::future::join_all(burst).await;
                down.push(Down {
                    replica: 0,
                    from: started,
                    until: Instant::now(),
                });
                Instant::now()
            }
            _ => {
                // auth or session: sign-ins in flight through it, then gone.
                let service = fault.split(' ').next().unwrap_or("auth");
                let burst = mid_request_burst(&client, 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                platform.kill_service(service).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                platform.start_service(service).await?;
                let _ = futures::future::join_all(burst).await;
                Instant::now()
            }
        };
        let recovery = match fault {
            "regional store killed (weur)" | "regional PostgreSQL restarted (weur)" => {
                recovered(&client, &weur_probe).await?
            }
            _ => recovered(&client, &all_probes).await?,
        };
        let recovery = if fault == "Redis restarted empty" {
            // Security state was rebuilt, not reset: once auth reaches the
            // new Redis, the address is still backing off.
            // (A guess is charged only while a code exists: send one first.)
            loop {
                let r = email_code_call(
                    &platform,
                    &tenant,
                    "/v1/client/email_codes",
                    json!({ "email": guessed }),
                )
                .await?;
                if (200..300).contains(&r.status) {
                    break;
                }
                anyhow::ensure!(
                    r.status == 503 && back.elapsed() < RECOVERY_BOUND,
                    "sending a code after Redis restarted: {} {}",
                    r.status,
                    r.json
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            platform.smtp.wait_for(guessed, 1, RECOVERY_BOUND).await?;
            let answer = verify_email_code(&platform, &tenant, guessed, "000000").await?;
            anyhow::ensure!(
                answer.as_deref() == Some("too_many_attempts"),
                "after Redis restarted empty, the failure budget answered {answer:?}"
            );
            recovery.max(back.elapsed())
        } else {
            recovery
        };
        // Let in-flight requests of the fault finish before judging them.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (problems, accepted, refused) = {
            let ledger = client.ledger();
            (
                unclean(&ledger, from, &down),
                ledger.accepted_revoked.clone(),
                ledger.refused_live.clone(),
            )
        };
        anyhow::ensure!(problems.is_empty(), "{fault}: {problems:#?}");
        anyhow::ensure!(
            accepted.is_empty(),
            "{fault}: revoked sessions accepted: {accepted:#?}"
        );
        anyhow::ensure!(
            refused.is_empty(),
            "{fault}: live sessions refused: {refused:#?}"
        );
        acknowledged_writes_hold(&platform, &client)
            .await
            .map_err(|e| e.context(fault))?;
        measured.push(Measured {
            fault,
            started: fault_started,
            recovery,
        });
    }
    stop.cancel();
    for task in load {
        task.await?;
    }
    let everything = unclean(&client.ledger(), 0, &down);
    anyhow::ensure!(everything.is_empty(), "{everything:#?}");
    // Every acknowledged email code was delivered (the MAIL stream and its
    // consumer survived every fault).
    let mails = client.ledger().mails.clone();
    for address in &mails {
        platform
            .smtp
            .wait_for(address, 0, RECOVERY_BOUND)
            .await
            .map_err(|e| e.context("an acknowledged email code was never delivered"))?;
    }
    acknowledged_writes_hold(&platform, &client).await?;
    {
        let ledger = client.ledger();
        println!(
            "\nfaults: {} users, {} sessions, {} sign-outs, {} email codes acknowledged; \
             a sign-out reached both edges within {:?} at most",
            ledger.users.values().map(Vec::len).sum::<usize>(),
            ledger.sessions.values().map(Vec::len).sum::<usize>(),
            ledger.revoked.len(),
            mails.len(),
            ledger.revocation_lag
        );
    }
    println!(
        "| fault | requests during it | clean 503s | dropped connections | slowest answer | recovered after |"
    );
    println!("|---|---|---|---|---|---|");
    let tallies = tally(&client.ledger(), &measured);
    for (m, (requests, clean, dropped, slowest)) in measured.iter().zip(tallies) {
        println!(
            "| {} | {} | {} | {} | {} ms | {} ms |",
            m.fault,
            requests,
            clean,
            dropped,
            slowest.as_millis(),
            m.recovery.as_millis()
        );
    }
    platform.stop().await
}

/// Once the edge has noticed NATS is gone: its `/readyz` status, and a
/// sign-in's answer (status, code, `Retry-After`) and how long it took.
async fn while_the_bus_is_down(
    platform: &Platform,
    client: &Client,
) -> anyhow::Result<(u16, (u16, Option<String>, bool), Duration)> {
    let started = Instant::now();
    let readyz = loop {
        let status = client
            .http
            .get(format!("http://{}/readyz", platform.edge_ops[0]))
            .send()
            .await?
            .status()
            .as_u16();
        if status != 200 || started.elapsed() > Duration::from_secs(5) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let asked = Instant::now();
    let r = platform
        .client_call(
            0,
            &client.tenant,
            Method::POST,
            "/v1/client/sign_in",
            None,
            Some(json!({ "email": "probe-weur@example.com", "password": PASSWORD })),
        )
        .await?;
    let took = asked.elapsed();
    Ok((
        readyz,
        (
            r.status,
            r.code().map(str::to_owned),
            r.headers.contains_key("retry-after"),
        ),
        took,
    ))
}

fn no_servers() -> anyhow::Error {
    anyhow::anyhow!("the platform has no private servers")
}

/// A few sign-ins on `replica`, started just before a kill.
fn mid_request_burst(client: &Client, replica: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call(
                        Op::SignIn,
                        replica,
                        "/v1/client/sign_in",
                        None,
                        None,
                        json!({ "email": format!("probe-{}@example.com", if i % 2 == 0 { "weur" } else { "wnam" }), "password": PASSWORD }),
                    )
                    .await;
            })
        })
        .collect()
}

async fn email_code_call(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    body: Value,
) -> anyhow::Result<idm_testkit::Response> {
    let response = platform
        .client_call(0, tenant, Method::POST, path, None, Some(body))
        .await?;
    Ok(response)
}

async fn verify_email_code(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    code: &str,
) -> anyhow::Result<Option<String>> {
    let r = email_code_call(
        platform,
        tenant,
        "/v1/client/email_codes/verify",
        json!({ "email": email, "code": code }),
    )
    .await?;
    Ok(r.code().map(str::to_owned))
}

/// Sends `email` a code and guesses wrong until the budget backs off;
/// returns the answer to the attempt after five failures.
async fn fail_email_codes(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
) -> anyhow::Result<Option<String>> {
    let r = email_code_call(
        platform,
        tenant,
        "/v1/client/email_codes",
        json!({ "email": email }),
    )
    .await?;
    anyhow::ensure!((200..300).contains(&r.status), "{}", r.json);
    let message = platform
        .smtp
        .wait_for(email, 0, Duration::from_secs(30))
        .await?;
    let code = idm_testkit::smtp::six_digit_code(&message).unwrap_or_default();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = verify_email_code(platform, tenant, email, wrong).await?;
        anyhow::ensure!(r.as_deref() == Some("code_invalid"), "{r:?}");
    }
    verify_email_code(platform, tenant, email, wrong).await
}
