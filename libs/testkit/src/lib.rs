//! Starts the whole idmesh platform inside one test process, isolated from
//! every other test: its own nine databases (global + one per region), its
//! own NATS server (authenticated, with the permissions of the bus table,
//! see `nats`), subject prefix and Redis key prefix. Services run as
//! libraries on port 0, exactly as their binaries would run them, each
//! logged in to NATS with its own nkey. `Platform::shared()` gives the
//! tests of a binary one such platform to share (see `shared`).

mod client;
pub mod dns;
mod logs;
pub mod nats;
pub mod procs;
pub mod redis_cluster;
mod services;
mod shared;
pub mod smtp;
pub mod spans;
pub mod tls;
mod typed;

pub use client::{read, Response, Tenant};
pub use idm_bus::Identity;
pub use logs::captured_logs;
pub use nats::{NatsServer, NatsTls};
pub use procs::{PrivatePostgres, PrivateRedis};
pub use spans::{capture_spans, CapturedSpan, Spans};
pub use typed::{unique_email, Answer, Client, APP_ORIGIN};

use anyhow::Context;
use base64::Engine;
use idm_core::config::ServiceBasics;
use idm_core::Region;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every test edge serves issuer `iss_x` at `iss-x.auth.idmesh.test`.
pub const ISSUER_HOST_SUFFIX: &str = "auth.idmesh.test";

