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
//! every other tenant's application. For the same reason the ban table is
//! bounded per issuer (`EDGE_MAX_BANS_PER_ISSUER`, in Redis and in memory):
//! an issuer at its bound bans no further networks (their breaches are still
//! answered `429`), and no issuer's bans can crowd out another's.
//!
//! Lifting a ban says "this address is fine": it also clears the address's
//! strikes, offence history and velocity windows, so its next request is not
//! an immediate breach that bans it again.

use super::fallback::RedisLink;
use super::velocity::{now_ms, Velocity};
use super::RouteClass;
use idm_bus::{Bus, Events};
use idm_core::proto::account::KeyConfig;
use idm_core::proto::event;
use idm_core::IssuerId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const BANNED_TOPIC: &str = "ip.banned";
pub const LIFTED_TOPIC: &str = "ip.unbanned";

/// KEYS (one hash tag, the issuer: one Redis Cluster slot): latch, strikes,
/// offences, this issuer's bans. ARGV: now, latch ms, strike window ms,
/// threshold, ban ms, max ban ms, offence memory ms, nonce, network, bans
/// per issuer.
/// Returns {strikes, ban ms (0: none), offence number}; an issuer whose ban
/// table is full gets no new ban (and keeps its strikes). The platform-wide
/// list a starting replica loads is written after it (`record_for_loading`).
const STRIKE_SCRIPT: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  return {0, 0, 0}
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now, ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local strikes = redis.call('ZCARD', KEYS[2])
if strikes < tonumber(ARGV[4]) then
  return {strikes, 0, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[10]) and not redis.call('ZSCORE', KEYS[4], ARGV[9]) then
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
redis.call('ZADD', KEYS[4], now + ban, ARGV[9])
if redis.call('PTTL', KEYS[4]) < ban then redis.call('PEXPIRE', KEYS[4], ban) end
return {strikes, ban, offence}
";

/// KEYS: this issuer's bans. ARGV: network, end (unix ms), remaining ms.
/// Adds a ban unless a later end is recorded.
static WRITE_BACK_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
",
    )
});

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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BanView {
    pub issuer_id: IssuerId,
    /// The banned network (`203.0.113.7/32`, `2001:db8::/64`).
    #[schema(value_type = String)]
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

/// Running bans: issuer → network → end (unix ms), at most
/// `max_per_issuer` networks per issuer. Never evicted: a ban ends by itself
/// or by a lift.
struct BanTable {
    tables: RwLock<Tables>,
    /// How many networks some issuer bans: the ban gate's first question,
    /// answered without the lock (nearly always zero for a given address's
    /// traffic, and zero altogether on most replicas most of the time).
    banned_networks: AtomicUsize,
    max_per_issuer: usize,
}

#[derive(Default)]
struct Tables {
    by_issuer: HashMap<IssuerId, HashMap<IpNet, u64>>,
    /// Every banned network with the number of issuers banning it, and the
    /// IPv6 prefix lengths in use: whether anyone bans an address is one
    /// lookup per length in use, before its issuer is known (`may_ban`).
    networks: HashMap<IpNet, usize>,
    v6_prefixes: BTreeMap<u8, usize>,
}

impl Tables {
    fn indexed(&mut self, network: IpNet) {
        *self.networks.entry(network).or_default() += 1;
        if let IpNet::V6(v6) = network {
            *self.v6_prefixes.entry(v6.prefix_len()).or_default() += 1;
        }
    }

    fn unindexed(&mut self, network: &IpNet) {
        fn decrement(count: Option<&mut usize>) -> bool {
            count.is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            })
        }
        if decrement(self.networks.get_mut(network)) {
            self.networks.remove(network);
        }
        if let IpNet::V6(v6) = network {
            if decrement(self.v6_prefixes.get_mut(&v6.prefix_len())) {
                self.v6_prefixes.remove(&v6.prefix_len());
            }
        }
    }

    /// Removes the networks of `issuer`'s bans that `remove` picks.
    fn remove_where(
        &mut self,
        issuer: &IssuerId,
        mut remove: impl FnMut(&IpNet, u64) -> bool,
    ) -> Vec<IpNet> {
        let Some(bans) = self.by_issuer.get_mut(issuer) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        bans.retain(|network, until| {
            let drop = remove(network, *until);
            if drop {
                removed.push(*network);
            }
            !drop
        });
        if bans.is_empty() {
            self.by_issuer.remove(issuer);
        }
        for network in &removed {
            self.unindexed(network);
        }
        removed
    }
}

