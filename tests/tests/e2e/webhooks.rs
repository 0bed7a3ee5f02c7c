//! Webhooks (docs/WEBHOOKS.md): endpoints per issuer, Standard Webhooks
//! signatures checked with the independent `standardwebhooks` crate,
//! retries for each failure (5xx, time-out, connection refused, 410), dead
//! letters and replay, a hanging endpoint next to a healthy one, the SSRF
//! guard, durability across a restart of the webhook service. The
//! receivers are axum servers on 127.0.0.1 (the test kit's delivery
//! settings allowlist loopback and retry within a second).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use idm_testkit::{Platform, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
pub enum Act {
    Ok,
    Status(u16),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Per path: what the next requests get, in order (then `Ok`).
    script: HashMap<String, VecDeque<Act>>,
    /// Per path: what every request gets once the script is used up.
    always: HashMap<String, Act>,
}

/// A local HTTP receiver recording every request.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let act = {
        let Ok(mut inner) = inner.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        inner.received.push(Received {
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        let scripted = inner.script.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| inner.always.get(&path).copied())
            .unwrap_or(Act::Ok)
    };
    match act {
        Act::Ok => StatusCode::NO_CONTENT,
        Act::Status(code) => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Act::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, path: &str, acts: &[Act]) {
        if let Ok(mut inner) = self.inner.lock() {
            inner
                .script
                .insert(path.to_owned(), acts.iter().copied().collect());
        }
    }

    pub fn always(&self, path: &str, act: Act) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.always.insert(path.to_owned(), act);
        }
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.inner
            .lock()
            .map(|i| {
                i.received
                    .iter()
                    .filter(|r| r.path == path)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `path` got `n` requests (or `within` passed).
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received(path);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Creates an endpoint; returns `(id, secret)`.
pub async fn endpoint(
    platform: &Platform,
    tenant: &Tenant,
    url: &str,
    events: &[&str],
) -> anyhow::Result<(String, String)> {
    let r = platform
        .backend(
            Method::POST,
            "/v1/webhook_endpoints",
            &tenant.secret_key,
            Some(json!({ "url": url, "events": events })),
        )
        .await?;
    anyhow::ensure!(
        r.status == 201,
        "endpoint not created: {} {}",
        r.status,
        r.json
    );
    Ok((r.str("/id"), r.str("/secret")))
}

/// Makes an `api_key.created` event for the tenant (a cheap event).
async fn key_event(platform: &Platform, tenant: &Tenant) -> anyhow::Result<String> {
    let r = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &tenant.secret_key,
            Some(json!({"kind": "secret", "name": "hook trigger", "scopes": ["users:read"]})),
        )
        .await?;
    anyhow::ensure!(r.status == 201, "{}", r.json);
    Ok(r.str("/id"))
}

/// Polls `path` until `done` holds for its JSON, or 10 s pass.
async fn eventually(
    platform: &Platform,
    key: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = platform.backend(Method::GET, path, key, None).await?;
        if done(&r.json) {
            return Ok(r.json);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{path} never got there: {}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verify(secret: &str, delivery: &Received) -> Result<(), String> {
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
    webhook
        .verify(&delivery.body, &delivery.headers)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn deliveries_are_signed_per_standard_webhooks_and_follow_the_filters() -> anyhow::Result<()>
{
    let platform = Platform::shared().await?;
    let a = platform.create_account("Hooks").await?;
    let receiver = Receiver::start().await?;
    let (_, users_secret) =
        endpoint(platform, &a, &receiver.url("/users"), &["user.created"]).await?;
    let (all_id, all_secret) = endpoint(platform, &a, &receiver.url("/all"), &[]).await?;
    assert!(users_secret.starts_with("whsec_") && all_secret.starts_with("whsec_"));

    let user = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": idm_testkit::unique_email("hooked"), "region": "wnam"})),
        )
        .await?;
    assert_eq!(user.status, 201, "{}", user.json);
    let key_id = key_event(platform, &a).await?;

    let got = receiver
        .wait_for("/users", 1, Duration::from_secs(10))
        .await;
    assert_eq!(
        got.len(),
        1,
        "user.created reached the filtered endpoint once"
    );
    let delivery = &got[0];
    // The independent implementation accepts the signature; another
    // endpoint's secret does not.
    verify(&users_secret, delivery).map_err(anyhow::Error::msg)?;
    assert!(verify(&all_secret, delivery).is_err());
    let body = delivery.json();
    assert_eq!(body["type"], "user.created");
    assert_eq!(body["issuer_id"], a.issuer_id.as_str());
    assert_eq!(body["data"]["user_id"], user.json["id"]);
    assert_eq!(body["data"]["region"], "wnam");
    let event_id = body["id"].as_str().unwrap_or_default().to_owned();
    assert!(event_id.starts_with("evt_"), "{body}");
    assert_eq!(
        delivery
            .headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok()),
        Some(event_id.as_str())
    );
    assert!(body["occurred_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // The envelope only: no audit fields, no personal data.
    let fields: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(fields, ["data", "id", "issuer_id", "occurred_at", "type"]);
    assert!(
        !String::from_utf8_lossy(&delivery.body).contains('@'),
        "no email in a payload"
    );

    // The unfiltered endpoint gets every event from its own creation on (in
    // no promised order), each signed with its secret; the other endpoint's
    // creation happened before it existed and is not delivered to it.
    let all = receiver.wait_for("/all", 3, Duration::from_secs(10)).await;
    let mut types: Vec<String> = all
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "api_key.created",
            "user.created",
            "webhook_endpoint.created"
        ],
        "{types:?}"
    );
    let own_creation = all
        .iter()
        .find(|r| r.json()["type"] == "webhook_endpoint.created")
        .map(|r| r.json()["data"]["endpoint_id"].clone());
    assert_eq!(own_creation, Some(json!(all_id)));
    for r in &all {
        verify(&all_secret, r).map_err(anyhow::Error::msg)?;
    }
    let key_delivery = all.iter().find(|r| r.json()["type"] == "api_key.created");
    assert_eq!(
        key_delivery.map(|r| r.json()["data"]["key_id"].clone()),
        Some(json!(key_id))
    );
    // The filtered endpoint never heard of the key.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("/users").len(), 1);

    // The secret is stored sealed: its text is nowhere in the table.
    let db = platform.global().await?;
    let rows = db
        .query(
            "SELECT sealed_secret FROM webhook.endpoints WHERE issuer_id = $1",
            &[&a.issuer_id],
        )
        .await?;
    assert_eq!(rows.len(), 2);
    for row in rows {
        let sealed: Vec<u8> = row.get(0);
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("whsec_") && !text.contains(&users_secret[6..]));
    }
    Ok(())
}

#[tokio::test]
async fn rotating_the_secret_signs_with_both_during_the_overlap() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Rotate").await?;
    let receiver = Receiver::start().await?;
    let (id, old) = endpoint(platform, &a, &receiver.url("/r"), &["api_key.created"]).await?;
    let rotated = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            &a.secret_key,
            Some(json!({"overlap_seconds": 3600})),
        )
        .await?;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let new = rotated.str("/secret");
    assert!(new.starts_with("whsec_") && new != old);
    assert!(rotated.json["previous_secret_expires_at"].is_string());
    key_event(platform, &a).await?;
    let got = receiver.wait_for("/r", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let signatures = got[0]
        .headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify(&new, &got[0]).map_err(anyhow::Error::msg)?;
    verify(&old, &got[0]).map_err(anyhow::Error::msg)?;

    // Without an overlap the old secret stops at once.
    let rotated = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            &a.secret_key,
            Some(json!({"overlap_seconds": 0})),
        )
        .await?;
    let newest = rotated.str("/secret");
    key_event(platform, &a).await?;
    let got = receiver.wait_for("/r", 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    verify(&newest, &got[1]).map_err(anyhow::Error::msg)?;
    assert!(verify(&new, &got[1]).is_err());
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            &a.secret_key,
            Some(json!({"overlap_seconds": 99_999_999})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, Some("validation_failed")));
    Ok(())
}

