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
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `idmctl nats-config` for subject prefix {} from the permission\n\
         # table in libs/bus/src/acl.rs. Do not edit: regenerate. Holds public keys only.\n\n",
        quoted(&settings.prefix)
    ));
    out.push_str(&format!("listen: {}\n\n", quoted(&settings.listen)));
    out.push_str(&format!(
        "jetstream {{\n  store_dir: {}\n}}\n\n",
        quoted_path(&settings.jetstream_dir)
    ));
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
    fn users_without_rights_are_denied_everything() {
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
        assert!(config.contains(r#"publish: { deny: [">"] }"#), "{config}");
        assert!(config.contains(r#"subscribe: { allow: ["_INBOX_idm_webhook.>"] }"#));
        assert!(config.contains("verify: true"));
    }
}