impl BanTable {
    fn new(max_per_issuer: usize) -> Self {
        Self {
            tables: RwLock::new(Tables::default()),
            banned_networks: AtomicUsize::new(0),
            max_per_issuer: max_per_issuer.max(1),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the tables and keeps the lock-free count in step.
    fn write<T>(&self, change: impl FnOnce(&mut Tables) -> T) -> T {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let result = change(&mut tables);
        self.banned_networks
            .store(tables.networks.len(), Ordering::Release);
        result
    }

    fn until(&self, issuer: &IssuerId, network: &IpNet) -> Option<u64> {
        self.read().by_issuer.get(issuer)?.get(network).copied()
    }

    /// Whether some issuer bans a network holding `ip` (an expired ban not
    /// yet removed counts: the caller checks the issuer's ban next).
    fn may_ban(&self, ip: IpAddr) -> bool {
        if self.banned_networks.load(Ordering::Acquire) == 0 {
            return false;
        }
        let tables = self.read();
        match super::network(ip, 128) {
            v4 @ IpNet::V4(_) => tables.networks.contains_key(&v4),
            IpNet::V6(_) => tables
                .v6_prefixes
                .keys()
                .any(|len| tables.networks.contains_key(&super::network(ip, *len))),
        }
    }

    /// Records a ban; `false` when the issuer's table is full of running bans.
    fn insert(&self, issuer: IssuerId, network: IpNet, until_ms: u64, now: u64) -> bool {
        self.write(|tables| {
            if let Some(until) = tables
                .by_issuer
                .get_mut(&issuer)
                .and_then(|bans| bans.get_mut(&network))
            {
                *until = (*until).max(until_ms);
                return true;
            }
            let full = |tables: &Tables| {
                tables
                    .by_issuer
                    .get(&issuer)
                    .is_some_and(|bans| bans.len() >= self.max_per_issuer)
            };
            if full(tables) {
                tables.remove_where(&issuer, |_, until| until <= now);
            }
            if full(tables) {
                return false;
            }
            tables
                .by_issuer
                .entry(issuer)
                .or_default()
                .insert(network, until_ms);
            tables.indexed(network);
            true
        })
    }

    fn remove_expired(&self, issuer: &IssuerId, network: &IpNet, now: u64) {
        self.write(|tables| {
            tables.remove_where(issuer, |n, until| n == network && until <= now);
        });
    }

    /// Removes every ban whose network contains `ip` (of `issuer`, or all).
    fn remove_covering(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> Vec<(IssuerId, IpNet)> {
        self.write(|tables| {
            let issuers: Vec<IssuerId> = match issuer {
                Some(one) => vec![one.clone()],
                None => tables.by_issuer.keys().cloned().collect(),
            };
            let mut removed = Vec::new();
            for issuer in issuers {
                for network in tables.remove_where(&issuer, |network, _| network.contains(&ip)) {
                    removed.push((issuer.clone(), network));
                }
            }
            removed
        })
    }

    /// Whether a ban of `network` at `issuer` would fit now.
    fn has_room(&self, issuer: &IssuerId, network: &IpNet, now: u64) -> bool {
        self.read().by_issuer.get(issuer).is_none_or(|bans| {
            bans.contains_key(network)
                || bans.len() < self.max_per_issuer
                || bans.values().any(|until| *until <= now)
        })
    }

    fn snapshot(&self) -> Vec<(IssuerId, IpNet, u64)> {
        self.read()
            .by_issuer
            .iter()
            .flat_map(|(i, bans)| bans.iter().map(move |(n, until)| (i.clone(), *n, *until)))
            .collect()
    }
}

pub struct Bans {
    table: BanTable,
    velocity: Arc<Velocity>,
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

/// Whether `key` (a velocity key in memory, `v:<class>:<issuer>:<network>:<window>`)
/// belongs to `network` at `issuer`.
fn velocity_key_of(key: &str, issuer: &IssuerId, network: &IpNet) -> bool {
    let suffix = format!(":{issuer}:{network}:");
    RouteClass::ALL
        .iter()
        .any(|class| key.starts_with(&format!("v:{class}{suffix}")))
}

fn millis(seconds: u32) -> u64 {
    u64::from(seconds) * 1000
}

impl Bans {
    pub fn new(
        redis: Arc<RedisLink>,
        velocity: Arc<Velocity>,
        max_per_issuer: usize,
        bus: Bus,
        events: Events,
    ) -> Self {
        Self {
            table: BanTable::new(max_per_issuer),
            velocity,
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

    /// Every running ban, `<issuer>|<network>` scored by its end: what a
    /// starting replica loads. A key of its own (its own cluster slot).
    fn bans_key(&self) -> String {
        self.redis.key("bans")
    }

    /// Keys of one issuer's strike state and bans share the issuer's hash
    /// tag: the strike script touches them together.
    fn issuer_key(&self, issuer: &IssuerId, rest: &str) -> String {
        self.redis.tagged_key(issuer.as_str(), rest)
    }

    fn issuer_bans_key(&self, issuer: &IssuerId) -> String {
        self.issuer_key(issuer, ":bans")
    }

    fn strike_keys(&self, issuer: &IssuerId, network: &IpNet) -> [String; 2] {
        [
            self.issuer_key(issuer, &format!(":strikes:{network}")),
            self.issuer_key(issuer, &format!(":offences:{network}")),
        ]
    }

    fn latch_key(&self, issuer: &IssuerId, class: RouteClass, network: &IpNet) -> String {
        self.issuer_key(issuer, &format!(":latch:{class}:{network}"))
    }

    /// Adds running bans to the list a starting replica loads (never
    /// shortening one), dropping the ended ones.
    async fn record_for_loading(&self, bans: &[(String, u64)]) -> Option<()> {
        if bans.is_empty() {
            return Some(());
        }
        let key = self.bans_key();
        let now = now_ms();
        self.redis
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .ignore();
                for (member, until) in bans {
                    pipe.cmd("ZADD")
                        .arg(&key)
                        .arg("GT")
                        .arg(*until)
                        .arg(member)
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            })
            .await
    }

    /// Whether any ban runs at all (one atomic load).
    pub fn running(&self) -> bool {
        self.table.banned_networks.load(Ordering::Acquire) > 0
    }

    /// Whether some issuer bans a network holding `ip`, from memory only
    /// and without knowing the issuer (the ban gate's first question).
    pub fn may_ban(&self, ip: IpAddr) -> bool {
        self.table.may_ban(ip)
    }

    /// Remaining ban time of `network` at `issuer`, from memory only.
    pub fn check(&self, issuer: &IssuerId, network: IpNet) -> Option<Duration> {
        let until = self.table.until(issuer, &network)?;
        let now = now_ms();
        if until > now {
            Some(Duration::from_millis(until - now))
        } else {
            self.table.remove_expired(issuer, &network, now);
            None
        }
    }

    /// Keeps a running ban in memory; `false` if the issuer's table is full.
    fn remember(&self, issuer: IssuerId, network: IpNet, until_ms: u64) -> bool {
        let now = now_ms();
        if until_ms <= now {
            return false;
        }
        let kept = self.table.insert(issuer, network, until_ms, now);
        if !kept {
            metrics::counter!("idm_edge_ban_table_full_total").increment(1);
        }
        kept
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
        let [strikes_key, offences_key] = self.strike_keys(issuer, &network);
        let keys = [
            self.latch_key(issuer, class, &network),
            strikes_key,
            offences_key,
            self.issuer_bans_key(issuer),
        ];
        let nonce = format!("{now}:{}", idm_crypto::random_token::<6>());
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
                    .arg(&nonce)
                    .arg(network.to_string())
                    .arg(self.table.max_per_issuer);
                call.invoke_async::<Vec<u64>>(&mut conn).await
            })
            .await;
        let (ban_ms, offence, in_redis) = match answer.as_deref() {
            Some([_, ban, offence]) => (*ban, *offence, true),
            Some(_) => (0, 0, true),
            None => {
                let (ban, offence) = self.local_strike(key, class, network, now, latch_ms);
                (ban, offence, false)
            }
        };
        if ban_ms == 0 {
            return None;
        }
        let until_ms = now + ban_ms;
        if in_redis
            && self
                .record_for_loading(&[(member(issuer, &network), until_ms)])
                .await
                .is_none()
        {
            // Every running replica still learns it (broadcast below), and
            // the write-back restores the list once Redis answers again.
            tracing::warn!(issuer_id = %issuer, %network, "ban not added to the list starting replicas load");
        }
        if !self.remember(issuer.clone(), network, until_ms) {
            tracing::warn!(issuer_id = %issuer, %network, "ban table of the issuer is full: network rate-limited, not banned");
            return None;
        }
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
            let banned = event::DomainEvent::IpBanned(event::IpBanned {
                ip: network.to_string(),
                route_class: class.as_str().to_owned(),
                ban_seconds: ban_ms / 1000,
                banned_until: until,
                offence,
            });
            if let Err(e) = events.publish(&issuer, banned).await {
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
        if !self.table.has_room(&key.issuer_id, &network, now) {
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
                if self.remember(issuer, network, until) {
                    loaded += 1;
                }
            }
        }
        loaded
    }

    /// Writes every running ban this replica holds back into Redis (which came
    /// back empty): Redis is a copy of the bans, every replica holds them all
    /// (broadcasts), so any replica that is still up restores them for the
    /// replicas that start later. Never shortens a ban already there.
    /// Returns how many were written.
    pub async fn write_back(&self) -> Option<usize> {
        let now = now_ms();
        let bans: Vec<(IssuerId, IpNet, u64)> = self
            .table
            .snapshot()
            .into_iter()
            .filter(|(_, _, until)| *until > now)
            .collect();
        if bans.is_empty() {
            return Some(0);
        }
        let rows: Vec<(String, String, u64)> = bans
            .iter()
            .map(|(issuer, network, until)| {
                (self.issuer_bans_key(issuer), network.to_string(), *until)
            })
            .collect();
        let count = rows.len();
        self.redis
            .run(|mut conn| async move {
                // One script call per ban (the scripts load on first use;
                // this runs only when Redis came back empty).
                for (issuer_key, network, until) in rows {
                    WRITE_BACK_SCRIPT
                        .key(issuer_key)
                        .arg(network)
                        .arg(until)
                        .arg(until.saturating_sub(now).max(1))
                        .invoke_async::<()>(&mut conn)
                        .await?;
                }
                Ok(())
            })
            .await?;
        let members: Vec<(String, u64)> = bans
            .iter()
            .map(|(issuer, network, until)| (member(issuer, network), *until))
            .collect();
        self.record_for_loading(&members).await.map(|()| count)
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
                let _ = this.remember(n.issuer_id, n.network, n.until_ms);
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

    /// Drops from this replica's memory the bans covering `ip`, with their
    /// local strike state and velocity windows.
    fn forget(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> usize {
        let removed = self.table.remove_covering(ip, issuer);
        for (i, network) in &removed {
            self.local.invalidate(&member(i, network));
            self.velocity
                .forget_memory(|key| velocity_key_of(key, i, network));
        }
        removed.len()
    }

    /// An operator's lift: every ban covering `ip` (of one issuer, or all),
    /// with its strikes and offence history, on every replica and in Redis.
    pub async fn lift(&self, ip: IpAddr, issuer: Option<&IssuerId>) -> usize {
        let key = self.bans_key();
        let lifted_in_redis = self
            .redis
            .run(|mut conn| async move {
                let all: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await?;
                let mut lifted = Vec::new();
                for m in all {
                    let Some((i, network)) = parse_member(&m) else {
                        continue;
                    };
                    if !network.contains(&ip) || issuer.is_some_and(|want| *want != i) {
                        continue;
                    }
                    let _: () = redis::cmd("ZREM")
                        .arg(&key)
                        .arg(&m)
                        .query_async(&mut conn)
                        .await?;
                    // The issuer's keys share a slot: one pipeline.
                    let mut pipe = redis::pipe();
                    pipe.zrem(self.issuer_bans_key(&i), network.to_string());
                    for k in self.strike_keys(&i, &network) {
                        pipe.del(k);
                    }
                    for class in RouteClass::ALL {
                        pipe.del(self.latch_key(&i, class, &network));
                    }
                    let _: () = pipe.query_async(&mut conn).await?;
                    lifted.push((i, network));
                }
                Ok(lifted)
            })
            .await
            .unwrap_or_default();
        for (i, network) in &lifted_in_redis {
            self.clear_velocity_in_redis(i, network).await;
            let lifted = event::DomainEvent::IpBanLifted(event::IpBanLifted {
                ip: network.to_string(),
                by: "operator".into(),
            });
            if let Err(e) = self.events.publish(i, lifted).await {
                tracing::error!(error = %e, "ip.ban_lifted event not published");
            }
        }
        let removed_in_redis = lifted_in_redis.len();
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

    /// Deletes the velocity windows of `network` at `issuer` in Redis (every
    /// route class and window length: a lift is rare, so a scan of every
    /// node is fine).
    async fn clear_velocity_in_redis(&self, issuer: &IssuerId, network: &IpNet) {
        for class in RouteClass::ALL {
            // The windows of one class share the tag `v:<class>:<issuer>:<network>`
            // (velocity.rs): one slot, so one DEL takes them all.
            let pattern = self
                .redis
                .tagged_key(&format!("v:{class}:{issuer}:{network}"), ":*");
            let pattern = &pattern;
            let _ = self
                .redis
                .run(|mut conn| async move {
                    let keys = conn.scan_all(pattern).await?;
                    if !keys.is_empty() {
                        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
                    }
                    Ok(())
                })
                .await;
        }
    }

    pub fn list(&self) -> Vec<BanView> {
        let now = now_ms();
        let mut bans: Vec<BanView> = self
            .table
            .snapshot()
            .into_iter()
            .filter(|(_, _, until)| *until > now)
            .map(|(issuer_id, network, until)| BanView {
                issuer_id,
                network,
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

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// The index the ban gate asks before knowing the issuer follows every
    /// way a ban comes and goes: two issuers banning one network, IPv6
    /// networks of two prefix lengths, an expiry, a lift, a full table.
    #[test]
    fn whether_anyone_bans_an_address_follows_every_ban() -> Result<(), ipnet::AddrParseError> {
        let table = BanTable::new(2);
        let (a, b) = (IssuerId::generate(), IssuerId::generate());
        let now = 1_000;
        assert!(!table.may_ban(ip("198.51.100.7")));

        let v4: IpNet = "198.51.100.7/32".parse()?;
        assert!(table.insert(a.clone(), v4, now + 500, now));
        assert!(table.insert(b.clone(), v4, now + 900, now));
        assert!(table.may_ban(ip("198.51.100.7")));
        assert!(
            table.may_ban(ip("::ffff:198.51.100.7")),
            "v4-mapped is the v4 address"
        );
        assert!(!table.may_ban(ip("198.51.100.8")));

        let v6_64: IpNet = "2001:db8:1:2::/64".parse()?;
        let v6_48: IpNet = "2001:db8:9::/48".parse()?;
        assert!(table.insert(a.clone(), v6_64, now + 500, now));
        assert!(table.insert(b.clone(), v6_48, now + 500, now));
        assert!(table.may_ban(ip("2001:db8:1:2:ffff::1")));
        assert!(table.may_ban(ip("2001:db8:9:77::1")));
        assert!(!table.may_ban(ip("2001:db8:1:3::1")));

        // A full table drops its expired bans to make room: the index too.
        assert!(table.insert(a.clone(), "203.0.113.9/32".parse()?, now + 2_000, now + 600));
        assert!(
            !table.may_ban(ip("2001:db8:1:2::1")),
            "a's expired /64 is gone"
        );
        assert!(table.may_ban(ip("198.51.100.7")), "b still bans it");

        // One issuer's expiry leaves the other's ban indexed.
        table.remove_expired(&b, &v4, now + 1_000);
        assert!(!table.may_ban(ip("198.51.100.7")));

        // A lift for every issuer takes the address out of the index.
        assert_eq!(
            table.remove_covering(ip("2001:db8:9::5"), None),
            vec![(b, v6_48)]
        );
        assert!(!table.may_ban(ip("2001:db8:9::5")));
        assert_eq!(table.remove_covering(ip("203.0.113.9"), Some(&a)).len(), 1);
        assert_eq!(table.banned_networks.load(Ordering::Acquire), 0);
        assert!(!table.may_ban(ip("203.0.113.9")));
        Ok(())
    }
}
