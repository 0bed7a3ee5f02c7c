//! NATS credentials and server configuration, generated from the permission
//! table ([`crate::acl`]).
//!
//! Each identity is a NATS user authenticated by an nkey (an Ed25519 key
//! pair): the server config holds only public keys, each service holds its
//! own seed, and the server proves possession by a signed nonce, so nothing
//! secret is ever sent to the server or kept in its config. The config has
//! no `no_auth_user`, so anonymous connections are refused.
//!
//! Output of [`generate`] in the chosen directory:
//!
//! - `nats-server.conf`: listen address, JetStream, optional TLS, and one
//!   user per identity with its publish/subscribe permissions;
//! - `nkeys/<identity>.nk` (mode 600): that identity's seed, one line.
//!
//! Existing seeds are kept (re-running only rewrites the config) unless
//! `rotate` is set.

use crate::acl::{permissions, Identity};
use crate::BusError;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The server side of a deployment's bus.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The deployment's subject prefix (`IDM_SUBJECT_PREFIX`).
    pub prefix: String,
    /// `host:port` the server listens on.
    pub listen: String,
    /// Where JetStream keeps its files.
    pub jetstream_dir: PathBuf,
    /// Serve clients over TLS.
    pub tls: Option<ServerTls>,
}

/// TLS for client connections. With `ca_file` and `verify_clients`, every
/// client must also present a certificate signed by that CA.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub verify_clients: bool,
}

/// What [`generate`] wrote.
pub struct Generated {
    pub config_file: PathBuf,
    pub seed_files: BTreeMap<Identity, PathBuf>,
    pub seeds: BTreeMap<Identity, SecretString>,
}

impl Generated {
    pub fn seed(&self, identity: Identity) -> Option<&SecretString> {
        self.seeds.get(&identity)
    }
}

pub const CONFIG_FILE: &str = "nats-server.conf";
pub const SEED_DIR: &str = "nkeys";

/// The seed file of `identity` under a generated directory.
pub fn seed_file(dir: &Path, identity: Identity) -> PathBuf {
    dir.join(SEED_DIR).join(format!("{}.nk", identity.name()))
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> BusError {
    BusError::Credentials {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A new user key pair straight from the OS CSPRNG: generated once per
/// deployment and long-lived, so the system call costs nothing that matters.
fn new_user_key() -> Result<nkeys::KeyPair, BusError> {
    use rand::TryRng as _;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(raw.as_mut())
        .map_err(|e| BusError::Credentials {
            path: String::new(),
            reason: format!("no randomness from the OS: {e}"),
        })?;
    nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, *raw).map_err(|e| {
        BusError::Credentials {
            path: String::new(),
            reason: e.to_string(),
        }
    })
}

/// Parses a user seed (`SU…`) and returns its key pair.
pub fn user_key_from_seed(seed: &str) -> Result<nkeys::KeyPair, String> {
    let pair = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| e.to_string())?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err("not a user seed (SU…)".into());
    }
    Ok(pair)
}

/// Writes `content` to `path` via a temporary file and a rename, with `mode`.
fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), BusError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(content).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

fn create_private_dir(dir: &Path) -> Result<(), BusError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(())
}

/// Writes the server config and one seed per identity into `dir` (created
/// if needed, mode 700). Seeds already there are reused unless `rotate`.
pub fn generate(
    dir: &Path,
    settings: &ServerSettings,
    rotate: bool,
) -> Result<Generated, BusError> {
    validate_prefix(&settings.prefix)?;
    create_private_dir(dir)?;
    create_private_dir(&dir.join(SEED_DIR))?;
    let mut users = Vec::new();
    let mut seed_files = BTreeMap::new();
    let mut seeds = BTreeMap::new();
    for identity in Identity::all() {
        let path = seed_file(dir, identity);
        let existing = if rotate {
            None
        } else {
            match std::fs::read_to_string(&path) {
                Ok(seed) => Some(user_key_from_seed(&seed).map_err(|e| io_error(&path, e))?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_error(&path, e)),
            }
        };
        let pair = match existing {
            Some(pair) => pair,
            None => new_user_key()?,
        };
        let seed = SecretString::from(pair.seed().map_err(|e| io_error(&path, e))?);
        write_file(
            &path,
            format!("{}\n", seed.expose_secret()).as_bytes(),
            0o600,
        )?;
        users.push((identity, pair.public_key()));
        seed_files.insert(identity, path);
        seeds.insert(identity, seed);
    }
    let config_file = dir.join(CONFIG_FILE);
    // Public keys and permissions only: readable by the server whatever its user.
    write_file(&config_file, render(settings, &users).as_bytes(), 0o644)?;
    Ok(Generated {
        config_file,
        seed_files,
        seeds,
    })
}

