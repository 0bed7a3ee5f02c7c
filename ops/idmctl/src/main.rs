//! `idmctl`: operator tooling.
//!
//! ```text
//! idmctl nats-config --out DIR [--prefix idm] [--listen 127.0.0.1:4222]
//!                    [--jetstream-dir DIR] [--tls-cert FILE --tls-key FILE]
//!                    [--tls-ca FILE] [--tls-verify-clients] [--rotate]
//!                    [--cluster-node NAME=HOST:CLIENT_PORT:ROUTE_PORT ...]
//!                    [--cluster-name NAME]
//! idmctl acl [--prefix idm]
//! ```
//!
//! `nats-config` writes `DIR/nats-server.conf` (public keys and permissions
//! only) and `DIR/nkeys/<identity>.nk` (one seed per identity, mode 600),
//! reusing seeds already there unless `--rotate`; it prints which variable
//! each service reads its seed from. Paths given for the server (`--jetstream-dir`,
//! `--tls-*`) are written as they are, so they may be paths inside the
//! server's container. `acl` prints the permission table as Markdown.
//!
//! With `--cluster-node` (repeated, one per node; three for a cluster that
//! survives losing one), `nats-config` also writes
//! `DIR/nats-server-<NAME>.conf` for each node (mode 600: it holds the
//! cluster's route password, kept in `DIR/cluster-route.secret`). A node
//! serves clients on the host of `--listen` and CLIENT_PORT, listens for
//! routes on that host and ROUTE_PORT, and the other nodes reach it at
//! HOST:ROUTE_PORT; its JetStream files go to `--jetstream-dir`/NAME.

use anyhow::{bail, Context};
use idm_bus::nats_config::{self, ServerSettings, ServerTls};
use idm_bus::Identity;
use std::path::PathBuf;

const USAGE: &str = "usage:
  idmctl nats-config --out DIR [--prefix idm] [--listen 127.0.0.1:4222] [--jetstream-dir DIR]
                     [--tls-cert FILE --tls-key FILE] [--tls-ca FILE] [--tls-verify-clients] [--rotate]
                     [--cluster-node NAME=HOST:CLIENT_PORT:ROUTE_PORT ...] [--cluster-name NAME]
  idmctl acl [--prefix idm]";

/// The environment prefix of the service that runs as `identity`.
fn env_prefix(identity: Identity) -> Option<&'static str> {
    Some(match identity {
        Identity::EdgeGuard => "EDGE",
        Identity::Account => "ACCOUNT",
        Identity::Auth => "AUTH",
        Identity::Session => "SESSION",
        Identity::User => "USER",
        Identity::UserStore(_) => "STORE",
        Identity::DeletionWorker => "DELETION",
        Identity::Webhook => "WEBHOOK",
        Identity::Admin => return None,
    })
}

struct Args(Vec<String>);

impl Args {
    /// The value after `--name`, once.
    fn value(&mut self, name: &str) -> anyhow::Result<Option<String>> {
        let Some(at) = self.0.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if at + 1 >= self.0.len() {
            bail!("{name} needs a value\n{USAGE}");
        }
        let value = self.0.remove(at + 1);
        self.0.remove(at);
        Ok(Some(value))
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.0.iter().position(|a| a == name) {
            Some(at) => {
                self.0.remove(at);
                true
            }
            None => false,
        }
    }

    fn done(self) -> anyhow::Result<()> {
        match self.0.first() {
            Some(extra) => bail!("unexpected argument '{extra}'\n{USAGE}"),
            None => Ok(()),
        }
    }
}

