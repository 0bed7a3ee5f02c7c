//! Traces and metrics of a running platform: one sign-in is one trace across
//! every service (parent links included), a queued mail is delivered in the
//! trace that queued it, the edge believes a client's trace and request id
//! only from a trusted proxy, and `/metrics` exports real histograms with
//! help text.
//!
//! A test binary of its own: spans are captured by the process's one
//! `tracing` subscriber, which must be installed before any platform starts
//! (`idm_testkit::capture_spans`). Tests run in parallel and share the
//! capture; each follows its own trace by id.

use idm_testkit::{capture_spans, CapturedSpan, Options, Platform, Spans, Tenant};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const ORIGIN: &str = "https://app.example.com";
/// Spans end a moment after the response that ends their request.
const PATIENCE: Duration = Duration::from_secs(20);

fn random_hex(bytes: usize) -> String {
    idm_crypto::random_bytes::<32>()[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn request_id(r: &idm_testkit::Response) -> String {
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// One trace's spans, with its parent links.
struct Trace<'a> {
    spans: &'a [CapturedSpan],
}

impl<'a> Trace<'a> {
    fn parent(&self, span: &CapturedSpan) -> Option<&'a CapturedSpan> {
        let parent = span.parent_span_id.as_deref()?;
        self.spans.iter().find(|s| s.span_id == parent)
    }

    /// The service whose hop `span` is part of: the nearest span, itself or
    /// an ancestor, that names one (each hop's root does).
    fn service_of(&self, span: &'a CapturedSpan) -> Option<&'a str> {
        let mut current = Some(span);
        while let Some(s) = current {
            if let Some(service) = s.attribute("service") {
                return Some(service);
            }
            current = self.parent(s);
        }
        None
    }

    /// The roots of the hops served over the bus.
    fn bus_hops(&self) -> impl Iterator<Item = &'a CapturedSpan> {
        self.spans
            .iter()
            .filter(|s| s.kind == "server" && s.attribute("subject").is_some())
    }
}

/// The edge's request span of the request whose response said `request_id`.
fn edge_root<'a>(spans: &'a [CapturedSpan], request_id: &str) -> Option<&'a CapturedSpan> {
    spans.iter().find(|s| {
        s.attribute("request_id") == Some(request_id)
            && s.attribute("service") == Some("edge-guard")
            && s.attribute("http.route").is_some()
    })
}

async fn tenant(platform: &Platform, name: &str) -> anyhow::Result<Tenant> {
    let tenant = platform.create_account(name).await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    Ok(tenant)
}

