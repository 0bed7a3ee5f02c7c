//! Strikes and bans.
//!
//! A velocity breach records a strike, at most one per route class per
//! velocity window (so one burst is one strike, however many requests it
//! held). `strikes_to_ban` strikes inside `strike_window_seconds` ban the
//! network for `ban_seconds`; each further ban while the previous offence is
//! remembered doubles, up to `max_ban_seconds`. The strike count and the
//! offence history live in Redis (one Lua script, so exactly one replica
//! issues a ban), and the ban itself lives in every replica's memory: it is
//! broadcast over NATS, kept in a Redis sorted set that a starting replica
//! loads, and published as the `ip.banned` event. Answering a banned caller
//! therefore touches neither Redis nor NATS.
//!
//! Bans are per issuer: thresholds are the issuer's, and one tenant's strict
//! policy must not lock a shared address (an office, a carrier NAT) out of
//! every other tenant's application.

use super::fallback::RedisLink;
use super::velocity::now_ms;
use super::RouteClass;
use idm_bus::{Bus, Events};
use idm_core::proto::account::KeyConfig;
use idm_core::IssuerId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const BANNED_TOPIC: &str = "ip.banned";
pub const LIFTED_TOPIC: &str = "ip.unbanned";
pub const EVENT_TYPE: &str = "ip.banned";

/// KEYS: latch, strikes, offences, bans. ARGV: now, latch ms, strike window
/// ms, threshold, ban ms, max ban ms, offence memory ms, ban member, nonce.
/// Returns {strikes, ban ms (0: none), offence number}.
const STRIKE_SCRIPT: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  return {0, 0, 0}
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now, ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local strikes = redis.call('ZCARD', KEYS[2])
if strikes < tonumber(ARGV[4]) then
  return {strikes, 0, 0}
end
redis.call('DEL', KEYS[2])
local offence = redis.call('INCR', KEYS[3])
local ban = tonumber(ARGV[5])
local max = tonumber(ARGV[6])
for i = 2, offence do
  if ban >= max then break end
  ban = ban * 2
end
if ban > max then ban = max end
redis.call('PEXPIRE', KEYS[3], ban + tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZADD', KEYS[4], now + ban, ARGV[8])
return {strikes, ban, offence}
";

/// `<prefix>.ip.banned.<issuer>`: every replica adds the ban to memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BanNotice {
    pub issuer_id: IssuerId,
    pub network: IpNet,
    /// Unix milliseconds.
    pub until_ms: u64,
}

/// `<prefix>.ip.unbanned.<issuer|all>`: an operator lifted the bans covering `ip`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiftNotice {
    pub ip: IpAddr,
    pub issuer_id: Option<IssuerId>,
}

/// A ban as the operator listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanView {
    pub issuer_id: IssuerId,
    pub network: IpNet,
    pub remaining_seconds: u64,
}

/// Strike state of one issuer and network while Redis is away.
#[derive(Default)]
struct LocalStrikes {
    latches: Vec<(RouteClass, u64)>,
    strikes: VecDeque<u64>,
    offences: u64,
    offences_until: u64,
}

pub struct Bans {
    table: moka::sync::Cache<(IssuerId, IpNet), u64>,
    redis: Arc<RedisLink>,
    script: redis::Script,
    local: moka::sync::Cache<String, Arc<Mutex<LocalStrikes>>>,
    bus: Bus,
    events: Events,
}

fn member(issuer: &IssuerId, network: &IpNet) -> String {
    format!("{issuer}|{network}")
}

fn parse_member(member: &str) -> Option<(IssuerId, IpNet)> {
    let (issuer, network) = member.split_once('|')?;
    Some((IssuerId::parse(issuer).ok()?, network.parse().ok()?))
}

fn millis(seconds: u32) -> u64 {
    u64::from(seconds) * 1000
}

impl Bans {
    pub fn new(redis: Arc<RedisLink>, bus: Bus, events: Events) -> Self {
        Self {
            table: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            redis,
            script: redis::Script::new(STRIKE_SCRIPT),
            local: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            bus,
            events,
        }
    }

    fn bans_key(&self) -> String {
        self.redis.key("bans")
    }