#[tokio::test]
async fn each_failure_is_retried_then_dead_lettered_and_replayable() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Retries").await?;
    let receiver = Receiver::start().await?;
    // 5xx twice, then success.
    receiver.script("/flaky", &[Act::Status(500), Act::Status(503)]);
    // A time-out (the test kit's attempts end after 2 s), then success.
    receiver.script("/slow", &[Act::Hang]);
    // Connection refused: a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let (flaky, _) = endpoint(platform, &a, &receiver.url("/flaky"), &["api_key.created"]).await?;
    let (slow, _) = endpoint(platform, &a, &receiver.url("/slow"), &["api_key.created"]).await?;
    let (refused, _) = endpoint(
        platform,
        &a,
        &format!("http://{closed}/in"),
        &["api_key.created"],
    )
    .await?;
    key_event(platform, &a).await?;

    let flaky_got = receiver
        .wait_for("/flaky", 3, Duration::from_secs(10))
        .await;
    assert_eq!(flaky_got.len(), 3);
    // The same message each time: same webhook-id.
    let ids: Vec<_> = flaky_got
        .iter()
        .map(|r| r.headers.get("webhook-id").cloned())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // Retries waited (200 ms and 400 ms, ±20 %).
    assert!(flaky_got[1].at - flaky_got[0].at >= Duration::from_millis(150));
    assert!(flaky_got[2].at - flaky_got[1].at >= Duration::from_millis(300));
    let attempts = eventually(
        platform,
        &a.secret_key,
        &format!("/v1/webhook_endpoints/{flaky}/attempts"),
        |j| j["data"].as_array().is_some_and(|d| d.len() == 3),
    )
    .await?;
    let data = attempts["data"].as_array().cloned().unwrap_or_default();
    // Newest first: 204, 503, 500.
    let codes: Vec<Value> = data.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(204), json!(503), json!(500)]);
    assert_eq!(data[0]["outcome"], "succeeded");
    assert!(data[0]["next_retry_at"].is_null());
    assert_eq!(data[2]["outcome"], "failed");
    assert!(data[2]["next_retry_at"].is_string() && data[2]["latency_ms"].is_u64());
    assert_eq!(data[2]["attempt"], 1);

    // The hanging receiver: the first attempt times out, the retry lands.
    let slow_got = receiver.wait_for("/slow", 2, Duration::from_secs(10)).await;
    assert_eq!(slow_got.len(), 2);
    let attempts = eventually(
        platform,
        &a.secret_key,
        &format!("/v1/webhook_endpoints/{slow}/attempts"),
        |j| j["data"].as_array().is_some_and(|d| d.len() == 2),
    )
    .await?;
    assert!(attempts["data"][1]["status_code"].is_null());
    assert!(
        attempts["data"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no complete answer")),
        "{attempts}"
    );
    assert_eq!(attempts["data"][0]["outcome"], "succeeded");

    // Refused every time: four attempts, then a dead letter.
    let failed = eventually(
        platform,
        &a.secret_key,
        "/v1/webhook_messages?status=failed",
        |j| j["data"].as_array().is_some_and(|d| !d.is_empty()),
    )
    .await?;
    let dead = &failed["data"][0];
    assert_eq!(dead["endpoint_id"], refused.as_str());
    assert_eq!(dead["attempts"], 4);
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection")),
        "{dead}"
    );
    let attempts = platform
        .backend(
            Method::GET,
            &format!("/v1/webhook_endpoints/{refused}/attempts"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(attempts.json["data"].as_array().map(Vec::len), Some(4));
    assert!(attempts.json["data"][0]["next_retry_at"].is_null());

    // The receiver comes up where the refused endpoint points: a retry of
    // the dead letter is delivered.
    let late = Receiver::start_on(closed).await?;
    let message_id = dead["id"].as_str().unwrap_or_default().to_owned();
    let retried = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_messages/{message_id}/retry"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(retried.status, 202, "{}", retried.json);
    assert_eq!(
        late.wait_for("/in", 1, Duration::from_secs(10)).await.len(),
        1
    );
    eventually(
        platform,
        &a.secret_key,
        "/v1/webhook_messages?status=delivered&limit=100",
        |j| {
            j["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|m| m["id"] == message_id.as_str()))
        },
    )
    .await?;

    // Replay: every event since a time, again (the same webhook-id).
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let since = since.format(&time::format_description::well_known::Rfc3339)?;
    let replayed = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_endpoints/{flaky}/replay"),
            &a.secret_key,
            Some(json!({ "since": since })),
        )
        .await?;
    assert_eq!(replayed.status, 202, "{}", replayed.json);
    assert_eq!(replayed.json["queued"], 1);
    let again = receiver
        .wait_for("/flaky", 4, Duration::from_secs(10))
        .await;
    assert_eq!(again.len(), 4);
    assert_eq!(
        again[3].headers.get("webhook-id"),
        flaky_got[0].headers.get("webhook-id")
    );

    // Bad inputs.
    let r = platform
        .backend(
            Method::GET,
            "/v1/webhook_messages?status=lost",
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, Some("validation_failed")));
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/webhook_endpoints/{flaky}/replay"),
            &a.secret_key,
            Some(json!({ "since": "yesterday" })),
        )
        .await?;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));
    Ok(())
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_tells_the_tenant() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Gone").await?;
    let receiver = Receiver::start().await?;
    receiver.always("/gone", Act::Status(410));
    let (gone, _) = endpoint(platform, &a, &receiver.url("/gone"), &["api_key.created"]).await?;
    let (_, watch_secret) = endpoint(
        platform,
        &a,
        &receiver.url("/watch"),
        &["webhook_endpoint.disabled"],
    )
    .await?;
    key_event(platform, &a).await?;
    let endpoint_json = eventually(
        platform,
        &a.secret_key,
        &format!("/v1/webhook_endpoints/{gone}"),
        |j| j["enabled"] == false,
    )
    .await?;
    assert_eq!(endpoint_json["disabled_reason"], "gone");
    // One attempt only: 410 is not retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("/gone").len(), 1);
    // The tenant hears of it on its other endpoint.
    let told = receiver
        .wait_for("/watch", 1, Duration::from_secs(10))
        .await;
    assert_eq!(told.len(), 1);
    verify(&watch_secret, &told[0]).map_err(anyhow::Error::msg)?;
    assert_eq!(told[0].json()["type"], "webhook_endpoint.disabled");
    assert_eq!(
        told[0].json()["data"],
        json!({"endpoint_id": gone, "reason": "gone"})
    );
    // Disabled: new events are not queued for it; enabling resumes.
    key_event(platform, &a).await?;
    let r = platform
        .backend(
            Method::PATCH,
            &format!("/v1/webhook_endpoints/{gone}"),
            &a.secret_key,
            Some(json!({"enabled": true})),
        )
        .await?;
    assert_eq!(
        (r.status, r.json["enabled"].clone()),
        (200, json!(true)),
        "{}",
        r.json
    );
    assert!(r.json["disabled_reason"].is_null());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("/gone").len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_hanging_endpoint_never_delays_another() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Hang").await?;
    let receiver = Receiver::start().await?;
    receiver.always("/hang", Act::Hang);
    endpoint(platform, &a, &receiver.url("/hang"), &["api_key.created"]).await?;
    // A backlog of 300 events for the hanging endpoint, due before anything
    // the healthy endpoint gets (more than one claim looks at).
    let bus = platform.bus(idm_testkit::Identity::Account).await?;
    let events = idm_bus::Events::ensure(&bus).await?;
    let issuer = idm_core::IssuerId::parse(&a.issuer_id)?;
    for _ in 0..300 {
        events
            .publish(
                &issuer,
                idm_core::proto::event::DomainEvent::ApiKeyCreated(
                    idm_core::proto::event::ApiKeyChanged {
                        key_id: idm_core::ApiKeyId::generate(),
                        kind: idm_core::KeyKind::Secret,
                    },
                ),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let db = platform.global().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook.messages WHERE issuer_id = $1",
                &[&a.issuer_id],
            )
            .await?
            .get(0);
        if pending >= 300 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the backlog was not queued: {pending}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    endpoint(platform, &a, &receiver.url("/fast"), &["api_key.created"]).await?;
    let started = Instant::now();
    for _ in 0..10 {
        key_event(platform, &a).await?;
    }
    let fast = receiver
        .wait_for("/fast", 10, Duration::from_secs(10))
        .await;
    assert_eq!(fast.len(), 10);
    let last = fast.iter().map(|r| r.at).max().unwrap_or(started);
    // While the hanging endpoint holds its own slots (4, each for the
    // 2 s time-out) with 300 more waiting, the healthy one got every event.
    let hung = receiver.received("/hang").len();
    assert!(
        hung <= 8,
        "the hanging endpoint holds at most its slots: {hung}"
    );
    assert!(
        last.duration_since(started) < Duration::from_secs(8),
        "healthy deliveries took {:?}",
        last.duration_since(started)
    );
    // Its backlog stays queued (pending, retried later), never dropped.
    let r = platform
        .backend(
            Method::GET,
            "/v1/webhook_messages?status=pending&limit=100",
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.json["has_more"], true);
    Ok(())
}

