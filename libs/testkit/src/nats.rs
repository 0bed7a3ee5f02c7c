//! A private nats-server per platform: a free port, a temporary directory
//! for its config, seeds and JetStream files, and the configuration
//! generated from the bus permission table for the platform's prefix, so
//! every test runs against the same authenticated, authorised bus as a
//! deployment. The server is killed when the platform stops or is dropped.

use anyhow::Context;
use idm_bus::nats_config::{self, Generated, ServerSettings, ServerTls};
use idm_bus::Identity;
use idm_core::config::NatsAuth;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;

/// The nats-server binary: `IDM_TEST_NATS_SERVER`, else Debian's
/// `/usr/sbin/nats-server`, else `nats-server` on the `PATH`.
fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("IDM_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("nats-server")
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Server-side TLS for a platform's NATS (certificate files made by the
/// test).
#[derive(Debug, Clone)]
pub struct NatsTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA the services are given to check the server.
    pub ca_file: PathBuf,
}

pub struct NatsServer {
    /// `nats://127.0.0.1:<port>` (or `tls://…` with TLS).
    pub url: String,
    /// Config, seeds, JetStream files and the server's log.
    pub dir: PathBuf,
    /// The subject prefix the config was generated for.
    pub prefix: String,
    credentials: Generated,
    wiretap_password: String,
    tls: Option<NatsTls>,
    child: Option<tokio::process::Child>,
    /// The other nodes of a cluster (see `start_cluster`); none for one server.
    peers: Vec<cluster::Peer>,
}

impl NatsServer {
    /// What a service of `identity` is configured with to use this server
    /// (loopback HTTP on any port).
    pub fn basics(
        &self,
        identity: Identity,
        request_timeout: Duration,
    ) -> idm_core::config::ServiceBasics {
        idm_core::config::ServiceBasics {
            nats_url: self.url.clone(),
            nats_stream_replicas: self.stream_replicas(),
            nats_stream_placement: Default::default(),
            nats_auth: self.auth(identity),
            subject_prefix: self.prefix.clone(),
            http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            request_timeout,
        }
    }

    /// Starts a server for `prefix` and waits until JetStream answers.
    pub async fn start(prefix: &str, tls: Option<NatsTls>) -> anyhow::Result<Self> {
        let mut last_error = None;
        // A port picked free can be taken by someone else before the server
        // binds it; try a few.
        for _ in 0..5 {
            match Self::try_start(prefix, tls.clone()).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    async fn try_start(prefix: &str, tls: Option<NatsTls>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("idmt-nats-{prefix}-{}", crate::random_hex(4)));
        let port = free_port()?;
        let settings = ServerSettings {
            prefix: prefix.to_owned(),
            listen: format!("127.0.0.1:{port}"),
            jetstream_dir: dir.join("jetstream"),
            tls: tls.as_ref().map(|t| ServerTls {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                ca_file: None,
                verify_clients: false,
            }),
        };
        let credentials = nats_config::generate(&dir, &settings, false)?;
        let wiretap_password = crate::random_hex(16);
        add_wiretap_user(&credentials.config_file, &wiretap_password)?;
        let log = std::fs::File::create(dir.join("nats-server.log"))?;
        let child = tokio::process::Command::new(server_binary())
            .arg("-c")
            .arg(&credentials.config_file)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", server_binary().display()))?;
        let scheme = if tls.is_some() { "tls" } else { "nats" };
        let mut server = Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            prefix: prefix.to_owned(),
            credentials,
            wiretap_password,
            tls,
            child: Some(child),
            peers: Vec::new(),
        };
        match server.wait_ready().await {
            Ok(()) => Ok(server),
            Err(e) => {
                let log =
                    std::fs::read_to_string(server.dir.join("nats-server.log")).unwrap_or_default();
                server.kill().await;
                Err(e.context(format!("nats-server log:\n{log}")))
            }
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let stream = idm_bus::Stream::Events.name(&self.prefix);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("nats-server exited: {status}");
                }
            }
            if let Ok(client) = self.connect(Identity::Admin).await {
                let js = async_nats::jetstream::new(client);
                match js.get_stream(&stream).await {
                    // Answered, with the stream or with "not found": JetStream is up.
                    Ok(_) => return Ok(()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)
                        ) =>
                    {
                        return Ok(())
                    }
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("nats-server at {} not ready within 15 s", self.url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How `identity` logs in: its seed, and the CA when TLS is on.
    pub fn auth(&self, identity: Identity) -> NatsAuth {
        NatsAuth {
            nkey_seed: self.credentials.seed(identity).cloned(),
            tls_ca_file: self.tls.as_ref().map(|t| t.ca_file.clone()),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }

    /// The seed file of `identity` (as a deployment would mount it).
    pub fn seed_file(&self, identity: Identity) -> PathBuf {
        nats_config::seed_file(&self.dir, identity)
    }

    pub fn config_file(&self) -> &Path {
        &self.credentials.config_file
    }

    /// A plain client logged in as `identity`, with its own inbox prefix.
    pub async fn connect(&self, identity: Identity) -> anyhow::Result<async_nats::Client> {
        let options = idm_bus::connect_options(identity, &self.prefix, &self.auth(identity))?;
        Ok(options.connect(idm_bus::server_addrs(&self.url)?).await?)
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats-server.log"))?;
        let child = tokio::process::Command::new(server_binary())
            .arg("-c")
            .arg(&self.credentials.config_file)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", server_binary().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server as an operator's restart would (`SIGTERM`: it
    /// closes every client connection and writes out its JetStream files).
    /// Clients see a disconnect; the streams stay on disk.
    pub async fn shut_down(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::procs::terminate(&mut child, Duration::from_secs(10)).await;
        }
    }

    /// Starts the server again (same port, config and JetStream directory)
    /// and waits until JetStream answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "nats-server is running");
        self.spawn()?;
        self.wait_ready().await
    }

    /// A client that hears every subject, reply inboxes included, and may
    /// send nothing: an eavesdropper on the wire (or on a compromised NATS
    /// server), for tests that show what it learns. Exists only in the test
    /// kit's server config, never in a deployment's.
    pub async fn wiretap(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::with_user_and_password(
            WIRETAP_USER.to_owned(),
            self.wiretap_password.clone(),
        );
        if let Some(tls) = &self.tls {
            options = options
                .add_root_certificates(tls.ca_file.clone())
                .require_tls(true);
        }
        Ok(options.connect(&self.url).await?)
    }

    /// Kills the server and removes its directory.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    /// [`Self::stop`] for a server owned by something that is itself
    /// dropped later (the platform, whose `Drop` is its panic cleanup).
    pub(crate) async fn stop_in_place(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The server process's id (the shared platform's reaper ends it by id
    /// once the test process is gone).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const WIRETAP_USER: &str = "wiretap";

/// Adds the test-only eavesdropper (subscribe to everything, publish
/// nothing) to a generated server config.
fn add_wiretap_user(config_file: &Path, password: &str) -> anyhow::Result<()> {
    let config = std::fs::read_to_string(config_file)?;
    let end = "  ]\n}\n";
    let body = config
        .strip_suffix(end)
        .context("the generated config does not end with its user list")?;
    let wiretap = format!(
        "    # test kit only: an eavesdropper\n    {{\n      user: \"{WIRETAP_USER}\"\n      password: \"{password}\"\n      permissions: {{\n        publish: {{ deny: [\">\"] }}\n        subscribe: {{ allow: [\">\"] }}\n      }}\n    }}\n"
    );
    std::fs::write(config_file, format!("{body}{wiretap}{end}"))?;
    Ok(())
}