#[tokio::test]
async fn one_sign_in_is_one_trace_across_edge_auth_user_store_and_session() -> anyhow::Result<()> {
    let spans = capture_spans()?;
    let platform = Platform::start().await?;
    let tenant = tenant(&platform, "Traced").await?;
    let email = format!("{}@example.com", random_hex(6));
    let password = format!("pw-{}", random_hex(8));
    let r = platform
        .sign_up(&tenant, ORIGIN, None, &email, &password)
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = platform.sign_in(&tenant, ORIGIN, &email, &password).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let request_id = request_id(&r);
    assert!(!request_id.is_empty());

    // Every hop of this request: the edge's request span, then a
    // `bus.handle` span in each service it reached.
    let expected = ["edge-guard", "auth", "user", "user-store-weur", "session"];
    let all = spans
        .wait_for(PATIENCE, |all| {
            let seen: BTreeSet<&str> = all
                .iter()
                .filter(|s| s.attribute("request_id") == Some(&request_id))
                .filter_map(|s| s.attribute("service"))
                .collect();
            expected.iter().all(|service| seen.contains(service))
        })
        .await?;
    let root = edge_root(&all, &request_id).ok_or_else(|| {
        anyhow::anyhow!("no edge span for {request_id} among {} spans", all.len())
    })?;
    assert_eq!(root.name, "POST /v1/client/sign_in");
    assert_eq!(root.kind, "server");
    assert_eq!(root.parent_span_id, None, "the edge starts the trace");
    assert_eq!(root.attribute("http.response.status_code"), Some("200"));

    // One trace: every span of the request carries the root's trace id.
    let of_request: Vec<&CapturedSpan> = all
        .iter()
        .filter(|s| s.attribute("request_id") == Some(&request_id))
        .collect();
    for span in &of_request {
        assert_eq!(span.trace_id, root.trace_id, "{span:#?}");
        assert_eq!(span.attribute("trace_id"), Some(root.trace_id.as_str()));
    }
    let services: BTreeSet<&str> = of_request
        .iter()
        .filter_map(|s| s.attribute("service"))
        .collect();
    for service in expected {
        assert!(services.contains(service), "{service} not in {services:?}");
    }

    // Parent links: each hop is the child of its caller's `bus.request`
    // span (remote: it came in the NATS headers), and that span lies in the
    // caller's hop, which leads back to the edge's root.
    let spans_of_trace = spans.trace(&root.trace_id)?;
    let trace = Trace {
        spans: &spans_of_trace,
    };
    let mut calls = BTreeSet::new();
    for hop in trace.bus_hops() {
        let caller_span = trace
            .parent(hop)
            .ok_or_else(|| anyhow::anyhow!("hop without a parent in the trace: {hop:#?}"))?;
        assert!(hop.parent_is_remote, "{hop:#?}");
        assert_eq!(caller_span.kind, "client", "{caller_span:#?}");
        assert_eq!(
            caller_span.attribute("subject"),
            hop.attribute("subject"),
            "the parent is the call of this subject"
        );
        let caller = trace
            .service_of(caller_span)
            .ok_or_else(|| anyhow::anyhow!("a call outside any hop: {caller_span:#?}"))?;
        assert_eq!(Some(caller), hop.attribute("caller"), "{hop:#?}");
        let mut ancestor = Some(caller_span);
        while let Some(span) = ancestor.and_then(|s| trace.parent(s)) {
            ancestor = Some(span);
        }
        assert_eq!(
            ancestor.map(|s| s.span_id.as_str()),
            Some(root.span_id.as_str()),
            "every hop leads back to the edge's root"
        );
        calls.insert((
            caller.to_owned(),
            hop.attribute("service").unwrap_or("?").to_owned(),
        ));
    }
    for (caller, callee) in [
        ("edge-guard", "auth"),
        ("auth", "user"),
        ("auth", "user-store-weur"),
        ("user", "user-store-weur"),
        ("auth", "session"),
        ("session", "user-store-weur"),
    ] {
        assert!(
            calls.contains(&(caller.to_owned(), callee.to_owned())),
            "no {caller} → {callee} call in {calls:?}"
        );
    }
    platform.stop().await
}

#[tokio::test]
async fn a_queued_mail_is_delivered_in_the_trace_that_queued_it() -> anyhow::Result<()> {
    let spans = capture_spans()?;
    let platform = Platform::start().await?;
    let tenant = tenant(&platform, "Mailed").await?;
    let email = format!("{}@example.com", random_hex(6));
    let rk = tenant.restricted_key.clone();
    let r = platform
        .send(
            Method::POST,
            "/v1/client/email_codes",
            &[("idm-api-key", &rk), ("origin", ORIGIN)],
            Some(json!({ "email": email })),
        )
        .await?;
    assert!(r.status < 300, "{} {}", r.status, r.json);
    let request_id = request_id(&r);
    platform
        .smtp
        .wait_for(&email, 0, Duration::from_secs(20))
        .await?;

    let all = spans
        .wait_for(PATIENCE, |all| {
            all.iter()
                .any(|s| s.name == "mail.deliver" && s.attribute("request_id") == Some(&request_id))
                && edge_root(all, &request_id).is_some()
        })
        .await?;
    let root = edge_root(&all, &request_id).ok_or_else(|| anyhow::anyhow!("no edge span"))?;
    let delivery = all
        .iter()
        .find(|s| s.name == "mail.deliver" && s.attribute("request_id") == Some(&request_id))
        .ok_or_else(|| anyhow::anyhow!("no delivery span for {request_id}"))?;
    assert_eq!(delivery.trace_id, root.trace_id);
    assert_eq!(delivery.kind, "consumer");
    assert!(
        delivery.parent_is_remote,
        "the parent came in the MAIL message's headers"
    );
    let spans_of_trace = spans.trace(&root.trace_id)?;
    let trace = Trace {
        spans: &spans_of_trace,
    };
    let queued_by = trace
        .parent(delivery)
        .ok_or_else(|| anyhow::anyhow!("the delivery's parent is not in the trace"))?;
    assert_eq!(trace.service_of(queued_by), Some("auth"), "{queued_by:#?}");
    platform.stop().await
}

