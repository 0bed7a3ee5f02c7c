//! A private three-node (or n-node) NATS cluster for a platform: the same
//! generated, authenticated config on every node, routes between them on
//! free ports (authenticated with the cluster's route password), and
//! JetStream on every node so streams can keep a copy on each. The platform
//! sees one [`NatsServer`] whose `url` lists every node; a test kills a node
//! with [`NatsServer::kill_node`].

use super::{add_wiretap_user, free_port, server_binary, NatsServer};
use anyhow::Context;
use idm_bus::nats_config::{self, ClusterNode, ClusterSettings, ServerSettings};
use idm_bus::Identity;
use std::time::Duration;

/// A node of the cluster other than the first (which is the
/// [`NatsServer`]'s own `child`).
pub(crate) struct Peer {
    url: String,
    child: Option<tokio::process::Child>,
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    tokio::process::Command::new(server_binary())
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", server_binary().display()))
}

impl NatsServer {
    /// Starts a cluster of `nodes` servers for `prefix` and waits until its
    /// JetStream has a leader. `url` lists every node (comma-separated, as
    /// `IDM_NATS_URL` does), and services keep `nodes` copies of each
    /// stream ([`NatsServer::stream_replicas`]). No TLS.
    pub async fn start_cluster(prefix: &str, nodes: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes >= 2, "a cluster has two nodes or more");
        let mut last_error = None;
        // Ports picked free can be taken before the servers bind them.
        for _ in 0..3 {
            match Self::try_start_cluster(prefix, nodes).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the NATS cluster did not start")))
    }

    async fn try_start_cluster(prefix: &str, count: usize) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("idmt-natsc-{prefix}-{}", crate::random_hex(4)));
        let mut nodes = Vec::new();
        for i in 1..=count {
            let client = free_port()?;
            let route = free_port()?;
            nodes.push(ClusterNode {
                name: format!("n{i}"),
                client_listen: format!("127.0.0.1:{client}"),
                route_listen: format!("127.0.0.1:{route}"),
                route_addr: format!("127.0.0.1:{route}"),
                // Streams can be placed on one node by tag.
                tags: vec![format!("node:n{i}")],
            });
        }
        let settings = ServerSettings {
            prefix: prefix.to_owned(),
            listen: nodes[0].client_listen.clone(),
            jetstream_dir: dir.join("jetstream"),
            tls: None,
        };
        let cluster = ClusterSettings {
            name: format!("idmt-{prefix}"),
            nodes: nodes.clone(),
            route_password: nats_config::route_password(&dir, false)?,
        };
        let (mut credentials, files) =
            nats_config::generate_cluster(&dir, &settings, &cluster, false)?;
        let wiretap_password = crate::random_hex(16);
        for file in &files {
            add_wiretap_user(file, &wiretap_password)?;
        }
        let urls: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats://{}", n.client_listen))
            .collect();
        let mut children = Vec::new();
        for (node, file) in nodes.iter().zip(&files) {
            children.push(spawn(
                file,
                &dir.join(format!("nats-server-{}.log", node.name)),
            )?);
        }
        let mut children = children.into_iter();
        let first = children.next();
        let peers = urls[1..]
            .iter()
            .cloned()
            .zip(children)
            .map(|(url, child)| Peer {
                url,
                child: Some(child),
            })
            .collect();
        // The first node's config is the server's config (a restart of the
        // server restarts the first node).
        credentials.config_file = files[0].clone();
        let server = Self {
            url: urls.join(","),
            dir,
            prefix: prefix.to_owned(),
            credentials,
            wiretap_password,
            tls: None,
            child: first,
            peers,
        };
        match server.wait_cluster_ready(&urls).await {
            Ok(()) => Ok(server),
            Err(e) => {
                let mut logs = String::new();
                for node in &nodes {
                    let path = server.dir.join(format!("nats-server-{}.log", node.name));
                    logs.push_str(&format!(
                        "--- {}\n{}",
                        node.name,
                        std::fs::read_to_string(path).unwrap_or_default()
                    ));
                }
                Err(e.context(format!("nats-server logs:\n{logs}")))
            }
        }
    }

    /// Ready when every node answers a JetStream request with "stream not
    /// found": the cluster has elected its JetStream meta leader.
    async fn wait_cluster_ready(&self, urls: &[String]) -> anyhow::Result<()> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        use async_nats::jetstream::ErrorCode;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let stream = idm_bus::Stream::Events.name(&self.prefix);
        for url in urls {
            loop {
                let options = idm_bus::connect_options(
                    Identity::Admin,
                    &self.prefix,
                    &self.auth(Identity::Admin),
                )?;
                if let Ok(client) = options.connect(url.as_str()).await {
                    let js = async_nats::jetstream::new(client);
                    match js.get_stream(&stream).await {
                        Ok(_) => break,
                        Err(e) => {
                            if let GetStreamErrorKind::JetStream(js_error) = e.kind() {
                                if js_error.error_code() == ErrorCode::STREAM_NOT_FOUND {
                                    break;
                                }
                            }
                        }
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("NATS cluster node {url} not ready within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// How many copies of each stream the platform's services keep: one per
    /// node.
    pub fn stream_replicas(&self) -> usize {
        1 + self.peers.len()
    }

    /// Each node's client URL (one for a single server).
    pub fn node_urls(&self) -> Vec<String> {
        self.url.split(',').map(str::to_owned).collect()
    }

    /// Kills node `index` (0 is the first) at once, as a crash or a lost
    /// machine would (`SIGKILL`: no goodbye to its clients or its peers).
    /// By process id, so a test can do it while the platform is shared.
    pub async fn kill_node(&self, index: usize) -> anyhow::Result<()> {
        let child = if index == 0 {
            self.child.as_ref()
        } else {
            self.peers
                .get(index - 1)
                .with_context(|| format!("no node {index}"))?
                .child
                .as_ref()
        };
        let pid = child
            .and_then(tokio::process::Child::id)
            .with_context(|| format!("node {index} is not running"))?;
        let status = tokio::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -KILL {pid}: {status}");
        Ok(())
    }

    /// The client URL of node `index`.
    pub fn node_url(&self, index: usize) -> Option<String> {
        if index == 0 {
            self.node_urls().into_iter().next()
        } else {
            self.peers.get(index - 1).map(|p| p.url.clone())
        }
    }
}
