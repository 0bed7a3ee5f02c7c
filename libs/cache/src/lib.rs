//! The Redis connection every service shares: one node (the default) or a
//! Redis Cluster, chosen by the URL.
//!
//! - `redis://host:port/db`, `rediss://…`: one node (or a primary behind a
//!   proxy), through a reconnecting `ConnectionManager`.
//! - `redis+cluster://[user:password@]host:port[,host:port…]`,
//!   `rediss+cluster://…`: a Redis Cluster, through the crate's cluster
//!   client; the listed nodes are seeds, the topology is discovered.
//!
//! [`Connection`] implements `ConnectionLike`, so commands, pipelines and
//! scripts run on either unchanged. What a cluster asks of the callers is
//! that every script and pipeline touches one slot: keys that go together
//! share a hash tag ([`tagged`]); the few operations that must see every
//! node (a key scan, a marker per node) are methods here.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis URL is not usable: {0}")]
    Url(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// How a connection waits and retries.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub connection_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    /// The longest pause between reconnection attempts.
    pub max_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            retries: 2,
            max_delay: Duration::from_millis(500),
        }
    }
}

/// Where the data lives, parsed from a URL (see the module docs).
#[derive(Clone)]
pub enum Target {
    Single(Box<redis::Client>),
    Cluster(Vec<String>),
}

impl std::fmt::Debug for Target {
    // Never the URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Single(_) => f.write_str("Target::Single"),
            Target::Cluster(nodes) => write!(f, "Target::Cluster({} seeds)", nodes.len()),
        }
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, CacheError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(CacheError::Url("no scheme".into()));
        };
        let node_scheme = match scheme {
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => {
                let client =
                    redis::Client::open(url).map_err(|e| CacheError::Url(e.to_string()))?;
                return Ok(Target::Single(Box::new(client)));
            }
        };
        // `user:pw@h1:1,h2:2/…`: the credentials (and query) apply to every
        // seed; a path would name a database, which a cluster does not have.
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(CacheError::Url(
                "a cluster URL names no database (no path)".into(),
            ));
        }
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|host| {
                let mut node = format!("{node_scheme}://");
                if let Some(c) = credentials {
                    node.push_str(c);
                    node.push('@');
                }
                node.push_str(host);
                if let Some(q) = query {
                    node.push_str("/?");
                    node.push_str(q);
                }
                node
            })
            .collect();
        if nodes.is_empty() {
            return Err(CacheError::Url("a cluster URL names no node".into()));
        }
        for node in &nodes {
            url::Url::parse(node).map_err(|e| CacheError::Url(format!("cluster node: {e}")))?;
        }
        Ok(Target::Cluster(nodes))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Opens a connection (the single-node manager reconnects by itself; the
    /// cluster client follows the topology and reconnects per node).
    pub async fn connect(&self, settings: Settings) -> Result<Connection, CacheError> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connection_timeout))
                    .set_response_timeout(Some(settings.response_timeout))
                    .set_number_of_retries(settings.retries as usize)
                    .set_max_delay(settings.max_delay);
                let manager =
                    ConnectionManager::new_with_config(client.as_ref().clone(), config).await?;
                Ok(Connection::Single(manager))
            }
            Target::Cluster(nodes) => {
                let max_wait = u64::try_from(settings.max_delay.as_millis()).unwrap_or(u64::MAX);
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(settings.connection_timeout)
                    .response_timeout(settings.response_timeout)
                    .retries(settings.retries)
                    .max_retry_wait(max_wait)
                    .build()?;
                let connection = client.get_async_connection().await?;
                Ok(Connection::Cluster(connection))
            }
        }
    }
}

/// Where a URL points, for logs and metric labels: `host:port` (or the
/// socket path) of a node, `cluster host:port,…` of a cluster's seeds;
/// never credentials.
pub fn label(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.ends_with("+cluster") {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let hosts = authority
                .rsplit_once('@')
                .map_or(authority, |(_, hosts)| hosts);
            return format!("cluster {hosts}");
        }
    }
    match url::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => format!("{host}:{}", u.port().unwrap_or(6379)),
            None => u.path().to_owned(),
        },
        Err(_) => "unparsable".to_owned(),
    }
}

/// A key whose slot is chosen by `tag`: every key built with the same tag
/// lands on the same cluster node, so one script or pipeline may touch them
/// together. `prefix{tag}rest`; harmless on a single node.
pub fn tagged(prefix: &str, tag: &str, rest: &str) -> String {
    format!("{prefix}{{{tag}}}{rest}")
}

/// The cluster slot of `key` (CRC16/XMODEM of its hash tag, or of the whole
/// key, modulo 16384: the Redis Cluster specification).
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|b| *b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16384
}

/// A primary of the cluster and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub host: String,
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
}

impl Primary {
    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|(start, end)| (*start..=*end).contains(&slot))
    }
}

