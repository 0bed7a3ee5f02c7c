//! Revoked sessions, answered from memory on every replica. Filled at start
//! from the Redis revocation set (so a restarted edge still refuses tokens
//! revoked before it started) and then by the `session.revoked` broadcasts.

use idm_bus::Bus;
use idm_core::proto::session::{revocation_set_key, RevokedBroadcast};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether a revoked session was revoked as compromised.
type Compromised = bool;

#[derive(Clone)]
pub struct Revocations {
    set: moka::future::Cache<(String, String), Compromised>,
}

impl Revocations {
    pub fn new() -> Self {
        // Entries outlive every token they could refuse (tokens live at most a day).
        let set = moka::future::Cache::builder()
            .max_capacity(2_000_000)
            .time_to_live(Duration::from_secs(86_400 + 60))
            .build();
        Self { set }
    }

    pub async fn check(&self, issuer: &str, session: &str) -> Option<Compromised> {
        self.set.get(&(issuer.to_owned(), session.to_owned())).await
    }

    async fn add(&self, issuer: &str, session: &str, compromised: bool) {
        self.set
            .insert((issuer.to_owned(), session.to_owned()), compromised)
            .await;
    }

    /// Loads every revocation that still matters from Redis.
    pub async fn load(
        &self,
        redis_url: &str,
        redis_prefix: &str,
    ) -> Result<usize, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let now = idm_core::now().unix_timestamp();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(revocation_set_key(redis_prefix))
            .arg(now)
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        for member in &members {
            let mut parts = member.split('/');
            if let (Some(issuer), Some(session), Some(flag)) =
                (parts.next(), parts.next(), parts.next())
            {
                self.add(issuer, session, flag == "1").await;
            }
        }
        Ok(members.len())
    }

    /// Applies `session.revoked` broadcasts until shutdown.
    pub async fn listen(
        &self,
        bus: &Bus,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, crate::Error> {
        let this = self.clone();
        let task = bus
            .on_broadcast(
                "session.revoked",
                shutdown,
                move |broadcast: RevokedBroadcast| {
                    let this = this.clone();
                    async move {
                        for s in broadcast.sessions {
                            this.add(
                                broadcast.issuer_id.as_str(),
                                s.session_id.as_str(),
                                s.compromised,
                            )
                            .await;
                        }
                    }
                },
            )
            .await?;
        Ok(task)
    }
}