    /// Remaining ban time of `network` at `issuer`, from memory only.
    pub fn check(&self, issuer: &IssuerId, network: IpNet) -> Option<Duration> {
        let key = (issuer.clone(), network);
        let until = self.table.get(&key)?;
        let now = now_ms();
        if until > now {
            Some(Duration::from_millis(until - now))
        } else {
            self.table.invalidate(&key);
            None
        }
    }

    fn remember(&self, issuer: IssuerId, network: IpNet, until_ms: u64) {
        if until_ms > now_ms() {
            self.table.insert((issuer, network), until_ms);
        }
    }

    /// Records a breach by `network` on `class`; returns the ban it earned, if any.
    pub async fn strike(
        &self,
        key: &KeyConfig,
        class: RouteClass,
        network: IpNet,
        velocity_window: Duration,
    ) -> Option<Duration> {
        let policy = &key.policy.waf;
        let issuer = &key.issuer_id;
        let now = now_ms();
        let latch_ms = u64::try_from(velocity_window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let keys = [
            self.redis.key(&format!("latch:{class}:{issuer}:{network}")),
            self.redis.key(&format!("strikes:{issuer}:{network}")),
            self.redis.key(&format!("offences:{issuer}:{network}")),
            self.bans_key(),
        ];
        let nonce = format!("{now}:{}", idm_crypto::random_token::<6>());
        let ban_member = member(issuer, &network);
        let script = &self.script;
        let answer = self
            .redis
            .run(|mut conn| async move {
                let mut call = script.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                call.arg(now)
                    .arg(latch_ms)
                    .arg(millis(policy.strike_window_seconds))
                    .arg(policy.strikes_to_ban)
                    .arg(millis(policy.ban_seconds))
                    .arg(millis(policy.max_ban_seconds))
                    .arg(millis(policy.offence_memory_seconds))
                    .arg(&ban_member)
                    .arg(&nonce);
                call.invoke_async::<Vec<u64>>(&mut conn).await
            })
            .await;
        let (ban_ms, offence) = match answer.as_deref() {
            Some([_, ban, offence]) => (*ban, *offence),
            Some(_) => (0, 0),
            None => self.local_strike(key, class, network, now, latch_ms),
        };
        if ban_ms == 0 {
            return None;
        }
        let until_ms = now + ban_ms;
        self.remember(issuer.clone(), network, until_ms);
        metrics::counter!("idm_edge_bans_total").increment(1);
        tracing::warn!(issuer_id = %issuer, %network, ban_seconds = ban_ms / 1000, offence, "network banned");
        let notice = BanNotice {
            issuer_id: issuer.clone(),
            network,
            until_ms,
        };
        let (bus, events) = (self.bus.clone(), self.events.clone());
        let issuer = issuer.clone();
        // The caller's answer does not wait for the stream's ack.
        tokio::spawn(async move {
            bus.broadcast(
                bus.broadcast_subject(BANNED_TOPIC, issuer.as_str()),
                &notice,
            )
            .await;
            let until =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(until_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    });
            let data = serde_json::json!({
                "ip": network.to_string(),
                "route_class": class.as_str(),
                "ban_seconds": ban_ms / 1000,
                "banned_until": until,
                "offence": offence,
            });
            if let Err(e) = events.publish(&issuer, EVENT_TYPE, data).await {
                tracing::error!(error = %e, "ip.banned event not published");
            }
        });
        Some(Duration::from_millis(ban_ms))
    }

    /// The Lua script's arithmetic on this replica's memory.
    fn local_strike(
        &self,
        key: &KeyConfig,
        class: RouteClass,
        network: IpNet,
        now: u64,
        latch_ms: u64,
    ) -> (u64, u64) {
        let policy = &key.policy.waf;
        let state = self.local.get_with(member(&key.issuer_id, &network), || {
            Arc::new(Mutex::new(LocalStrikes::default()))
        });
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.latches.retain(|(_, until)| *until > now);
        if s.latches.iter().any(|(c, _)| *c == class) {
            return (0, 0);
        }
        s.latches.push((class, now + latch_ms));
        let window = millis(policy.strike_window_seconds);
        while s.strikes.front().is_some_and(|t| *t + window <= now) {
            s.strikes.pop_front();
        }
        s.strikes.push_back(now);
        if (s.strikes.len() as u64) < u64::from(policy.strikes_to_ban) {
            return (0, 0);
        }
        s.strikes.clear();
        if s.offences_until <= now {
            s.offences = 0;
        }
        s.offences += 1;
        let max = millis(policy.max_ban_seconds);
        let mut ban = millis(policy.ban_seconds);
        for _ in 1..s.offences {
            if ban >= max {
                break;
            }
            ban = ban.saturating_mul(2);
        }
        let ban = ban.min(max);
        s.offences_until = now + ban + millis(policy.offence_memory_seconds);
        (ban, s.offences)
    }