#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// The cluster's primaries and their slots (`CLUSTER SLOTS`); empty on
    /// a single node.
    pub async fn primaries(&mut self) -> RedisResult<Vec<Primary>> {
        let Connection::Cluster(cluster) = self else {
            return Ok(Vec::new());
        };
        let value = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let ranges = parse_cluster_slots(value)?;
        let mut primaries: Vec<Primary> = Vec::new();
        for (start, end, (host, port)) in ranges {
            match primaries
                .iter_mut()
                .find(|p| p.host == host && p.port == port)
            {
                Some(p) => p.slots.push((start, end)),
                None => primaries.push(Primary {
                    host,
                    port,
                    slots: vec![(start, end)],
                }),
            }
        }
        Ok(primaries)
    }

    /// One key per node holding data, each stored on that node: `base` on a
    /// single node; `base{n<i>}` on a cluster, with `i` picked so the key's
    /// slot belongs to that primary. A marker set under every one of them
    /// tells, when one goes missing, that some node came back empty.
    pub async fn per_node_keys(&mut self, base: &str) -> RedisResult<Vec<String>> {
        if let Connection::Single(_) = self {
            return Ok(vec![base.to_owned()]);
        }
        let primaries = self.primaries().await?;
        let mut keys = Vec::with_capacity(primaries.len());
        for primary in &primaries {
            // 16384 slots over a handful of primaries: a tag for each is
            // found within a few dozen tries.
            let found = (0u32..1_000_000)
                .map(|i| tagged(base, &format!("n{i}"), ""))
                .find(|key| primary.serves(slot_of(key)));
            if let Some(key) = found {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Every key matching `pattern`, on every node (`SCAN`, a page of 1,000
    /// at a time). For rare, operator-driven work: never a request path.
    pub async fn scan_all(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut found = Vec::new();
        match self {
            Connection::Single(single) => {
                scan_node(single, None, pattern, &mut found).await?;
            }
            Connection::Cluster(_) => {
                let primaries = self.primaries().await?;
                if let Connection::Cluster(cluster) = self {
                    for p in primaries {
                        scan_node(cluster, Some((p.host, p.port)), pattern, &mut found).await?;
                    }
                }
            }
        }
        Ok(found)
    }
}

/// Scans one node: the single-node connection, or the cluster primary at
/// `address`.
async fn scan_node<C: ConnectionLike + RouteTo>(
    conn: &mut C,
    address: Option<(String, u16)>,
    pattern: &str,
    found: &mut Vec<String>,
) -> RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let value = conn.run_on(cmd, address.clone()).await?;
        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(value)?;
        found.extend(keys);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Runs a command on one named node (a cluster) or the only one.
trait RouteTo {
    fn run_on(&mut self, cmd: Cmd, address: Option<(String, u16)>) -> RedisFuture<'_, Value>;
}

impl RouteTo for ConnectionManager {
    fn run_on(&mut self, cmd: Cmd, _address: Option<(String, u16)>) -> RedisFuture<'_, Value> {
        Box::pin(async move { cmd.query_async(self).await })
    }
}

impl RouteTo for ClusterConnection {
    fn run_on(&mut self, cmd: Cmd, address: Option<(String, u16)>) -> RedisFuture<'_, Value> {
        Box::pin(async move {
            let routing = match address {
                Some((host, port)) => {
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port })
                }
                None => RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            };
            self.route_command(cmd, routing).await
        })
    }
}

/// A slot range and the address of the primary serving it.
type SlotRange = (u16, u16, (String, u16));

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]` →
/// (start, end, primary address).
fn parse_cluster_slots(value: Value) -> RedisResult<Vec<SlotRange>> {
    let rows: Vec<Vec<Value>> = redis::from_redis_value(value)?;
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let mut fields = row.into_iter();
        let (Some(start), Some(end), Some(primary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let start: u16 = redis::from_redis_value(start)?;
        let end: u16 = redis::from_redis_value(end)?;
        let primary: Vec<Value> = redis::from_redis_value(primary)?;
        let mut primary = primary.into_iter();
        let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
            continue;
        };
        let host: String = redis::from_redis_value(host)?;
        let port: u16 = redis::from_redis_value(port)?;
        ranges.push((start, end, (host, port)));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_one_node_or_a_cluster() -> Result<(), CacheError> {
        assert!(!Target::parse("redis://127.0.0.1:6379/2")?.is_cluster());
        assert!(!Target::parse("rediss://cache.internal:6380")?.is_cluster());
        let nodes = |url: &str| match Target::parse(url) {
            Ok(Target::Cluster(nodes)) => nodes,
            _ => Vec::new(),
        };
        assert_eq!(
            nodes("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001"),
            [
                "redis://app:s3cret@10.0.0.1:7000",
                "redis://app:s3cret@10.0.0.2:7001"
            ]
        );
        assert_eq!(
            nodes("rediss+cluster://h1:7000/?insecure"),
            ["rediss://h1:7000/?insecure"]
        );
        Ok(())
    }

    #[test]
    fn unusable_urls_are_refused_without_echoing_them() {
        for bad in [
            "no-scheme",
            "redis+cluster://",
            "redis+cluster://h1:7000/3",
            "redis+cluster://h1:notaport",
        ] {
            let error = Target::parse(bad).err().map(|e| e.to_string());
            assert!(error.is_some(), "{bad} was accepted");
        }
        let error = Target::parse("redis+cluster://u:hunter2@h1:notaport")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn labels_never_carry_credentials() {
        assert_eq!(
            label("redis://user:hunter2@cache.internal:6380/2"),
            "cache.internal:6380"
        );
        assert_eq!(label("redis://127.0.0.1"), "127.0.0.1:6379");
        assert_eq!(
            label("redis+cluster://app:hunter2@10.0.0.1:7000,10.0.0.2:7001/"),
            "cluster 10.0.0.1:7000,10.0.0.2:7001"
        );
    }

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(
            slot_of("{user1000}.followers"),
            slot_of("{user1000}.following")
        );
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(
            slot_of("foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        );
        assert_eq!(
            tagged("idm:waf:", "issuer", ":bans"),
            "idm:waf:{issuer}:bans"
        );
    }
}