pub fn pg_admin_url() -> String {
    std::env::var("IDM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The machine's NATS (anonymous, JetStream), for tests that need a bus but
/// no platform. A platform runs its own server: see [`Platform::nats`].
pub fn nats_url() -> String {
    std::env::var("IDM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn redis_url() -> String {
    std::env::var("IDM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

/// A fresh master key, as an operator would generate one
/// (`openssl rand -base64 32`).
pub fn master_key() -> SecretString {
    SecretString::from(
        base64::engine::general_purpose::STANDARD.encode(idm_crypto::random_bytes::<32>()),
    )
}

/// Replaces the database name in a postgres URL.
pub fn database_url(name: &str) -> String {
    let admin = pg_admin_url();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => admin,
    }
}

pub async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn create_database(admin: &tokio_postgres::Client, name: &str) -> anyhow::Result<()> {
    // Concurrent CREATE DATABASE from one template can collide; retry briefly.
    for attempt in 0..20 {
        match admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 19 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(50 + 25 * attempt)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How many edge-guard replicas to run (each on its own port).
    pub edge_replicas: usize,
    /// Regions whose store is started (all eight by default).
    pub regions: Vec<Region>,
    pub min_sign_in: Duration,
    /// Platform-wide WAF settings of every edge replica (the operator token
    /// is always the platform's `operator_token`).
    pub edge_waf: idm_edge_guard::waf::WafConfig,
    /// Peers whose `X-Forwarded-For` and country header every edge believes.
    /// None by default, as in production: a test that plays a proxy says
    /// so with `Options::behind_loopback_proxy()`.
    pub edge_trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve the platform's NATS over TLS with these files (services get the
    /// CA and require TLS).
    pub nats_tls: Option<NatsTls>,
    /// Run on servers of the platform's own that a test may kill and restart
    /// (fault injection): see [`OwnServers`].
    pub own_servers: Option<OwnServers>,
    /// Each store's concurrent Argon2 computations (0: one per core). Tests
    /// that load the stores give the other services a core of their own,
    /// as separate machines would.
    pub store_hash_workers: usize,
    /// Each store's queue of database work waiting for a connection (0:
    /// the store's default, eight per connection). The store divides it
    /// fairly among the issuers active at once, so a platform many tests
    /// share needs a longer one for a test's burst to stay whole.
    pub store_db_queue: usize,
    /// The plan of accounts the operator gave none ([`roomy_plan`] unless
    /// a test says otherwise; tests of plans set one per account).
    pub default_plan: idm_core::AccountPlan,
    /// Run the platform's NATS as a cluster of this many nodes (streams
    /// replicated on each) when 2 or more; one server by default.
    pub nats_cluster_nodes: usize,
    /// The Redis auth and the edges use instead of the machine's (for
    /// example a `redis+cluster://` URL of a private cluster); ignored with
    /// `own_servers`, which brings its own.
    pub redis_url: Option<String>,
    /// Put the two EU regions' databases (`weur`, `eeur`) on a PostgreSQL
    /// server of their own (a private cluster on another port, see
    /// [`PrivatePostgres`]), so regions on separate servers are exercised,
    /// not assumed. The shared platform does (unless `IDM_TEST_EU_SERVER=0`);
    /// ignored with `own_servers`, which places every database itself.
    pub eu_server: bool,
    /// Where auth delivers mail instead of [`Platform::smtp`] (a real SMTP
    /// server of a test's own).
    pub auth_mail: Option<idm_auth::MailTransport>,
    /// The webhook service's delivery settings: [`test_webhook_delivery`]
    /// by default (fast retries, plain HTTP to loopback receivers allowed).
    pub webhook_delivery: idm_webhook::Delivery,
    /// The webhook service's database connections (2; benches give more).
    pub webhook_pool_size: usize,
}

/// Webhook delivery for tests: the receivers are axum servers on
/// 127.0.0.1 (allowlisted, plain HTTP), the retry schedule is the
/// product's shape in milliseconds (at once, then 200 ms, 400 ms, 800 ms),
/// and attempts time out after 2 s.
pub fn test_webhook_delivery() -> idm_webhook::Delivery {
    idm_webhook::Delivery {
        schedule: [0, 200, 400, 800]
            .into_iter()
            .map(Duration::from_millis)
            .collect(),
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        allow_http: true,
        allowed_networks: vec![ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
            std::net::Ipv4Addr::LOCALHOST,
            8,
        ))],
        ..idm_webhook::Delivery::default()
    }
}

/// A plan whose ceilings stay out of the way of tests about something else
/// (the product's default plan is `AccountPlan::default()`): rate and
/// recipient ceilings at the most a policy may ask, the default quotas.
pub fn roomy_plan() -> idm_core::AccountPlan {
    use idm_core::waf_policy::VelocityLimit;
    idm_core::AccountPlan {
        max_backend: VelocityLimit::new(10_000_000, 1),
        max_client: VelocityLimit::new(10_000_000, 1),
        max_verification: VelocityLimit::new(10_000_000, 1),
        max_recipient: VelocityLimit::new(1_000_000, 1),
        ..idm_core::AccountPlan::default()
    }
}

/// A platform on private servers: its own PostgreSQL (the global database
/// and every region's, except the regions listed, which get a PostgreSQL
/// server each), its own Redis without persistence, and (as always) its own
/// NATS. Every service then runs in a runtime of its own, so a test can kill
/// it mid-request (`Platform::kill_service`).
#[derive(Debug, Clone, Default)]
pub struct OwnServers {
    pub separate_regions: Vec<Region>,
}

/// The private servers of a platform started with [`OwnServers`].
pub struct Servers {
    /// The global database and every region not listed in `regional`.
    pub global_pg: PrivatePostgres,
    pub regional_pg: BTreeMap<Region, PrivatePostgres>,
    pub redis: PrivateRedis,
}

impl Servers {
    /// The PostgreSQL server holding `region`'s database.
    pub fn pg_of(&mut self, region: Region) -> &mut PrivatePostgres {
        match self.regional_pg.get_mut(&region) {
            Some(pg) => pg,
            None => &mut self.global_pg,
        }
    }
}

/// 127.0.0.1 and ::1: the test process itself, playing a reverse proxy.
pub fn loopback_proxy() -> Vec<ipnet::IpNet> {
    [
        ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
        ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ]
    .to_vec()
}

impl Options {
    /// The defaults, with the test process trusted as a proxy, for tests
    /// that set `X-Forwarded-For` or the country header.
    pub fn behind_loopback_proxy() -> Self {
        Self {
            edge_trusted_proxies: loopback_proxy(),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            edge_replicas: 1,
            regions: Region::ALL.to_vec(),
            min_sign_in: Duration::from_millis(300),
            edge_waf: idm_edge_guard::waf::WafConfig::default(),
            edge_trusted_proxies: Vec::new(),
            nats_tls: None,
            own_servers: None,
            store_hash_workers: 0,
            store_db_queue: 0,
            default_plan: roomy_plan(),
            nats_cluster_nodes: 1,
            redis_url: None,
            eu_server: false,
            auth_mail: None,
            webhook_delivery: test_webhook_delivery(),
            webhook_pool_size: 2,
        }
    }
}

/// One isolated, running platform.
pub struct Platform {
    pub prefix: String,
    pub redis_prefix: String,
    /// The platform's own nats-server: `nats.url`, `nats.connect(identity)`.
    pub nats: NatsServer,
    pub global_db: String,
    pub region_dbs: BTreeMap<Region, String>,
    pub edges: Vec<SocketAddr>,
    /// Each edge replica's internal ops listener (metrics, ban lifts).
    pub edge_ops: Vec<SocketAddr>,
    pub account_addr: SocketAddr,
    pub service_addrs: BTreeMap<String, SocketAddr>,
    pub operator_token: String,
    pub http: reqwest::Client,
    /// Receives every mail the platform sends.
    pub smtp: smtp::SmtpSink,
    /// The DNS server the account service verifies custom domains at.
    pub dns: dns::DnsServer,
    /// The platform's clock (auth's expiry and TOTP time); tests move it.
    pub clock: idm_core::clock::Clock,
    /// The Redis auth and the edges use.
    pub redis_url: String,
    /// Database name → its URL.
    pub db_urls: BTreeMap<String, String>,
    /// The private servers, with [`Options::own_servers`].
    pub servers: Option<Servers>,
    /// The EU regions' own PostgreSQL server, with [`Options::eu_server`].
    pub eu_pg: Option<PrivatePostgres>,
    shutdown: CancellationToken,
    services: BTreeMap<String, services::Service>,
    own_runtimes: bool,
    edge_waf: idm_edge_guard::waf::WafConfig,
    edge_trusted_proxies: Vec<ipnet::IpNet>,
    /// The session service's master key (tests that play an attacker holding
    /// a real signing key read it from the database with this).
    session_master_key: SecretString,
    session_master_key_previous: Option<SecretString>,
    /// Shared by the session service and every edge replica only.
    key_transport_key: SecretString,
    /// Set once `stop` has cleaned up; otherwise `Drop` does (a test that
    /// failed or returned early never reaches its `stop`).
    cleaned_up: bool,
    /// This platform's place among the process's running platforms
    /// (see [`platform_slot`]); given back when it is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// How many platforms one test process runs at once (`IDM_TEST_PLATFORMS`,
/// 3 by default, at least 2; the shared one counts): the shared one and one per test
/// thread (two on two cores). A platform holds about 25 PostgreSQL
/// connections since the global pools shrank: the e2e binary peaked at 70
/// of PostgreSQL's default 100 with three (2 on a machine shared with other
/// test runs; each waits here for a place before it creates anything).
static PLATFORM_SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::OnceLock::new();

async fn platform_slot() -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
    let slots = PLATFORM_SLOTS.get_or_init(|| {
        let n = std::env::var("IDM_TEST_PLATFORMS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            // The shared platform keeps its place for the whole process:
            // with one place, a test that needs its own would wait forever.
            .map(|n| n.max(2))
            .unwrap_or(3);
        std::sync::Arc::new(tokio::sync::Semaphore::new(n))
    });
    Ok(std::sync::Arc::clone(slots).acquire_owned().await?)
}

fn basics(prefix: &str, nats: &NatsServer, identity: Identity) -> ServiceBasics {
    ServiceBasics {
        nats_url: nats.url.clone(),
        nats_stream_replicas: nats.stream_replicas(),
        nats_stream_placement: Default::default(),
        nats_auth: nats.auth(identity),
        subject_prefix: prefix.to_owned(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        request_timeout: Duration::from_secs(5),
    }
}

impl Platform {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        let slot = platform_slot().await?;
        logs::install();
        let run_id = random_hex(6);
        let prefix = format!("t{run_id}");
        let global_db = format!("idmt_{run_id}_global");
        let region_dbs: BTreeMap<Region, String> = Region::ALL
            .iter()
            .map(|r| (*r, format!("idmt_{run_id}_{r}")))
            .collect();
        let mut db_urls = BTreeMap::new();
        let mut eu_pg = None;
        let (servers, redis_url) = match &options.own_servers {
            None => {
                let admin = pg_connect(&pg_admin_url()).await?;
                create_database(&admin, &global_db).await?;
                db_urls.insert(global_db.clone(), database_url(&global_db));
                let eu = if options.eu_server {
                    let pg = PrivatePostgres::start()
                        .await
                        .context("starting the EU regions' PostgreSQL server")?;
                    let admin = pg_connect(&pg.url("postgres")).await?;
                    Some((pg, admin))
                } else {
                    None
                };
                for (region, name) in &region_dbs {
                    match &eu {
                        Some((pg, eu_admin))
                            if region.jurisdiction() == idm_core::Jurisdiction::Eu =>
                        {
                            create_database(eu_admin, name).await?;
                            db_urls.insert(name.clone(), pg.url(name));
                        }
                        _ => {
                            create_database(&admin, name).await?;
                            db_urls.insert(name.clone(), database_url(name));
                        }
                    }
                }
                eu_pg = eu.map(|(pg, _)| pg);
                (None, options.redis_url.clone().unwrap_or_else(redis_url))
            }
            Some(own) => {
                let global_pg = PrivatePostgres::start().await?;
                let mut regional_pg = BTreeMap::new();
                for region in &own.separate_regions {
                    regional_pg.insert(*region, PrivatePostgres::start().await?);
                }
                let redis = PrivateRedis::start().await?;
                let admin = pg_connect(&global_pg.url("postgres")).await?;
                create_database(&admin, &global_db).await?;
                db_urls.insert(global_db.clone(), global_pg.url(&global_db));
                for (region, name) in &region_dbs {
                    let pg = regional_pg.get(region).unwrap_or(&global_pg);
                    let admin = pg_connect(&pg.url("postgres")).await?;
                    create_database(&admin, name).await?;
                    db_urls.insert(name.clone(), pg.url(name));
                }
                let url = redis.url();
                (
                    Some(Servers {
                        global_pg,
                        regional_pg,
                        redis,
                    }),
                    url,
                )
            }
        };
        let own_runtimes = servers.is_some();

        let nats = if options.nats_cluster_nodes > 1 {
            anyhow::ensure!(
                options.nats_tls.is_none(),
                "the test kit's NATS cluster runs without TLS"
            );
            NatsServer::start_cluster(&prefix, options.nats_cluster_nodes).await?
        } else {
            NatsServer::start(&prefix, options.nats_tls.clone()).await?
        };
        let smtp = smtp::SmtpSink::start().await?;
        let clock = idm_core::clock::Clock::system();
        let shutdown = CancellationToken::new();
        let dns = dns::DnsServer::start(shutdown.child_token()).await?;
        let operator_token = random_hex(16);
        let mut started = BTreeMap::new();
        let global_url = SecretString::from(db_urls[&global_db].clone());
        let session_master_key = master_key();
        let key_transport_key = master_key();
        // Pools of the services on the global database are kept small: a
        // test binary runs the shared platform and up to two of its own at
        // once against one PostgreSQL (100 connections by default), and
        // with four each they reached its limit (`too many clients`). The
        // stores keep four: their fair share of work is sized from it.
        let mut specs: Vec<(String, services::Spec)> = Vec::new();
        for region in &options.regions {
            specs.push((
                format!("user-store-{region}"),
                services::Spec::Store(idm_user_store::Config {
                    basics: basics(&prefix, &nats, Identity::UserStore(*region)),
                    region: *region,
                    jurisdiction: region.jurisdiction(),
                    database_label: None,
                    database_url: SecretString::from(db_urls[&region_dbs[region]].clone()),
                    pool_size: 4,
                    connection_max_age: std::time::Duration::from_secs(300),
                    password: idm_crypto::PasswordParams::default(),
                    max_parallel_hashes: options.store_hash_workers,
                    hash_queue: 0,
                    db_queue: options.store_db_queue,
                    migrate_on_start: true,
                    migrate_parallel: 2,
                }),
            ));
        }
        specs.push((
            "session".into(),
            services::Spec::Session(idm_session::Config {
                basics: basics(&prefix, &nats, Identity::Session),
                database_url: global_url.clone(),
                pool_size: 2,
                master_key: session_master_key.clone(),
                master_key_previous: None,
                key_transport_key: key_transport_key.clone(),
            }),
        ));
        specs.push((
            "user".into(),
            services::Spec::User(idm_user::Config {
                basics: basics(&prefix, &nats, Identity::User),
                database_url: global_url.clone(),
                pool_size: 2,
                master_key: master_key(),
                master_key_previous: None,
                default_region: Region::Weur,
            }),
        ));
        specs.push((
            "account".into(),
            services::Spec::Account(idm_account::Config {
                basics: basics(&prefix, &nats, Identity::Account),
                database_url: global_url.clone(),
                pool_size: 2,
                operator_token: SecretString::from(operator_token.clone()),
                default_plan: options.default_plan.clone(),
                dns_resolver: Some(dns.addr),
            }),
        ));
        specs.push((
            "auth".into(),
            services::Spec::Auth(Box::new(idm_auth::Config {
                basics: basics(&prefix, &nats, Identity::Auth),
                database_url: global_url.clone(),
                pool_size: 1,
                redis_url: SecretString::from(redis_url.clone()),
                redis_prefix: format!("{prefix}:"),
                master_key: master_key(),
                master_key_previous: None,
                min_sign_in: options.min_sign_in,
                min_verify: options.min_sign_in,
                magic_link_ttl: Duration::from_secs(900),
                email_code_ttl: Duration::from_secs(600),
                verification_ttl: Duration::from_secs(600),
                mfa_token_ttl: Duration::from_secs(300),
                max_code_attempts: 5,
                failure_limits: idm_auth::FailureLimits::default(),
                mail_from: "idmesh tests <no-reply@idmesh.example>".into(),
                mail_verified_senders: Vec::new(),
                mail_dkim: None,
                mail: options.auth_mail.clone().unwrap_or_else(|| {
                    idm_auth::MailTransport::Smtp(idm_auth::SmtpConfig {
                        host: "127.0.0.1".into(),
                        port: smtp.addr.port(),
                        tls: idm_auth::SmtpTls::None,
                        username: None,
                        password: None,
                        ca_file: None,
                    })
                }),
                clock: clock.clone(),
            })),
        ));
        specs.push((
            "deletion-worker".into(),
            // Short stall threshold, back-off and ack wait (docs/LIFECYCLE.md).
            services::Spec::Deletion(idm_deletion_worker::Config::for_tests(
                basics(&prefix, &nats, Identity::DeletionWorker),
                global_url.clone(),
            )),
        ));
        specs.push((
            "webhook".into(),
            services::Spec::Webhook(idm_webhook::Config {
                basics: basics(&prefix, &nats, Identity::Webhook),
                database_url: global_url.clone(),
                pool_size: options.webhook_pool_size,
                master_key: master_key(),
                master_key_previous: None,
                delivery: options.webhook_delivery.clone(),
            }),
        ));
        let mut edge_waf = options.edge_waf.clone();
        edge_waf.operator_token = Some(SecretString::from(operator_token.clone()));
        for replica in 0..options.edge_replicas {
            let mut config = edge_config(
                &prefix,
                &nats,
                &edge_waf,
                &options.edge_trusted_proxies,
                &key_transport_key,
            );
            config.redis_url = redis_url.clone();
            specs.push((
                format!("edge-guard-{replica}"),
                services::Spec::Edge(Box::new(config)),
            ));
        }
        // In order: stores, session, user, account, auth, the skeletons, edges.
        let mut edges = Vec::new();
        let mut edge_ops = Vec::new();
        let mut service_addrs = BTreeMap::new();
        for (name, spec) in specs {
            let is_edge = matches!(spec, services::Spec::Edge(_));
            let service =
                services::Service::start(&name, spec, own_runtimes, shutdown.child_token()).await?;
            if is_edge {
                edges.push(service.http_addr);
                edge_ops.extend(service.ops_addr);
            }
            service_addrs.insert(name.clone(), service.http_addr);
            started.insert(name, service);
        }
        let account_addr = service_addrs["account"];

        let http = reqwest::Client::builder()
            .user_agent("idm-testkit")
            .build()?;
        let redis_prefix = format!("{prefix}:");
        Ok(Self {
            prefix,
            redis_prefix,
            nats,
            global_db,
            region_dbs,
            edges,
            edge_ops,
            account_addr,
            service_addrs,
            operator_token,
            http,
            smtp,
            dns,
            clock,
            redis_url,
            db_urls,
            servers,
            eu_pg,
            shutdown,
            services: started,
            own_runtimes,
            edge_waf,
            edge_trusted_proxies: options.edge_trusted_proxies,
            session_master_key,
            session_master_key_previous: None,
            key_transport_key,
            cleaned_up: false,
            _slot: slot,
        })
    }

    /// Starts one more edge-guard replica on this platform.
    pub async fn add_edge(&mut self) -> anyhow::Result<SocketAddr> {
        self.add_edge_with(|_| {}).await
    }

    /// Starts one more edge-guard replica with its configuration adjusted by
    /// `tweak` (for example another `redis_url`). Its index in `edges` and
    /// `edge_ops` is the old `edges.len()`.
    pub async fn add_edge_with(
        &mut self,
        tweak: impl FnOnce(&mut idm_edge_guard::Config),
    ) -> anyhow::Result<SocketAddr> {
        let name = format!("edge-guard-{}", self.edges.len());
        let mut config = edge_config(
            &self.prefix,
            &self.nats,
            &self.edge_waf,
            &self.edge_trusted_proxies,
            &self.key_transport_key,
        );
        config.redis_url = self.redis_url.clone();
        tweak(&mut config);
        let edge = services::Service::start(
            &name,
            services::Spec::Edge(Box::new(config)),
            self.own_runtimes,
            self.shutdown.child_token(),
        )
        .await?;
        let addr = edge.http_addr;
        self.edges.push(addr);
        self.edge_ops.extend(edge.ops_addr);
        self.service_addrs.insert(name.clone(), addr);
        self.services.insert(name, edge);
        Ok(addr)
    }

    fn service(&mut self, name: &str) -> anyhow::Result<&mut services::Service> {
        self.services
            .get_mut(name)
            .with_context(|| format!("no service {name}"))
    }

    /// Stops one service (for example `user-store-weur`) as SIGTERM would.
    /// It stops answering at once; the rest of the platform keeps running.
    pub async fn stop_service(&self, name: &str) -> anyhow::Result<()> {
        self.services
            .get(name)
            .with_context(|| format!("no service {name}"))?
            .request_stop();
        // Let the unsubscribe reach the NATS server.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }

    /// Ends one service at once, as `kill -9` would (in-flight requests are
    /// abandoned, its connections drop). Needs [`Options::own_servers`]
    /// (services in runtimes of their own); otherwise it stops gracefully.
    pub async fn kill_service(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.kill().await;
        Ok(())
    }

    /// Starts a stopped or killed service again, on the same addresses.
    pub async fn start_service(&mut self, name: &str) -> anyhow::Result<()> {
        let parent = self.shutdown.clone();
        let service = self.service(name)?;
        if service.is_running() {
            // Stopped with `stop_service`: wait until it has drained.
            service.request_stop();
            service.stopped().await;
        }
        service.start_again(name, &parent).await
    }

    /// The master keys (current, previous) `service` (session, user or
    /// auth) runs with.
    pub fn master_keys(
        &mut self,
        service: &str,
    ) -> anyhow::Result<(SecretString, Option<SecretString>)> {
        self.service(service)?
            .master_keys()
            .with_context(|| format!("{service} has no master key"))
    }

    /// The master keys `service` runs with, as the service itself holds
    /// them (to tell which key a stored value is sealed under).
    pub fn sealing_keys(&mut self, service: &str) -> anyhow::Result<idm_crypto::MasterKeys> {
        let (current, previous) = self.master_keys(service)?;
        Ok(idm_crypto::MasterKeys::from_base64(
            current.expose_secret(),
            previous.as_ref().map(|k| k.expose_secret()),
        )?)
    }

    /// Stops `service` (session, user or auth), then starts it again with
    /// `current` as its master key and `previous` as the key before it: the
    /// operator's rotation step (or, with `previous` left out, its end).
    pub async fn restart_with_master_keys(
        &mut self,
        service: &str,
        current: SecretString,
        previous: Option<SecretString>,
    ) -> anyhow::Result<()> {
        let parent = self.shutdown.clone();
        if service == "session" {
            self.session_master_key = current.clone();
            self.session_master_key_previous = previous.clone();
        }
        let running = self.service(service)?;
        if running.is_running() {
            running.request_stop();
            running.stopped().await;
        }
        anyhow::ensure!(
            running.set_master_keys(current, previous),
            "{service} has no master key"
        );
        running.start_again(service, &parent).await
    }

    /// Restarts `region`'s store with its configuration changed by `tweak`
    /// (for example another announced jurisdiction); it keeps it until the
    /// next call.
    pub async fn restart_store_with(
        &mut self,
        region: Region,
        tweak: impl FnOnce(&mut idm_user_store::Config),
    ) -> anyhow::Result<()> {
        let name = format!("user-store-{region}");
        let service = self.service(&name)?;
        if let services::Spec::Store(config) = service.spec_mut() {
            tweak(config);
        }
        if service.is_running() {
            service.request_stop();
            service.stopped().await;
        }
        self.start_service(&name).await
    }

    /// The configuration `region`'s store runs with (to run its
    /// `migrate` command as an operator would).
    pub fn store_config(&mut self, region: Region) -> anyhow::Result<idm_user_store::Config> {
        match self.service(&format!("user-store-{region}"))?.spec_mut() {
            services::Spec::Store(config) => Ok(config.clone()),
            _ => anyhow::bail!("user-store-{region} is not a store"),
        }
    }

    pub async fn region_db(&self, region: Region) -> anyhow::Result<tokio_postgres::Client> {
        pg_connect(&self.db_urls[&self.region_dbs[&region]]).await
    }

    /// Rows of `table` in `issuer_id`'s schema of `region` that match
    /// `filter` (SQL after `WHERE`, with `$n` parameters); 0 when the issuer
    /// has no schema there: schemas are created where an issuer first
    /// places data (see docs/REGIONS.md "Schemas per issuer").
    pub async fn store_count(
        &self,
        region: Region,
        issuer_id: &str,
        table: &str,
        filter: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<i64> {
        let schema = format!("iss_{}", issuer_id.trim_start_matches("iss_"));
        let db = self.region_db(region).await?;
        let exists: bool = db
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{schema}.{table}")],
            )
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(db
            .query_one(
                &format!("SELECT count(*) FROM {schema}.{table} WHERE {filter}"),
                params,
            )
            .await?
            .get(0))
    }

    /// The regions where `issuer_id` has a schema.
    pub async fn provisioned_regions(&self, issuer_id: &str) -> anyhow::Result<Vec<Region>> {
        let schema = format!("iss_{}", issuer_id.trim_start_matches("iss_"));
        let mut found = Vec::new();
        for region in Region::ALL {
            let n: i64 = self
                .region_db(region)
                .await?
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                    &[&schema],
                )
                .await?
                .get(0);
            if n > 0 {
                found.push(region);
            }
        }
        Ok(found)
    }

    pub async fn global(&self) -> anyhow::Result<tokio_postgres::Client> {
        pg_connect(&self.db_urls[&self.global_db]).await
    }

    /// Every signing key the issuer has in the database (revoked ones too),
    /// unsealed with the session service's master key: what an attacker who
    /// stole the key would hold.
    pub async fn signing_keys(
        &self,
        issuer: &str,
    ) -> anyhow::Result<Vec<idm_crypto::session_token::RingKey>> {
        let issuer = idm_core::IssuerId::parse(issuer)?;
        let master = idm_crypto::MasterKeys::from_base64(
            self.session_master_key.expose_secret(),
            self.session_master_key_previous
                .as_ref()
                .map(|k| k.expose_secret()),
        )?;
        let rows = self
            .global()
            .await?
            .query(
                "SELECT kid, sealed_secret FROM session_keys.keys WHERE issuer_id = $1 ORDER BY created_at DESC",
                &[&issuer.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kid: String = row.get(0);
                let sealed: Vec<u8> = row.get(1);
                Ok(idm_session::open_stored_key(
                    &master, &issuer, &kid, &sealed,
                )?)
            })
            .collect()
    }

    /// A plain NATS connection on this platform's server, for tests that
    /// read the bus as an eavesdropper would. The one place to give it
    /// (a test-only user that hears every subject and may send nothing).
    pub async fn bus_observer(&self) -> anyhow::Result<async_nats::Client> {
        self.nats.wiretap().await
    }

    /// The newest event of `event_type` for `issuer` on this platform's stream.
    pub async fn last_event(
        &self,
        issuer: &str,
        event_type: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let js = async_nats::jetstream::new(self.nats.connect(Identity::Admin).await?);
        let stream = js
            .get_stream(idm_bus::events::stream_name(&self.prefix))
            .await?;
        let subject = format!("{}.events.{issuer}.{event_type}", self.prefix);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(serde_json::from_slice(&message.payload)?)),
            Err(_) => Ok(None),
        }
    }

    /// How many events of `event_type` for `issuer` the stream holds.
    pub async fn count_events(&self, issuer: &str, event_type: &str) -> anyhow::Result<u64> {
        use futures::StreamExt;
        let js = async_nats::jetstream::new(self.nats.connect(Identity::Admin).await?);
        let stream = js
            .get_stream(idm_bus::events::stream_name(&self.prefix))
            .await?;
        let subject = format!("{}.events.{issuer}.{event_type}", self.prefix);
        let mut subjects = stream.info_with_subjects(subject.clone()).await?;
        let mut total = 0;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry?;
            if name == subject {
                total += count as u64;
            }
        }
        Ok(total)
    }

    /// Deletes every Redis key of this platform, as a Redis restart without
    /// persistence would (other platforms' keys are untouched).
    pub async fn flush_redis(&self) -> anyhow::Result<usize> {
        delete_redis_keys(&self.redis_url, &self.redis_prefix).await
    }

    /// A bus connection logged in as `identity` (its seed, its inbox), for
    /// tests that call services directly.
    pub async fn bus(&self, identity: Identity) -> anyhow::Result<idm_bus::Bus> {
        Ok(idm_bus::Bus::connect(&basics(&self.prefix, &self.nats, identity), identity).await?)
    }

    /// Stops every service (waiting for in-flight work), then the platform's
    /// nats-server (its streams go with its directory), and drops the
    /// databases and the Redis keys of this platform (or its private
    /// servers, with their files). A platform dropped without `stop` (its
    /// test failed) is cleaned up by `Drop` instead, without the wait.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for service in self.services.values_mut() {
            tokio::time::timeout(Duration::from_secs(10), service.stopped())
                .await
                .context("a service did not stop within 10 s")?;
        }
        if self.servers.take().is_none() {
            delete_redis_keys(&self.redis_url, &self.redis_prefix).await?;
            drop_databases(&pg_admin_url(), &self.database_names()).await?;
        }
        self.nats.stop_in_place().await;
        self.cleaned_up = true;
        Ok(())
    }

    fn database_names(&self) -> Vec<String> {
        std::iter::once(&self.global_db)
            .chain(self.region_dbs.values())
            .cloned()
            .collect()
    }
}