#[tokio::test]
async fn the_edge_continues_a_clients_trace_and_request_id_only_from_a_trusted_proxy(
) -> anyhow::Result<()> {
    let spans = capture_spans()?;
    // Replica 0 trusts the test process as its proxy; replica 1 trusts no one.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    platform
        .add_edge_with(|config| config.trusted_proxies = Vec::new())
        .await?;
    let tenant = tenant(&platform, "Proxied").await?;
    let sk = format!("Bearer {}", tenant.secret_key);
    let call = |replica: usize, trace_id: String, span_id: String, request_id: String| {
        let platform = &platform;
        let sk = sk.clone();
        async move {
            let traceparent = format!("00-{trace_id}-{span_id}-01");
            platform
                .send_to(
                    replica,
                    Method::GET,
                    "/v1/issuer",
                    &[
                        ("authorization", sk.as_str()),
                        ("traceparent", traceparent.as_str()),
                        ("tracestate", "vendor=client"),
                        ("x-request-id", request_id.as_str()),
                    ],
                    None,
                )
                .await
        }
    };

    // A client talking to the edge directly picks nothing.
    let (chosen_trace, chosen_span, chosen_id) = (
        random_hex(16),
        random_hex(8),
        format!("req-chosen-{}", random_hex(4)),
    );
    let r = call(
        1,
        chosen_trace.clone(),
        chosen_span.clone(),
        chosen_id.clone(),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let given_id = request_id(&r);
    assert!(!given_id.is_empty());
    assert_ne!(given_id, chosen_id, "the client chose its request id");
    let all = spans
        .wait_for(PATIENCE, |all| edge_root(all, &given_id).is_some())
        .await?;
    let root = edge_root(&all, &given_id).ok_or_else(|| anyhow::anyhow!("no edge span"))?;
    assert_ne!(root.trace_id, chosen_trace);
    assert_eq!(root.parent_span_id, None, "{root:#?}");
    assert!(
        !all.iter().any(|s| s.trace_id == chosen_trace),
        "a span joined the client's trace"
    );
    assert!(
        !all.iter()
            .any(|s| s.attribute("request_id") == Some(chosen_id.as_str())),
        "a span carries the client's request id"
    );

    // Through the trusted proxy, the caller's trace and request id continue.
    let (proxy_trace, proxy_span, proxy_id) = (
        random_hex(16),
        random_hex(8),
        format!("req-proxy-{}", random_hex(4)),
    );
    let r = call(0, proxy_trace.clone(), proxy_span.clone(), proxy_id.clone()).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(request_id(&r), proxy_id);
    let all = spans
        .wait_for(PATIENCE, |all| edge_root(all, &proxy_id).is_some())
        .await?;
    let root = edge_root(&all, &proxy_id).ok_or_else(|| anyhow::anyhow!("no edge span"))?;
    assert_eq!(root.trace_id, proxy_trace);
    assert_eq!(root.parent_span_id.as_deref(), Some(proxy_span.as_str()));
    assert!(root.parent_is_remote);
    // The account service's hop (the issuer read) is in the same trace.
    let account_hop = spans
        .wait_for(PATIENCE, |all| {
            all.iter()
                .any(|s| s.trace_id == proxy_trace && s.attribute("service") == Some("account"))
        })
        .await?;
    assert!(account_hop
        .iter()
        .any(|s| s.trace_id == proxy_trace && s.attribute("service") == Some("account")));
    platform.stop().await
}

/// The lines of one metric family in Prometheus text.
fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            let line = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            line.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ')
                    || rest.starts_with('{')
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| rest.starts_with(suffix))
            })
        })
        .collect()
}

fn assert_histogram(text: &str, name: &str, labels: &str) {
    let lines = family(text, name);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("# HELP {name} "))),
        "{name} has no help: {lines:#?}"
    );
    assert!(
        lines.contains(&format!("# TYPE {name} histogram").as_str()),
        "{name} is not a histogram: {lines:#?}"
    );
    for bound in ["0.005", "0.1", "1", "+Inf"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{name}_bucket{{"))
                    && l.contains(labels)
                    && l.contains(&format!("le=\"{bound}\""))),
            "{name} has no {labels} bucket le={bound}: {lines:#?}"
        );
    }
    for suffix in ["_sum", "_count"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{name}{suffix}")) && l.contains(labels)),
            "{name}{suffix} {labels} missing"
        );
    }
}

