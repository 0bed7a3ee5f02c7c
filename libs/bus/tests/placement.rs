//! Stream placement on a three-node NATS cluster whose nodes carry the tags
//! `node:n1` … `node:n3` (the test kit's cluster): a service configured with
//! `<P>_NATS_STREAM_TAGS` creates its streams on the servers carrying them
//! (how queued mail to EU users stays on EU servers), and a placement no
//! server can satisfy is refused at start-up, never silently put elsewhere.

use idm_bus::{Bus, Events, Identity};
use idm_core::config::{ServiceBasics, StreamPlacement};
use idm_testkit::NatsServer;
use std::time::Duration;

fn basics(nats: &NatsServer, tags: &[&str]) -> ServiceBasics {
    ServiceBasics {
        nats_url: nats.url.clone(),
        nats_stream_replicas: 1,
        nats_stream_placement: StreamPlacement {
            cluster: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        },
        nats_auth: nats.auth(Identity::Auth),
        subject_prefix: nats.prefix.clone(),
        http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        request_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_go_to_the_servers_carrying_the_configured_tags() -> anyhow::Result<()> {
    let prefix = format!("tp{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = NatsServer::start_cluster(&prefix, 3).await?;

    for node in ["n2", "n3"] {
        // A fresh stream each round: the placement applies when it is made.
        let admin = async_nats::jetstream::new(nats.connect(Identity::Admin).await?);
        let name = idm_bus::events::stream_name(&prefix);
        let _ = admin.delete_stream(&name).await;

        let bus = Bus::connect(&basics(&nats, &[&format!("node:{node}")]), Identity::Auth).await?;
        Events::ensure(&bus).await?;
        let info = admin.get_stream(&name).await?.info().await?.clone();
        let placement = info.config.placement.clone().unwrap_or_default();
        assert_eq!(placement.tags, [format!("node:{node}")]);
        assert_eq!(
            info.cluster.and_then(|c| c.leader).as_deref(),
            Some(node),
            "the stream's only copy is on {node}"
        );
    }

    // No server carries the tag: refused, not placed anywhere else.
    let admin = async_nats::jetstream::new(nats.connect(Identity::Admin).await?);
    let name = idm_bus::events::stream_name(&prefix);
    admin.delete_stream(&name).await?;
    let bus = Bus::connect(&basics(&nats, &["jurisdiction:mars"]), Identity::Auth).await?;
    let refused = Events::ensure(&bus).await;
    assert!(
        refused.is_err(),
        "a placement nobody satisfies was accepted"
    );
    assert!(
        admin.get_stream(&name).await.is_err(),
        "the stream exists after all"
    );
    Ok(())
}
