//! Devices: the (user agent, IP network) pairs a user's sessions were
//! opened from. Only the network is kept (/24 for IPv4, /48 for IPv6), in
//! the user's regional store like the sessions themselves.

use super::{corrupt, IssuerStore};
use crate::Error;
use idm_core::ids::DeviceId;
use idm_core::page::Page;
use idm_core::proto::store::{DeviceRecord, SessionRecord};
use idm_core::proto::Device;
use idm_core::{ApiError, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};
use std::net::IpAddr;

/// The longest user agent kept (longer ones are cut).
const MAX_USER_AGENT_CHARS: usize = 512;

/// The network of an address: /24 for IPv4, /48 for IPv6 (an IPv4-mapped
/// IPv6 address counts as IPv4). `None` when it is not an address.
pub fn network_of(ip: &str) -> Option<String> {
    let ip: IpAddr = ip.trim().parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    })
}

fn user_agent_of(device: &Device) -> Option<String> {
    device
        .user_agent
        .as_deref()
        .map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT_CHARS)
                .collect::<String>()
        })
        .filter(|ua| !ua.trim().is_empty())
}

/// Records that `user` was seen on `device` now: the device's row (created
/// the first time this pair is seen), its id. `None` when the user is not
/// in this store (the caller finds that out on its own insert).
pub(super) async fn seen(
    db: &impl GenericClient,
    user: &UserId,
    device: &Device,
) -> Result<Option<String>, Error> {
    let user_agent = user_agent_of(device);
    let network = device.ip.as_deref().and_then(network_of);
    let fingerprint = idm_crypto::sha256_hex(
        format!(
            "{}\u{0}{}",
            user_agent.as_deref().unwrap_or_default(),
            network.as_deref().unwrap_or_default()
        )
        .as_bytes(),
    );
    let fresh = DeviceId::generate();
    let id = sqlx::query_scalar!(
        "INSERT INTO devices (id, user_id, fingerprint, user_agent, ip_network)
             SELECT $1, id, $3, $4, $5 FROM users WHERE id = $2
             ON CONFLICT (user_id, fingerprint) DO UPDATE SET last_seen_at = now()
             RETURNING id",
        fresh.as_str(),
        user.as_str(),
        fingerprint,
        user_agent,
        network,
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(id)
}

// A refresh shows the session's device again: the `device` arm of the
// rotation statement (sessions.rs).

struct DeviceRow {
    id: String,
    user_id: String,
    user_agent: Option<String>,
    ip_network: Option<String>,
    first_seen_at: idm_core::Timestamp,
    last_seen_at: idm_core::Timestamp,
    active_sessions: i64,
}

fn device(row: DeviceRow) -> Result<DeviceRecord, Error> {
    Ok(DeviceRecord {
        id: DeviceId::parse(&row.id).map_err(|_| corrupt())?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt())?,
        user_agent: row.user_agent,
        ip_network: row.ip_network,
        first_seen_at: row.first_seen_at,
        last_seen_at: row.last_seen_at,
        active_sessions: row.active_sessions,
    })
}

impl IssuerStore {
    /// The user's devices, most recently seen first, a page at a time.
    pub async fn devices_of(
        &self,
        user: &UserId,
        page: &Page,
    ) -> Result<(Vec<DeviceRecord>, bool), Error> {
        let (after_at, after_id) = match &page.starting_after {
            None => (None, None),
            Some(raw) => {
                let id = DeviceId::parse(raw)?;
                let at = sqlx::query_scalar!(
                    "SELECT last_seen_at FROM devices WHERE id = $1 AND user_id = $2",
                    id.as_str(),
                    user.as_str(),
                )
                .fetch_optional(&mut *self.client.conn().await)
                .await
                .map_err(DbError::from)?
                .ok_or_else(|| ApiError::not_found("device"))?;
                (Some(at), Some(id))
            }
        };
        let rows = sqlx::query_as!(
            DeviceRow,
            r#"SELECT d.id, d.user_id, d.user_agent, d.ip_network, d.first_seen_at, d.last_seen_at,
                      (SELECT count(*) FROM sessions s
                        WHERE s.device_id = d.id AND s.revoked_at IS NULL AND s.expires_at > now()) AS "active_sessions!"
                 FROM devices d
                WHERE d.user_id = $1
                  AND ($2::timestamptz IS NULL OR (d.last_seen_at, d.id) < ($2, $3))
                ORDER BY d.last_seen_at DESC, d.id DESC LIMIT $4"#,
            user.as_str(),
            after_at,
            after_id.as_ref().map(DeviceId::as_str),
            page.fetch(),
        )
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let devices = rows.into_iter().map(device).collect::<Result<_, _>>()?;
        Ok(page.cut(devices))
    }

    /// Revokes every live session of the user's device; `None` when the
    /// device is not the user's. The caller announces the revocations.
    pub async fn revoke_device(
        &mut self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<Vec<SessionRecord>>, Error> {
        let owned = sqlx::query_scalar!(
            "SELECT id FROM devices WHERE id = $1 AND user_id = $2",
            device.as_str(),
            user.as_str(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        if owned.is_none() {
            return Ok(None);
        }
        let sessions = sqlx::query_scalar!(
            "SELECT id FROM sessions WHERE device_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            device.as_str(),
            user.as_str(),
        )
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let mut revoked = Vec::with_capacity(sessions.len());
        for id in sessions {
            let id = idm_core::SessionId::parse(&id).map_err(|_| corrupt())?;
            if let Some(record) = self.revoke_session(&id, "device_revoked").await? {
                revoked.push(record);
            }
        }
        Ok(Some(revoked))
    }
}

#[cfg(test)]
mod tests {
    use super::network_of;

    #[test]
    fn only_the_network_is_kept() {
        assert_eq!(
            network_of("203.0.113.77").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(
            network_of("2001:db8:abcd:12::1").as_deref(),
            Some("2001:db8:abcd::/48")
        );
        assert_eq!(
            network_of("::ffff:198.51.100.9").as_deref(),
            Some("198.51.100.0/24")
        );
        assert_eq!(network_of("not an address"), None);
    }
}