    /// Loads the bans still running from Redis (a starting replica).
    pub async fn load(&self) -> usize {
        let key = self.bans_key();
        let now = now_ms();
        let rows = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(now)
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .query_async::<Vec<(String, u64)>>(&mut conn)
                    .await
            })
            .await
            .unwrap_or_default();
        let mut loaded = 0;
        for (m, until) in rows {
            if let Some((issuer, network)) = parse_member(&m) {
                self.remember(issuer, network, until);
                loaded += 1;
            }
        }
        loaded
    }

    /// Applies ban and lift broadcasts from every replica until shutdown.
    pub async fn listen(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::Error> {
        let this = Arc::clone(self);
        let banned = self
            .bus
            .on_broadcast(BANNED_TOPIC, shutdown.clone(), move |n: BanNotice| {
                this.remember(n.issuer_id, n.network, n.until_ms);
                std::future::ready(())
            })
            .await?;
        let this = Arc::clone(self);
        let lifted = self
            .bus
            .on_broadcast(LIFTED_TOPIC, shutdown, move |n: LiftNotice| {
                this.forget(n.ip, n.issuer_id.as_ref());
                std::future::ready(())
            })
            .await?;
        Ok(vec![banned, lifted])
    }

    fn forget(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> usize {
        let matching: Vec<(IssuerId, IpNet)> = self
            .table
            .iter()
            .filter(|(k, _)| k.1.contains(&ip) && issuer.is_none_or(|i| *i == k.0))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in &matching {
            self.table.invalidate(k);
            self.local.invalidate(&member(&k.0, &k.1));
        }
        matching.len()
    }

    /// An operator's lift: every ban covering `ip` (of one issuer, or all),
    /// with its strikes and offence history, on every replica and in Redis.
    pub async fn lift(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> usize {
        let key = self.bans_key();
        let redis = &self.redis;
        let removed_in_redis = redis
            .run(|mut conn| async move {
                let all: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await?;
                let mut removed = 0usize;
                for m in all {
                    let Some((i, network)) = parse_member(&m) else {
                        continue;
                    };
                    if !network.contains(&ip) || issuer.is_some_and(|want| *want != i) {
                        continue;
                    }
                    let _: () = redis::pipe()
                        .zrem(&key, &m)
                        .del(redis.key(&format!("strikes:{i}:{network}")))
                        .del(redis.key(&format!("offences:{i}:{network}")))
                        .query_async(&mut conn)
                        .await?;
                    removed += 1;
                }
                Ok(removed)
            })
            .await
            .unwrap_or(0);
        let removed_here = self.forget(ip, issuer);
        let notice = LiftNotice {
            ip,
            issuer_id: issuer.cloned(),
        };
        let target = issuer.map_or("all", |i| i.as_str());
        self.bus
            .broadcast(self.bus.broadcast_subject(LIFTED_TOPIC, target), &notice)
            .await;
        self.bus.flush().await;
        tracing::warn!(%ip, removed_here, removed_in_redis, "bans lifted by an operator");
        removed_here.max(removed_in_redis)
    }

    pub fn list(&self) -> Vec<BanView> {
        let now = now_ms();
        let mut bans: Vec<BanView> = self
            .table
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(k, until)| BanView {
                issuer_id: k.0.clone(),
                network: k.1,
                remaining_seconds: (until - now).div_ceil(1000),
            })
            .collect();
        bans.sort_by_key(|b| std::cmp::Reverse(b.remaining_seconds));
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_members_round_trip() -> Result<(), ipnet::AddrParseError> {
        let issuer = IssuerId::generate();
        for net in ["198.51.100.7/32", "2001:db8:1:2::/64"] {
            let network: IpNet = net.parse()?;
            assert_eq!(
                parse_member(&member(&issuer, &network)),
                Some((issuer.clone(), network))
            );
        }
        assert_eq!(parse_member("garbage"), None);
        Ok(())
    }
}