fn assert_family(text: &str, name: &str, kind: &str, sample: &str) {
    let lines = family(text, name);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("# HELP {name} "))),
        "{name} has no help: {lines:#?}"
    );
    assert!(
        lines.contains(&format!("# TYPE {name} {kind}").as_str()),
        "{name} is not a {kind}: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.starts_with('#') && l.contains(sample)),
        "no {name} sample with {sample}: {lines:#?}"
    );
}

#[tokio::test]
async fn metrics_are_histograms_with_help_for_requests_messages_hashes_pools_and_the_process(
) -> anyhow::Result<()> {
    // Every test of this binary installs the capture first (see the top).
    let _spans: Spans = capture_spans()?;
    let platform = Platform::start().await?;
    let tenant = tenant(&platform, "Measured").await?;
    let email = format!("{}@example.com", random_hex(6));
    let password = format!("pw-{}", random_hex(8));
    let r = platform
        .sign_up(&tenant, ORIGIN, None, &email, &password)
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = platform.sign_in(&tenant, ORIGIN, &email, &password).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let rk = tenant.restricted_key.clone();
    let r = platform
        .send(
            Method::POST,
            "/v1/client/email_codes",
            &[("idm-api-key", &rk), ("origin", ORIGIN)],
            Some(json!({ "email": email })),
        )
        .await?;
    assert!(r.status < 300, "{} {}", r.status, r.json);
    platform
        .smtp
        .wait_for(&email, 0, Duration::from_secs(20))
        .await?;

    // The edge's ops port and a regional store (one process here; in a
    // deployment each service exports its own).
    let edge = platform.edge_metrics(0).await?;
    assert_histogram(
        &edge,
        "idm_http_request_duration_seconds",
        "route=\"/v1/client/sign_in\"",
    );
    assert_histogram(&edge, "idm_http_request_duration_seconds", "outcome=\"ok\"");
    assert_histogram(
        &edge,
        "idm_bus_client_duration_seconds",
        "subject=\"auth.sign_in\"",
    );
    assert_family(
        &edge,
        "idm_edge_rate_limit_decisions_total",
        "counter",
        "decision=\"allowed\"",
    );
    assert_family(&edge, "idm_build_info", "gauge", "service=\"edge-guard\"");

    let (status, store) = platform.get_service("user-store-weur", "/metrics").await?;
    assert_eq!(status, 200);
    assert_histogram(
        &store,
        "idm_bus_server_duration_seconds",
        "subject=\"store.weur.verify_password\"",
    );
    assert_histogram(&store, "idm_bus_server_duration_seconds", "caller=\"auth\"");
    assert_histogram(&store, "idm_store_argon2_duration_seconds", "");
    assert_family(
        &store,
        "idm_store_argon2_queue_depth",
        "gauge",
        "idm_store_argon2_queue_depth ",
    );
    assert_histogram(
        &store,
        "idm_db_pool_wait_duration_seconds",
        "pool=\"store-weur\"",
    );
    assert_family(
        &store,
        "idm_db_pool_connections",
        "gauge",
        "pool=\"store-weur\",state=\"idle\"",
    );
    assert_family(
        &store,
        "idm_db_pool_max_connections",
        "gauge",
        "pool=\"store-weur\"",
    );
    assert_histogram(
        &store,
        "idm_bus_message_duration_seconds",
        "consumer=\"mail.courier\"",
    );
    assert_family(
        &store,
        "idm_mail_deliveries_total",
        "counter",
        "outcome=\"delivered\"",
    );
    assert_family(
        &store,
        "idm_mail_enqueued_total",
        "counter",
        "idm_mail_enqueued_total ",
    );
    for (name, kind) in [
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
    ] {
        let lines = family(&store, name);
        assert!(
            lines.contains(&format!("# TYPE {name} {kind}").as_str()),
            "{name}: {lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name}"
        );
    }

    // Nothing is exported as a summary, and every idmesh family has help
    // text (a metric recorded outside the catalog would have none).
    for text in [&edge, &store] {
        assert!(!text.contains(" summary\n"), "a summary is exported");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE idm_") {
                let name = format!("idm_{}", rest.split(' ').next().unwrap_or_default());
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no help text"
                );
            }
        }
    }
    // Edge-guard's public port never serves metrics.
    let r = platform.send(Method::GET, "/metrics", &[], None).await?;
    assert_eq!(r.status, 404);
    platform.stop().await
}