/// A cluster of NATS servers (JetStream replicated across them).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The cluster's name (the same on every node).
    pub name: String,
    pub nodes: Vec<ClusterNode>,
    /// Shared by the nodes to authenticate their routes to each other.
    pub route_password: SecretString,
}

/// One server of a [`ClusterSettings`].
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Unique in the cluster (`nats-1`); names its config file and its
    /// JetStream directory.
    pub name: String,
    /// `host:port` this node serves clients on.
    pub client_listen: String,
    /// `host:port` this node listens on for routes from the other nodes.
    pub route_listen: String,
    /// `host:port` where the other nodes reach `route_listen`.
    pub route_addr: String,
    /// The server's tags (`jurisdiction:eu`, `region:weur`): streams are
    /// placed on servers by tag (`<P>_NATS_STREAM_TAGS`).
    pub tags: Vec<String>,
}

const ROUTE_USER: &str = "route";
/// The cluster's route password in a generated directory (kept across runs).
pub const ROUTE_SECRET_FILE: &str = "cluster-route.secret";

/// The config file of cluster node `name` in a generated directory.
pub fn node_config_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("nats-server-{name}.conf"))
}

/// The route password of the cluster generated in `dir`: the one already
/// there, else a new one (32 hex characters from the OS CSPRNG, safe in a
/// route URL), written mode 600.
pub fn route_password(dir: &Path, rotate: bool) -> Result<SecretString, BusError> {
    let path = dir.join(ROUTE_SECRET_FILE);
    if !rotate {
        match std::fs::read_to_string(&path) {
            Ok(existing) if !existing.trim().is_empty() => {
                return Ok(SecretString::from(existing.trim().to_owned()))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    use rand::TryRng as _;
    let mut raw = zeroize::Zeroizing::new([0u8; 16]);
    rand::rngs::SysRng
        .try_fill_bytes(raw.as_mut())
        .map_err(|e| io_error(&path, format!("no randomness from the OS: {e}")))?;
    let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    create_private_dir(dir)?;
    write_file(&path, format!("{password}\n").as_bytes(), 0o600)?;
    Ok(SecretString::from(password))
}

/// [`generate`] for a cluster: the seeds (and the single-server config) as
/// [`generate`] writes them, plus `nats-server-<node>.conf` per node, mode
/// 600 since it holds the route password. Returns the node config files in
/// the order of `cluster.nodes`.
pub fn generate_cluster(
    dir: &Path,
    settings: &ServerSettings,
    cluster: &ClusterSettings,
    rotate: bool,
) -> Result<(Generated, Vec<PathBuf>), BusError> {
    let mut names = std::collections::BTreeSet::new();
    for node in &cluster.nodes {
        if !names.insert(node.name.as_str()) || node.name.is_empty() {
            return Err(BusError::Credentials {
                path: String::new(),
                reason: format!("cluster node name '{}' empty or repeated", node.name),
            });
        }
    }
    let generated = generate(dir, settings, rotate)?;
    let users: Vec<(Identity, String)> = generated
        .seeds
        .iter()
        .map(|(identity, seed)| {
            user_key_from_seed(seed.expose_secret())
                .map(|pair| (*identity, pair.public_key()))
                .map_err(|e| io_error(&seed_file(dir, *identity), e))
        })
        .collect::<Result<_, _>>()?;
    let mut files = Vec::new();
    for node in &cluster.nodes {
        let path = node_config_file(dir, &node.name);
        write_file(
            &path,
            render_node(settings, Some((cluster, node)), &users).as_bytes(),
            0o600,
        )?;
        files.push(path);
    }
    Ok((generated, files))
}

fn validate_prefix(prefix: &str) -> Result<(), BusError> {
    let ok = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BusError::Credentials {
            path: String::new(),
            reason: format!("subject prefix '{prefix}': use letters, digits, '-' and '_' only"),
        })
    }
}

/// A quoted string in NATS config syntax (JSON escaping is accepted).
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

fn quoted_path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// An allow list, or "deny everything" when it is empty (an empty allow list
/// would mean no restriction at all).
fn rule(items: &[String]) -> String {
    if items.is_empty() {
        format!("{{ deny: {} }}", list(&[">".to_owned()]))
    } else {
        format!("{{ allow: {} }}", list(items))
    }
}

/// The nats-server (2.9+) configuration for `users` (identity, public key).
pub fn render(settings: &ServerSettings, users: &[(Identity, String)]) -> String {
    render_node(settings, None, users)
}

/// [`render`], as one node of `cluster` when given: a server name, and
/// routes to the other nodes (authenticated with the cluster's route
/// password, so nobody else can join the cluster and hear its traffic).
fn render_node(
    settings: &ServerSettings,
    node: Option<(&ClusterSettings, &ClusterNode)>,
    users: &[(Identity, String)],
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `idmctl nats-config` for subject prefix {} from the permission\n\
         # table in libs/bus/src/acl.rs. Do not edit: regenerate. {}\n\n",
        quoted(&settings.prefix),
        if node.is_some() {
            "Holds the cluster's route password."
        } else {
            "Holds public keys only."
        }
    ));
    let listen = node.map_or(settings.listen.as_str(), |(_, n)| n.client_listen.as_str());
    out.push_str(&format!("listen: {}\n", quoted(listen)));
    if let Some((_, n)) = node {
        // JetStream in a cluster needs a unique name per server.
        out.push_str(&format!("server_name: {}\n", quoted(&n.name)));
        if !n.tags.is_empty() {
            let tags: Vec<String> = n.tags.iter().map(|t| quoted(t)).collect();
            out.push_str(&format!("server_tags: [{}]\n", tags.join(", ")));
        }
    }
    out.push('\n');
    let store_dir = match node {
        // Each node its own directory (the nodes may share a file system).
        Some((_, n)) => settings.jetstream_dir.join(&n.name),
        None => settings.jetstream_dir.clone(),
    };
    out.push_str(&format!(
        "jetstream {{\n  store_dir: {}\n}}\n\n",
        quoted_path(&store_dir)
    ));
    if let Some((cluster, n)) = node {
        let password = cluster.route_password.expose_secret();
        let routes: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|other| other.name != n.name)
            .map(|other| format!("nats-route://{ROUTE_USER}:{password}@{}", other.route_addr))
            .collect();
        out.push_str("cluster {\n");
        out.push_str(&format!("  name: {}\n", quoted(&cluster.name)));
        out.push_str(&format!("  listen: {}\n", quoted(&n.route_listen)));
        out.push_str(&format!(
            "  authorization {{\n    user: {}\n    password: {}\n  }}\n",
            quoted(ROUTE_USER),
            quoted(password)
        ));
        out.push_str(&format!("  routes: {}\n", list(&routes)));
        out.push_str("}\n\n");
    }
    if let Some(tls) = &settings.tls {
        out.push_str("tls {\n");
        out.push_str(&format!("  cert_file: {}\n", quoted_path(&tls.cert_file)));
        out.push_str(&format!("  key_file: {}\n", quoted_path(&tls.key_file)));
        if let Some(ca) = &tls.ca_file {
            out.push_str(&format!("  ca_file: {}\n", quoted_path(ca)));
        }
        if tls.verify_clients {
            out.push_str("  verify: true\n");
        }
        out.push_str("}\n\n");
    }
    out.push_str("# No no_auth_user: a connection without valid credentials is refused.\n");
    out.push_str("authorization {\n  users: [\n");
    for (identity, public_key) in users {
        let p = permissions(*identity, &settings.prefix);
        out.push_str(&format!("    # {identity}\n"));
        out.push_str(&format!("    {{\n      nkey: {}\n", quoted(public_key)));
        out.push_str("      permissions: {\n");
        out.push_str(&format!("        publish: {}\n", rule(&p.publish)));
        out.push_str(&format!("        subscribe: {}\n", rule(&p.subscribe)));
        if p.allow_responses {
            out.push_str("        allow_responses: true\n");
        }
        out.push_str("      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("idm-nats-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn settings(dir: &Path) -> ServerSettings {
        ServerSettings {
            prefix: "idm".into(),
            listen: "127.0.0.1:4223".into(),
            jetstream_dir: dir.join("js"),
            tls: None,
        }
    }

    #[test]
    fn seeds_are_private_reused_and_rotated_on_request() {
        let dir = temp_dir();
        let first = generate(&dir, &settings(&dir), false).unwrap();
        assert_eq!(first.seeds.len(), Identity::all().len());
        let path = seed_file(&dir, Identity::Auth);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let seed = std::fs::read_to_string(&path).unwrap();
        let pair = user_key_from_seed(&seed).unwrap();
        let config = std::fs::read_to_string(&first.config_file).unwrap();
        assert!(config.contains(&pair.public_key()));
        assert!(!config.contains(seed.trim()), "the config holds no seed");
        assert!(!config
            .lines()
            .any(|l| l.trim_start().starts_with("no_auth_user")));

        let again = generate(&dir, &settings(&dir), false).unwrap();
        assert_eq!(
            again.seed(Identity::Auth).unwrap().expose_secret(),
            seed.trim()
        );
        let rotated = generate(&dir, &settings(&dir), true).unwrap();
        assert_ne!(
            rotated.seed(Identity::Auth).unwrap().expose_secret(),
            seed.trim()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_prefix_or_a_foreign_seed_is_refused() {
        let dir = temp_dir();
        let mut bad = settings(&dir);
        bad.prefix = "idm.>".into();
        assert!(generate(&dir, &bad, false).is_err());
        std::fs::create_dir_all(dir.join(SEED_DIR)).unwrap();
        let account_seed = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(seed_file(&dir, Identity::User), account_seed).unwrap();
        assert!(generate(&dir, &settings(&dir), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_permission_list_denies_everything_and_clients_are_verified() {
        // Every identity has rights today; an empty list must still never
        // render as an empty allow list (which nats-server reads as "no
        // restriction").
        assert_eq!(rule(&[]), r#"{ deny: [">"] }"#);
        let users = vec![(Identity::Webhook, "UABC".to_owned())];
        let config = render(
            &ServerSettings {
                prefix: "idm".into(),
                listen: "0.0.0.0:4222".into(),
                jetstream_dir: "/data".into(),
                tls: Some(ServerTls {
                    cert_file: "/tls/server.pem".into(),
                    key_file: "/tls/server.key".into(),
                    ca_file: Some("/tls/ca.pem".into()),
                    verify_clients: true,
                }),
            },
            &users,
        );
        assert!(config.contains("_INBOX_idm_webhook.>"), "{config}");
        assert!(!config.contains("allow: []"), "{config}");
        assert!(config.contains("verify: true"));
    }

    #[test]
    fn cluster_nodes_route_to_each_other_with_a_password_and_keep_their_seeds() {
        let dir = temp_dir();
        let password = route_password(&dir, false).unwrap();
        assert_eq!(
            route_password(&dir, false).unwrap().expose_secret(),
            password.expose_secret(),
            "kept across runs"
        );
        let nodes: Vec<ClusterNode> = (1..=3)
            .map(|i| ClusterNode {
                name: format!("nats-{i}"),
                client_listen: "0.0.0.0:4222".into(),
                route_listen: "0.0.0.0:6222".into(),
                route_addr: format!("nats-{i}:6222"),
                tags: vec![format!("node:nats-{i}")],
            })
            .collect();
        let cluster = ClusterSettings {
            name: "idm".into(),
            nodes,
            route_password: password.clone(),
        };
        let (generated, files) = generate_cluster(&dir, &settings(&dir), &cluster, false).unwrap();
        assert_eq!(files.len(), 3);
        let second = std::fs::read_to_string(&files[1]).unwrap();
        assert!(second.contains(r#"server_name: "nats-2""#), "{second}");
        assert!(
            second.contains(r#"server_tags: ["node:nats-2"]"#),
            "{second}"
        );
        assert!(second.contains(&format!(
            "nats-route://route:{}@nats-1:6222",
            password.expose_secret()
        )));
        assert!(!second.contains("@nats-2:6222"), "no route to itself");
        let auth = user_key_from_seed(generated.seed(Identity::Auth).unwrap().expose_secret())
            .unwrap()
            .public_key();
        assert!(second.contains(&auth));
        assert!(second.ends_with("  ]\n}\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[1]).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "it holds the route password");
        }
        let repeated = ClusterSettings {
            nodes: vec![cluster.nodes[0].clone(), cluster.nodes[0].clone()],
            ..cluster
        };
        assert!(generate_cluster(&dir, &settings(&dir), &repeated, false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