#[tokio::test]
async fn endpoints_are_the_issuers_own_and_inputs_are_checked() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Owner").await?;
    let b = platform.create_account("Stranger").await?;
    let receiver = Receiver::start().await?;
    let (id, secret) = endpoint(
        platform,
        &a,
        &receiver.url("/x"),
        &["user.created", "session.revoked"],
    )
    .await?;
    let got = platform
        .backend(
            Method::GET,
            &format!("/v1/webhook_endpoints/{id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json["events"],
        json!(["session.revoked", "user.created"])
    );
    assert!(got.json.get("secret").is_none() && !got.json.to_string().contains(&secret));
    let listed = platform
        .backend(Method::GET, "/v1/webhook_endpoints", &a.secret_key, None)
        .await?;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed.json["has_more"], false);
    assert!(!listed.json.to_string().contains(&secret));
    let patched = platform
        .backend(
            Method::PATCH,
            &format!("/v1/webhook_endpoints/{id}"),
            &a.secret_key,
            Some(json!({"events": [], "description": "all of it"})),
        )
        .await?;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!(patched.json["events"], json!([]));

    // Another issuer: a plain 404 for every route, and an empty list.
    let message_id = "msg_0192c0de0000700080000000000000aa";
    for (method, path, body) in [
        (Method::GET, format!("/v1/webhook_endpoints/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/webhook_endpoints/{id}"),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, format!("/v1/webhook_endpoints/{id}"), None),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/v1/webhook_endpoints/{id}/attempts"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{id}/replay"),
            Some(json!({"since": "2026-01-01T00:00:00Z"})),
        ),
        (
            Method::POST,
            format!("/v1/webhook_messages/{message_id}/retry"),
            None,
        ),
    ] {
        let r = platform
            .backend(method.clone(), &path, &b.secret_key, body)
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (404, Some("not_found")),
            "{method} {path}: {}",
            r.json
        );
    }
    let r = platform
        .backend(Method::GET, "/v1/webhook_endpoints", &b.secret_key, None)
        .await?;
    assert_eq!(r.json["data"], json!([]));
    let r = platform
        .backend(Method::GET, "/v1/webhook_messages", &b.secret_key, None)
        .await?;
    assert_eq!(r.json["data"], json!([]));

    // A restricted key, and a secret key without the webhooks scope, are refused.
    let limited = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "no hooks", "scopes": ["users:read"]})),
        )
        .await?
        .str("/key");
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "hooks reader", "scopes": ["webhooks:read"]})),
        )
        .await?
        .str("/key");
    for (method, path) in [
        (Method::POST, "/v1/webhook_endpoints".to_owned()),
        (Method::GET, "/v1/webhook_endpoints".to_owned()),
        (Method::GET, format!("/v1/webhook_endpoints/{id}")),
        (Method::PATCH, format!("/v1/webhook_endpoints/{id}")),
        (Method::DELETE, format!("/v1/webhook_endpoints/{id}")),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{id}/rotate_secret"),
        ),
        (Method::GET, format!("/v1/webhook_endpoints/{id}/attempts")),
        (Method::POST, format!("/v1/webhook_endpoints/{id}/replay")),
        (Method::GET, "/v1/webhook_messages".to_owned()),
        (
            Method::POST,
            format!("/v1/webhook_messages/{message_id}/retry"),
        ),
    ] {
        for key in [&a.restricted_key, &limited] {
            let r = platform
                .backend(method.clone(), &path, key, Some(json!({})))
                .await?;
            assert_eq!(
                (r.status, r.code()),
                (403, Some("insufficient_scope")),
                "{method} {path}"
            );
        }
        let writes = method != Method::GET;
        let r = platform
            .backend(method.clone(), &path, &reader, Some(json!({})))
            .await?;
        assert_eq!(
            r.code() == Some("insufficient_scope"),
            writes,
            "{method} {path} with webhooks:read"
        );
    }

    // Bad inputs, with stable codes.
    for (body, code) in [
        (
            json!({"url": receiver.url("/x"), "events": ["user.nope"]}),
            "validation_failed",
        ),
        (
            json!({"url": receiver.url("/x"), "events": ["user.*"]}),
            "validation_failed",
        ),
        (json!({"url": "not a url"}), "validation_failed"),
        (
            json!({"url": "ftp://hooks.example.com/"}),
            "validation_failed",
        ),
        (
            json!({"url": "https://user:pw@hooks.example.com/"}),
            "validation_failed",
        ),
        (
            json!({"url": "https://169.254.169.254/latest/meta-data"}),
            "ssrf_refused",
        ),
        (json!({"url": "https://10.0.0.7/hook"}), "ssrf_refused"),
        (
            json!({"url": "https://[::ffff:169.254.169.254]/"}),
            "ssrf_refused",
        ),
        (json!({"url": "https://[fd00:ec2::254]/"}), "ssrf_refused"),
        (json!({"url": "https://0xa9fea9fe/"}), "ssrf_refused"),
        (json!({"url": "https://192.168.1.1:8443/"}), "ssrf_refused"),
    ] {
        let r = platform
            .backend(
                Method::POST,
                "/v1/webhook_endpoints",
                &a.secret_key,
                Some(body.clone()),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some(code)),
            "{body}: {}",
            r.json
        );
    }
    let r = platform
        .backend(
            Method::PATCH,
            &format!("/v1/webhook_endpoints/{id}"),
            &a.secret_key,
            Some(json!({"url": "http://127.0.0.2:9/"})),
        )
        .await?;
    // 127.0.0.0/8 is the test kit's allowlist; IPv6 loopback and
    // link-local are not.
    assert_eq!(r.status, 200, "{}", r.json);
    for url in ["https://[::1]:9/", "https://[fe80::1]/"] {
        let r = platform
            .backend(
                Method::PATCH,
                &format!("/v1/webhook_endpoints/{id}"),
                &a.secret_key,
                Some(json!({ "url": url })),
            )
            .await?;
        assert_eq!((r.status, r.code()), (422, Some("ssrf_refused")), "{url}");
    }
    let r = platform
        .backend(
            Method::GET,
            "/v1/webhook_endpoints?limit=0",
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, Some("validation_failed")));
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{id}/replay"),
            Some(json!({"since": "2999-01-01T00:00:00Z"})),
        ),
        (
            Method::GET,
            "/v1/webhook_messages?endpoint_id=nope".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/v1/webhook_messages?limit=500".to_owned(),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            Some(json!({"overlap_seconds": -1})),
        ),
        (
            Method::PATCH,
            format!("/v1/webhook_endpoints/{id}"),
            Some(json!({"description": "x".repeat(300)})),
        ),
    ] {
        let r = platform
            .backend(method.clone(), &path, &a.secret_key, body)
            .await?;
        assert!(
            matches!(r.code(), Some("validation_failed" | "invalid_request")),
            "{method} {path}: {} {}",
            r.status,
            r.json
        );
    }
    // Another issuer's endpoint id as a filter finds nothing.
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/webhook_messages?endpoint_id={id}"),
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.json["data"].clone()), (200, json!([])));
    let r = platform
        .backend(
            Method::GET,
            "/v1/webhook_endpoints/whe_nope",
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));

    // Deleted: gone for good.
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/webhook_endpoints/{id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 200);
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/webhook_endpoints/{id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("not_found"));
    Ok(())
}

