//! A private Redis Cluster of three primaries (no replicas, nothing on
//! disk), for tests of the platform on a cluster. One primary can be
//! restarted empty while the others keep serving their slots
//! (`cluster-require-full-coverage no`), as a node of a real cluster would
//! after a crash without persistence.

use crate::procs::{free_port, TempDir};
use anyhow::Context;
use std::time::Duration;

struct Node {
    port: u16,
    child: Option<tokio::process::Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts `primaries` redis-servers in cluster mode and joins them
    /// (`redis-cli --cluster create`), the slots split evenly.
    pub async fn start(primaries: usize) -> anyhow::Result<Self> {
        let mut cluster = Self {
            nodes: Vec::with_capacity(primaries),
            dir: TempDir::new("redis-cluster")?,
        };
        for _ in 0..primaries {
            let mut node = Node {
                port: free_port()?,
                child: None,
            };
            cluster.spawn(&mut node).await?;
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        anyhow::ensure!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    async fn spawn(&self, node: &mut Node) -> anyhow::Result<()> {
        let port = node.port.to_string();
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(format!("nodes-{port}.conf"))
            .arg("--dir")
            .arg(&self.dir.0)
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (cluster mode)")?;
        node.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ping(node.port).await.is_err() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "redis-server on {port} not ready within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub async fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut all_ok = true;
            for node in &self.nodes {
                let info = cluster_info(node.port).await.unwrap_or_default();
                all_ok &= info.contains("cluster_state:ok");
            }
            if all_ok {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the Redis cluster did not reach cluster_state:ok within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills node `index` (SIGKILL) and starts it again on the same port
    /// with its cluster configuration but no data: it serves its slots
    /// again, empty.
    pub async fn restart_empty(&mut self, index: usize) -> anyhow::Result<()> {
        let mut node = Node {
            port: self.nodes.get(index).context("no such node")?.port,
            child: None,
        };
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill().await;
        }
        self.spawn(&mut node).await?;
        self.nodes[index] = node;
        self.wait_until_ok().await
    }

    /// How many keys node `index` holds.
    pub async fn keys_on(&self, index: usize) -> anyhow::Result<usize> {
        let port = self.nodes.get(index).context("no such node")?.port;
        let mut conn = connection(port).await?;
        Ok(redis::cmd("DBSIZE").query_async(&mut conn).await?)
    }
}

async fn connection(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    Ok(tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await??)
}

async fn ping(port: u16) -> anyhow::Result<()> {
    let mut conn = connection(port).await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

async fn cluster_info(port: u16) -> anyhow::Result<String> {
    let mut conn = connection(port).await?;
    Ok(redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await?)
}
