//! Issue 9, finding 1: the bus is a trust boundary. Tried as an attacker on
//! the bus would: without credentials, with one service's credentials
//! reaching for another's subjects, inbox or operations, and with a forged
//! caller name. Each platform runs its own nats-server with the config
//! generated from the permission table (libs/bus/src/acl.rs).

use async_nats::HeaderMap;
use idm_bus::acl::{self, Target};
use idm_core::ErrorCode;
use idm_testkit::{Identity, Platform};
use reqwest::Method;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ORIGIN: &str = "https://app.example.com";

/// A raw NATS client logged in as one identity that records the server's
/// error messages (permission violations arrive as `-ERR`, not as results).
struct Watched {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    async fn connect(platform: &Platform, identity: Identity) -> anyhow::Result<Self> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        let client =
            idm_bus::connect_options(identity, &platform.prefix, &platform.nats.auth(identity))?
                .event_callback(move |event| {
                    let sink = Arc::clone(&sink);
                    async move {
                        if let async_nats::Event::ServerError(e) = event {
                            if let Ok(mut errors) = sink.lock() {
                                errors.push(e.to_string());
                            }
                        }
                    }
                })
                .connect(&platform.nats.url)
                .await?;
        Ok(Self { client, errors })
    }

    fn violations(&self, kind: &str, subject: &str) -> usize {
        let needle = format!("permissions violation for {kind} to \"{subject}\"");
        self.errors
            .lock()
            .map(|errors| {
                errors
                    .iter()
                    .filter(|e| e.to_lowercase().contains(&needle.to_lowercase()))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (up to 10 s) until the server has refused each of `subjects`.
    async fn refused(&self, kind: &str, subjects: &[String]) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let missing: Vec<String> = subjects
                .iter()
                .filter(|s| self.violations(kind, s) == 0)
                .cloned()
                .collect();
            if missing.is_empty() || tokio::time::Instant::now() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request as `Bus::request` sends it, but naming `caller` (or no
    /// one) in the header. `None` when no answer came within 3 s.
    async fn call(
        &self,
        subject: &str,
        caller: Option<&str>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let mut headers = HeaderMap::new();
        if let Some(caller) = caller {
            headers.insert(idm_bus::HEADER_CALLER, caller);
        }
        let sent = self
            .client
            .request_with_headers(subject.to_owned(), headers, "null".into());
        match tokio::time::timeout(Duration::from_secs(3), sent).await {
            Ok(Ok(message)) => Ok(Some(serde_json::from_slice(&message.payload)?)),
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }
}

fn error_code(reply: &Option<serde_json::Value>) -> Option<String> {
    reply
        .as_ref()
        .and_then(|r| r.pointer("/error/code"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
}

fn subject(platform: &Platform, target: Target, op: &str) -> String {
    match target {
        Target::Service(service) => format!("{}.{service}.v1.{op}", platform.prefix),
        Target::Store => format!("{}.store.weur.v1.{op}", platform.prefix),
    }
}

#[tokio::test]
async fn connections_without_valid_credentials_are_refused() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let anonymous = async_nats::connect(&platform.nats.url).await;
    assert!(anonymous.is_err(), "an anonymous connection was accepted");

    // A well-formed key the server does not know.
    let stranger = nkeys::KeyPair::new_user().seed()?;
    let unknown = async_nats::ConnectOptions::with_nkey(stranger)
        .connect(&platform.nats.url)
        .await;
    assert!(unknown.is_err(), "an unknown nkey was accepted");

    // Control: the same server lets a known identity in.
    let known = Watched::connect(platform, Identity::Webhook).await?;
    known.client.flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_service_cannot_listen_to_another_services_subjects_or_replies() -> anyhow::Result<()> {
    // Own platform: plays services on the bus (its subscriptions could hear or answer other tests' calls).
    let platform = Platform::start().await?;
    let p = platform.prefix.clone();
    let tenant = platform.create_account("Eavesdrop").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;

    // auth's credentials try to hear session's requests (key_ring among
    // them), the edge's replies (the key ring itself), a store's traffic and
    // the raw events.
    let spy = Watched::connect(&platform, Identity::Auth).await?;
    let spied = vec![
        format!("{p}.session.v1.>"),
        format!("{}.>", Identity::EdgeGuard.inbox_prefix(&p)),
        format!("{p}.store.weur.v1.*"),
        format!("{p}.events.>"),
        ">".to_owned(),
    ];
    let mut subscriptions = Vec::new();
    for subject in &spied {
        subscriptions.push(spy.client.subscribe(subject.clone()).await?);
    }
    spy.client.flush().await?;
    assert_eq!(
        spy.refused("subscription", &spied).await,
        Vec::<String>::new(),
        "every spying subscription is refused by the server"
    );

    // Control: the edge's own credentials may hear revocations, and do.
    let edge = Watched::connect(&platform, Identity::EdgeGuard).await?;
    let mut revocations = edge
        .client
        .subscribe(format!("{p}.session.revoked.*"))
        .await?;
    edge.client.flush().await?;

    // Traffic: a sign-up (auth → session → store), `me` (the edge fetches
    // the issuer's key ring from session) and a sign-out (a revocation).
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            None,
            "ada@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let token = r.str("/session_token");
    let me = platform
        .client_call(0, &tenant, Method::GET, "/v1/client/me", Some(&token), None)
        .await?;
    assert_eq!(me.status, 200, "{}", me.json);
    let out = platform
        .client_call(
            0,
            &tenant,
            Method::POST,
            "/v1/client/sign_out",
            Some(&token),
            None,
        )
        .await?;
    assert!(out.status < 300, "{}", out.json);
    let heard = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut revocations),
    )
    .await;
    assert!(
        matches!(heard, Ok(Some(_))),
        "control: a permitted subscription hears the broadcast"
    );

    for mut subscription in subscriptions {
        let next = tokio::time::timeout(
            Duration::from_millis(500),
            futures::StreamExt::next(&mut subscription),
        )
        .await;
        assert!(
            !matches!(next, Ok(Some(_))),
            "a refused subscription delivered a message"
        );
    }
    platform.stop().await
}

#[tokio::test]
async fn a_service_cannot_call_an_operation_it_has_no_row_for() -> anyhow::Result<()> {
    // Own platform: plays services on the bus (its subscriptions could hear or answer other tests' calls).
    let platform = Platform::start().await?;
    let p = platform.prefix.clone();

    // auth asking for key material; user asking a store to check a password;
    // the admin identity asking for key material.
    for (identity, subject) in [
        (Identity::Auth, format!("{p}.session.v1.key_ring")),
        (Identity::User, format!("{p}.store.weur.v1.verify_password")),
        (Identity::Admin, format!("{p}.session.v1.key_ring")),
        // Rotating refresh tokens and reporting their reuse: edge (and
        // session) only.
        (Identity::User, format!("{p}.store.weur.v1.refresh_session")),
        (Identity::Auth, format!("{p}.session.v1.report_reuse")),
    ] {
        let caller = Watched::connect(&platform, identity).await?;
        let reply = caller.call(&subject, Some(&identity.name())).await?;
        assert_eq!(reply, None, "{identity} got an answer from {subject}");
        assert_eq!(
            caller
                .refused("publish", std::slice::from_ref(&subject))
                .await,
            Vec::<String>::new(),
            "{identity} → {subject}"
        );
    }

    // Through the bus client the same calls fail at once, with a stable code.
    let auth = platform.bus(Identity::Auth).await?;
    let started = std::time::Instant::now();
    let denied = auth
        .send(&idm_core::proto::session::KeyRingRequest {
            issuer_id: idm_core::IssuerId::generate(),
            nonce: String::new(),
        })
        .await;
    assert_eq!(
        denied.err().map(|e| e.code),
        Some(ErrorCode::CallerNotAllowed)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no time-out wait"
    );
    let user = platform.bus(Identity::User).await?;
    let denied = user
        .send_to(
            idm_core::Region::Weur,
            &idm_core::proto::store::VerifyPassword {
                issuer_id: idm_core::IssuerId::generate(),
                user_id: None,
                password: idm_core::proto::SecretText::new("x"),
            },
        )
        .await;
    assert_eq!(
        denied.err().map(|e| e.code),
        Some(ErrorCode::CallerNotAllowed)
    );
    platform.stop().await
}

/// Every identity against every operation anyone may call: the server
/// refuses each publish the table does not grant, and each one it grants
/// reaches a real handler (so the table, the server config and the
/// handlers agree, both ways).
#[tokio::test]
async fn the_server_permissions_match_the_table_for_every_identity_and_operation(
) -> anyhow::Result<()> {
    // Own platform: plays services on the bus (its subscriptions could hear or answer other tests' calls).
    let platform = Platform::start().await?;
    let universe = acl::all_calls();
    for identity in Identity::all() {
        let watched = Watched::connect(&platform, identity).await?;
        let mut denied = Vec::new();
        for (target, op) in &universe {
            let subject = subject(&platform, *target, op);
            if acl::may_call(identity, *target, op) {
                // A `null` body decodes as no request type: the handler is
                // reached and answers invalid_request, with no side effect.
                let reply = watched.call(&subject, Some(&identity.name())).await?;
                assert_eq!(
                    error_code(&reply).as_deref(),
                    Some("invalid_request"),
                    "{identity} → {target}.{op}: {reply:?}"
                );
            } else {
                denied.push(subject);
            }
        }
        // In batches, each refused before the next is sent: the client
        // hands server errors to its event callback through a bounded
        // queue and drops what does not fit, so a burst of a hundred
        // refusals could lose some and read as "let through".
        let mut let_through = Vec::new();
        for batch in denied.chunks(16) {
            for subject in batch {
                watched
                    .client
                    .publish(subject.clone(), "null".into())
                    .await?;
            }
            watched.client.flush().await?;
            let_through.extend(watched.refused("publish", batch).await);
        }
        assert_eq!(
            let_through,
            Vec::<String>::new(),
            "{identity}: publishes the server let through"
        );
    }
    platform.stop().await
}

#[tokio::test]
async fn the_serving_loop_refuses_a_forged_or_missing_caller_name() -> anyhow::Result<()> {
    // Own platform: plays services on the bus (its subscriptions could hear or answer other tests' calls).
    let platform = Platform::start().await?;
    let p = platform.prefix.clone();
    // auth may send session.create_session; it claims to be someone else.
    let auth = Watched::connect(&platform, Identity::Auth).await?;
    let create_session = format!("{p}.session.v1.create_session");
    for claimed in [Some("edge-guard"), Some("admin"), Some("nobody"), None] {
        let reply = auth.call(&create_session, claimed).await?;
        assert_eq!(
            error_code(&reply).as_deref(),
            Some("caller_not_allowed"),
            "claimed {claimed:?}: {reply:?}"
        );
    }
    // Control: under its own name the request reaches the handler.
    let reply = auth.call(&create_session, Some("auth")).await?;
    assert_eq!(error_code(&reply).as_deref(), Some("invalid_request"));

    // The edge may ask for key rings; naming auth (whose inbox the reply
    // subject is not in) gets it refused, not answered.
    let edge = Watched::connect(&platform, Identity::EdgeGuard).await?;
    let key_ring = format!("{p}.session.v1.key_ring");
    let reply = edge.call(&key_ring, Some("auth")).await?;
    assert_eq!(error_code(&reply).as_deref(), Some("caller_not_allowed"));
    let reply = edge.call(&key_ring, Some("edge-guard")).await?;
    assert_eq!(error_code(&reply).as_deref(), Some("invalid_request"));
    platform.stop().await
}

#[tokio::test]
async fn services_reach_nats_over_tls_and_an_unverified_server_is_refused() -> anyhow::Result<()> {
    let ca = idm_testkit::tls::TestCa::create()?;
    // Own platform: NATS over TLS.
    let platform = Platform::start_with(idm_testkit::Options {
        nats_tls: Some(ca.nats()),
        ..Default::default()
    })
    .await?;
    assert!(platform.nats.url.starts_with("tls://"));
    // The whole platform works over it: account → stores, session, user.
    let tenant = platform.create_account("Encrypted").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            None,
            "tls@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);

    // The right seed without the CA: the server's certificate is not trusted.
    let mut auth = platform.nats.auth(Identity::Auth);
    auth.tls_ca_file = None;
    let untrusting = idm_bus::connect_options(Identity::Auth, &platform.prefix, &auth)?
        .connect(&platform.nats.url)
        .await;
    assert!(
        untrusting.is_err(),
        "connected to a server it cannot verify"
    );
    // Plain text to the TLS port is refused as well.
    let plain_url = platform.nats.url.replace("tls://", "nats://");
    let plain = idm_bus::connect_options(Identity::Auth, &platform.prefix, &auth)?
        .require_tls(false)
        .connect(&plain_url)
        .await;
    assert!(plain.is_err(), "a plain-text connection was accepted");
    platform.stop().await
}

/// The edges drop what they remember of a user when a store says the user
/// changed: only a store may say so, or anyone on the bus could keep a
/// stale profile alive or flood the edges' memory with marks.
#[tokio::test]
async fn only_a_store_may_announce_a_changed_user() -> anyhow::Result<()> {
    // Own platform: plays services on the bus.
    let platform = Platform::start().await?;
    let p = platform.prefix.clone();
    let edge = Watched::connect(&platform, Identity::EdgeGuard).await?;
    let mut heard = edge.client.subscribe(format!("{p}.user.changed.*")).await?;
    edge.client.flush().await?;
    let subject = format!("{p}.user.changed.iss_forged");
    for identity in Identity::all() {
        if matches!(identity, Identity::UserStore(_)) {
            continue;
        }
        let forger = Watched::connect(&platform, identity).await?;
        forger
            .client
            .publish(
                subject.clone(),
                r#"{"issuer_id":"iss_forged","user_id":"usr_x"}"#.into(),
            )
            .await?;
        forger.client.flush().await?;
        assert_eq!(
            forger
                .refused("publish", std::slice::from_ref(&subject))
                .await,
            Vec::<String>::new(),
            "{identity} announced a changed user"
        );
    }
    let forged = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut heard),
    )
    .await;
    assert!(
        !matches!(forged, Ok(Some(_))),
        "an edge heard a forged change"
    );

    // Control: a store's announcement reaches the edge, and the edge is the
    // only other identity that may hear one.
    let store = Watched::connect(&platform, Identity::UserStore(idm_core::Region::Weur)).await?;
    store
        .client
        .publish(
            subject.clone(),
            r#"{"issuer_id":"iss_forged","user_id":"usr_x"}"#.into(),
        )
        .await?;
    store.client.flush().await?;
    let announced =
        tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut heard)).await;
    assert!(
        matches!(announced, Ok(Some(_))),
        "control: the edge hears a store"
    );
    let listener = Watched::connect(&platform, Identity::User).await?;
    let _refused = listener
        .client
        .subscribe(format!("{p}.user.changed.*"))
        .await?;
    listener.client.flush().await?;
    assert_eq!(
        listener
            .refused("subscription", &[format!("{p}.user.changed.*")])
            .await,
        Vec::<String>::new()
    );
    platform.stop().await
}