fn nats_config(mut args: Args) -> anyhow::Result<()> {
    let out = PathBuf::from(
        args.value("--out")?
            .context(format!("--out is required\n{USAGE}"))?,
    );
    let prefix = args.value("--prefix")?.unwrap_or_else(|| "idm".into());
    let listen = args
        .value("--listen")?
        .unwrap_or_else(|| "127.0.0.1:4222".into());
    let jetstream_dir = args
        .value("--jetstream-dir")?
        .map(PathBuf::from)
        .unwrap_or_else(|| out.join("jetstream"));
    let cert = args.value("--tls-cert")?.map(PathBuf::from);
    let key = args.value("--tls-key")?.map(PathBuf::from);
    let ca = args.value("--tls-ca")?.map(PathBuf::from);
    let verify_clients = args.flag("--tls-verify-clients");
    let rotate = args.flag("--rotate");
    let mut node_specs = Vec::new();
    while let Some(spec) = args.value("--cluster-node")? {
        node_specs.push(spec);
    }
    let cluster_name = args.value("--cluster-name")?;
    args.done()?;
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ServerTls {
            cert_file,
            key_file,
            ca_file: ca,
            verify_clients,
        }),
        (None, None) if ca.is_none() && !verify_clients => None,
        _ => bail!("TLS needs both --tls-cert and --tls-key (--tls-ca and --tls-verify-clients go with them)"),
    };
    if verify_clients && tls.as_ref().is_some_and(|t| t.ca_file.is_none()) {
        bail!("--tls-verify-clients needs --tls-ca (the CA that signs client certificates)");
    }
    let settings = ServerSettings {
        prefix,
        listen,
        jetstream_dir,
        tls,
    };
    let generated = if node_specs.is_empty() {
        anyhow::ensure!(
            cluster_name.is_none(),
            "--cluster-name goes with --cluster-node"
        );
        nats_config::generate(&out, &settings, rotate)?
    } else {
        let bind_host = settings
            .listen
            .rsplit_once(':')
            .map(|(host, _)| host.to_owned())
            .context("--listen is HOST:PORT")?;
        let nodes = node_specs
            .iter()
            .map(|spec| cluster_node(spec, &bind_host))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cluster = nats_config::ClusterSettings {
            name: cluster_name.unwrap_or_else(|| settings.prefix.clone()),
            nodes,
            route_password: nats_config::route_password(&out, rotate)?,
        };
        let (generated, files) = nats_config::generate_cluster(&out, &settings, &cluster, rotate)?;
        for file in files {
            println!(
                "wrote {} (mode 600: holds the route password)",
                file.display()
            );
        }
        generated
    };
    println!("wrote {}", generated.config_file.display());
    println!("seeds (mode 600), one per identity; give each service its own:");
    for (identity, path) in &generated.seed_files {
        match env_prefix(*identity) {
            Some(env) => println!(
                "  {:<22} {env}_NATS_NKEY_SEED_FILE={}",
                identity.name(),
                path.display()
            ),
            None => println!("  {:<22} (tooling) {}", identity.name(), path.display()),
        }
    }
    Ok(())
}

/// `NAME=HOST:CLIENT_PORT:ROUTE_PORT`, the node listening on `bind_host`.
fn cluster_node(spec: &str, bind_host: &str) -> anyhow::Result<nats_config::ClusterNode> {
    let parsed = spec.split_once('=').and_then(|(name, addr)| {
        let mut parts = addr.rsplitn(3, ':');
        let route: u16 = parts.next()?.parse().ok()?;
        let client: u16 = parts.next()?.parse().ok()?;
        let host = parts.next().filter(|h| !h.is_empty())?;
        Some((name, host, client, route))
    });
    let Some((name, host, client, route)) = parsed else {
        bail!("--cluster-node {spec}: expected NAME=HOST:CLIENT_PORT:ROUTE_PORT");
    };
    Ok(nats_config::ClusterNode {
        name: name.to_owned(),
        client_listen: format!("{bind_host}:{client}"),
        route_listen: format!("{bind_host}:{route}"),
        route_addr: format!("{host}:{route}"),
        tags: Vec::new(),
    })
}

fn acl(mut args: Args) -> anyhow::Result<()> {
    let prefix = args.value("--prefix")?.unwrap_or_else(|| "idm".into());
    args.done()?;
    println!("| identity | publish | subscribe | replies |");
    println!("|---|---|---|---|");
    for identity in Identity::all() {
        let p = idm_bus::acl::permissions(identity, &prefix);
        let cell = |items: &[String]| {
            if items.is_empty() {
                "nothing".to_owned()
            } else {
                items
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join("<br>")
            }
        };
        println!(
            "| {} | {} | {} | {} |",
            identity.name(),
            cell(&p.publish),
            cell(&p.subscribe),
            if p.allow_responses { "yes" } else { "no" }
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        bail!("{USAGE}");
    }
    let command = argv.remove(0);
    let args = Args(argv);
    match command.as_str() {
        "nats-config" => nats_config(args),
        "acl" => acl(args),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command '{other}'\n{USAGE}"),
    }
}