/// The cleanup of a platform whose test ended without `stop` (an assertion
/// failed, or a `?` returned early): it runs while the test unwinds, so it
/// must neither panic nor need the test's runtime. Services are told to end
/// (those in the test's runtime end with it), the nats-server is killed by
/// `NatsServer`'s own `Drop`, private servers by theirs; the databases and
/// Redis keys on the shared servers are removed from a thread of its own
/// with a small runtime, waited for, so nothing is left behind when the
/// test binary exits. `ops/test.sh` still drops any `idmt_*` database a
/// killed run leaves.
impl Drop for Platform {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        self.shutdown.cancel();
        for service in self.services.values_mut() {
            service.abandon();
        }
        if self.servers.is_some() {
            return;
        }
        let names = self.database_names();
        let redis_url = self.redis_url.clone();
        let redis_prefix = self.redis_prefix.clone();
        let admin_url = pg_admin_url();
        let cleanup = std::thread::Builder::new()
            .name("platform-cleanup".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(120), async {
                        // Redis first: the databases' FORCE ends whatever
                        // connection a dying service still holds.
                        let keys = delete_redis_keys(&redis_url, &redis_prefix).await;
                        drop_databases(&admin_url, &names)
                            .await
                            .and(keys.map(|_| ()))
                    })
                    .await
                    .context("platform cleanup took over 120 s")?
                })
            });
        let outcome = match cleanup {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the cleanup thread panicked"))),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = outcome {
            eprintln!(
                "idm-testkit: cleaning up platform {} failed: {e:#}",
                self.prefix
            );
        }
    }
}