#[tokio::test]
async fn deliveries_survive_restarts_of_the_service_nats_and_a_master_key_rotation(
) -> anyhow::Result<()> {
    // Own platform: it stops the webhook service and NATS, and disables
    // endpoints after 1 s of failure.
    let mut platform = Platform::start_with(idm_testkit::Options {
        webhook_delivery: idm_webhook::Delivery {
            schedule: [0, 1500, 300, 300, 300, 300, 300, 300, 300, 300]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            disable_after: Duration::from_secs(1),
            retention: Duration::from_secs(3),
            ..idm_testkit::test_webhook_delivery()
        },
        ..idm_testkit::Options::default()
    })
    .await?;
    let a = platform.create_account("Durable").await?;
    let receiver = Receiver::start().await?;
    receiver.script("/later", &[Act::Status(500)]);
    let (_, secret) =
        endpoint(&platform, &a, &receiver.url("/later"), &["api_key.created"]).await?;
    key_event(&platform, &a).await?;
    // The first attempt fails; the service stops before its retry.
    assert_eq!(
        receiver
            .wait_for("/later", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    platform.stop_service("webhook").await?;
    // Events while it is down wait in the stream.
    key_event(&platform, &a).await?;
    key_event(&platform, &a).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received("/later").len(),
        1,
        "nothing is sent while the service is down"
    );
    platform.start_service("webhook").await?;
    // The retry (state in the database) and both queued events arrive.
    let got = receiver
        .wait_for("/later", 4, Duration::from_secs(15))
        .await;
    assert_eq!(got.len(), 4);
    let mut ids: Vec<String> = got
        .iter()
        .filter_map(|r| {
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect();
    for r in &got {
        verify(&secret, r).map_err(anyhow::Error::msg)?;
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three events, the first one twice");

    // A retry due while NATS is down is still made (its state is in the
    // database), and events flow again once NATS is back.
    receiver.script("/nats", &[Act::Status(500)]);
    endpoint(&platform, &a, &receiver.url("/nats"), &["api_key.created"]).await?;
    key_event(&platform, &a).await?;
    assert_eq!(
        receiver
            .wait_for("/nats", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    platform.nats.shut_down().await;
    assert_eq!(
        receiver
            .wait_for("/nats", 2, Duration::from_secs(10))
            .await
            .len(),
        2
    );
    platform.nats.start_again().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_event(&platform, &a).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the platform did not come back after NATS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        receiver
            .wait_for("/nats", 3, Duration::from_secs(20))
            .await
            .len(),
        3
    );

    // A master-key rotation: with the old key as the previous one the
    // secrets still open, the re-seal pass moves them to the new key, and
    // then the old key can go.
    let (_, rekeyed_secret) = endpoint(
        &platform,
        &a,
        &receiver.url("/rekeyed"),
        &["api_key.created"],
    )
    .await?;
    let (old_key, _) = platform.master_keys("webhook")?;
    let new_key = idm_testkit::master_key();
    platform
        .restart_with_master_keys("webhook", new_key.clone(), Some(old_key))
        .await?;
    let sealing = platform
        .sealing_keys("webhook")?
        .derive_sealing_keys(idm_webhook::SECRET_PURPOSE);
    let db = platform.global().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = db
            .query(
                "SELECT sealed_secret FROM webhook.endpoints WHERE issuer_id = $1",
                &[&a.issuer_id],
            )
            .await?;
        if rows
            .iter()
            .all(|r| sealing.is_current(&r.get::<_, Vec<u8>>(0)))
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the secrets were not re-sealed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform
        .restart_with_master_keys("webhook", new_key, None)
        .await?;
    key_event(&platform, &a).await?;
    let got = receiver
        .wait_for("/rekeyed", 1, Duration::from_secs(10))
        .await;
    assert_eq!(got.len(), 1);
    verify(&rekeyed_secret, &got[0]).map_err(anyhow::Error::msg)?;

    // An endpoint that never succeeds is disabled after the period, and
    // the tenant is told by an event.
    receiver.always("/down", Act::Status(500));
    let (down, _) = endpoint(&platform, &a, &receiver.url("/down"), &["api_key.created"]).await?;
    key_event(&platform, &a).await?;
    let disabled = eventually(
        &platform,
        &a.secret_key,
        &format!("/v1/webhook_endpoints/{down}"),
        |j| j["enabled"] == false,
    )
    .await?;
    assert_eq!(disabled["disabled_reason"], "failing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = platform
            .last_event(&a.issuer_id, "webhook_endpoint.disabled")
            .await?;
        if let Some(event) = event {
            assert_eq!(
                event["data"],
                json!({"endpoint_id": down, "reason": "failing"})
            );
            assert_eq!(event["actor"], "system");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no webhook_endpoint.disabled event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Past the retention, delivered messages (and events nothing refers to)
    // are deleted; dead letters stay.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'delivered'),
                        count(*) FILTER (WHERE status = 'failed')
                 FROM webhook.messages WHERE issuer_id = $1",
                &[&a.issuer_id],
            )
            .await?;
        let (delivered, failed): (i64, i64) = (row.get(0), row.get(1));
        if delivered == 0 {
            assert!(failed > 0, "dead letters are kept");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{delivered} delivered messages outlived the retention"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orphans: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook.events e WHERE e.issuer_id = $1
               AND e.occurred_at < now() - interval '10 seconds'
               AND NOT EXISTS (SELECT 1 FROM webhook.messages m WHERE m.event_id = e.id)",
            &[&a.issuer_id],
        )
        .await?
        .get(0);
    assert_eq!(orphans, 0);
    let kept: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook.events e JOIN webhook.messages m ON m.event_id = e.id
             WHERE m.issuer_id = $1 AND m.status = 'failed'",
            &[&a.issuer_id],
        )
        .await?
        .get(0);
    assert!(kept > 0, "the events of dead letters are kept");
    platform.stop().await
}