/// Deletes every Redis key under `prefix` (a platform's, on a Redis other
/// platforms share); returns how many there were.
async fn delete_redis_keys(url: &str, prefix: &str) -> anyhow::Result<usize> {
    // A node or a cluster alike: scan every node, delete per slot.
    let mut redis = idm_cache::Target::parse(url)?
        .connect(idm_cache::Settings::default())
        .await?;
    let keys = redis.scan_all(&format!("{prefix}*")).await?;
    let mut by_slot: BTreeMap<u16, Vec<&String>> = BTreeMap::new();
    for key in &keys {
        by_slot
            .entry(idm_cache::slot_of(key))
            .or_default()
            .push(key);
    }
    for same_slot in by_slot.values() {
        let _: () = redis::cmd("DEL")
            .arg(same_slot)
            .query_async(&mut redis)
            .await?;
    }
    Ok(keys.len())
}

/// Drops test databases, ending any connection still open to them. A few
/// at a time: on a busy server each drop waits for I/O, and one after
/// another nine of them took over 30 s under load.
async fn drop_databases(admin_url: &str, names: &[String]) -> anyhow::Result<()> {
    use futures::StreamExt;
    let drops = futures::stream::iter(names.iter().map(|name| async move {
        pg_connect(admin_url)
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping {name}"))
    }))
    .buffer_unordered(3)
    .collect::<Vec<_>>()
    .await;
    drops.into_iter().collect()
}

fn edge_config(
    prefix: &str,
    nats: &NatsServer,
    waf: &idm_edge_guard::waf::WafConfig,
    trusted_proxies: &[ipnet::IpNet],
    key_transport_key: &SecretString,
) -> idm_edge_guard::Config {
    idm_edge_guard::Config {
        basics: basics(prefix, nats, Identity::EdgeGuard),
        ops_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        trusted_proxies: trusted_proxies.to_vec(),
        country_header: "cf-ipcountry".into(),
        max_body_bytes: 64 * 1024,
        key_cache_ttl: Duration::from_secs(60),
        key_cache_capacity: 10_000,
        cookie_secure: true,
        issuer_host_suffix: Some(ISSUER_HOST_SUFFIX.into()),
        redis_url: redis_url(),
        redis_prefix: format!("{prefix}:"),
        waf: waf.clone(),
        key_transport_key: key_transport_key.clone(),
        revocation_capacity: 100_000,
        // As deployed: `/me` answers remembered per session for 2 s.
        me_cache_ttl: Duration::from_secs(2),
        me_cache_bytes: 4 << 20,
        // The test platform runs every region's store on this one host.
        jurisdiction: idm_core::Jurisdiction::Eu,
    }
}
