//! Stateless session-token verification at the edge, against the calling
//! issuer's own key ring (fetched from the session service, sealed under the
//! key-transport key, and cached), and against the issuer's session lifetime:
//! a validly signed token that claims to live longer than the issuer allows
//! is refused, whoever signed it.

use base64::Engine;
use idm_bus::Bus;
use idm_core::proto::session::{KeyRingRequest, RefreshRules};
use idm_core::{ApiError, ErrorCode, IssuerId};
use idm_crypto::session_token::{self, RingKey, SessionClaims, TokenError};
use idm_crypto::KeyTransport;
use std::sync::Arc;
use std::time::Duration;

/// How far in the future a token's `iat` may lie (clock skew between the
/// session service and the edge). Without this bound a token "issued" a year
/// from now with a short `exp - iat` would live for a year.
const MAX_CLOCK_SKEW_SECONDS: i64 = 60;

/// An issuer's ring as this edge holds it.
pub struct Ring {
    keys: Vec<RingKey>,
    /// The key that signs: the session service marks it.
    current: Option<usize>,
    /// Present when this edge may rotate refresh tokens itself (a session
    /// service of this release or later sent the ring).
    pub refresh: Option<RefreshRules>,
}

impl Ring {
    pub fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn current(&self) -> Option<&RingKey> {
        self.current.and_then(|i| self.keys.get(i))
    }
}

#[derive(Clone)]
pub struct SessionKeys {
    bus: Bus,
    transport: Arc<KeyTransport>,
    rings: moka::future::Cache<IssuerId, Arc<Ring>>,
    /// Issuers whose ring was re-fetched for an unknown key id just now, so
    /// made-up key ids cannot turn into a stream of lookups.
    recently_refreshed: moka::future::Cache<IssuerId, ()>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::SessionInvalid, message)
}

impl SessionKeys {
    pub fn new(bus: Bus, transport: KeyTransport) -> Self {
        Self {
            bus,
            transport: Arc::new(transport),
            rings: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            recently_refreshed: moka::future::Cache::builder()
                .time_to_live(Duration::from_secs(2))
                .build(),
        }
    }

    /// The issuer's ring, from the cache or fetched.
    pub async fn ring(&self, issuer: &IssuerId) -> Result<Arc<Ring>, ApiError> {
        let bus = self.bus.clone();
        let transport = Arc::clone(&self.transport);
        let issuer_id = issuer.clone();
        self.rings
            .try_get_with(issuer.clone(), async move {
                let nonce = idm_crypto::key_transport::new_nonce();
                let request = KeyRingRequest {
                    issuer_id: issuer_id.clone(),
                    nonce: nonce.clone(),
                };
                let ring = bus.send(&request).await?;
                if ring.issuer_id != issuer_id {
                    return Err(ApiError::internal_from(&"key ring of another issuer"));
                }
                let current = ring.keys.iter().position(|k| k.current);
                let keys = ring
                    .keys
                    .into_iter()
                    .map(|k| {
                        let sealed = base64::engine::general_purpose::STANDARD
                            .decode(k.sealed_secret.as_bytes())
                            .map_err(|e| ApiError::internal_from(&e))?;
                        // A key that does not open means the transport keys of
                        // the edge and the session service differ: an operator
                        // error, reported as such rather than as bad tokens.
                        transport
                            .open(&issuer_id, &k.kid, &nonce, &sealed)
                            .map_err(|e| {
                                ApiError::internal_from(&format!(
                                    "a signing key did not open ({e}): is EDGE_KEY_TRANSPORT_KEY the session service's SESSION_KEY_TRANSPORT_KEY?"
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                Ok::<_, ApiError>(Arc::new(Ring {
                    keys,
                    current,
                    refresh: ring.refresh,
                }))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    pub async fn forget(&self, issuer: &IssuerId) {
        self.rings.invalidate(issuer).await;
    }

    /// The issuer's ring holding `kid`, fetched again once if the cached one
    /// does not (a key rotated in by the session service moments ago). For
    /// key ids the platform wrote (a sealed successor in a store), not ones
    /// a caller sent: those go through [`verify`](Self::verify)'s throttle.
    pub async fn ring_with(&self, issuer: &IssuerId, kid: &str) -> Result<Arc<Ring>, ApiError> {
        let ring = self.ring(issuer).await?;
        if ring.find(kid).is_some() {
            return Ok(ring);
        }
        self.forget(issuer).await;
        self.ring(issuer).await
    }

    /// Drops every cached ring (after a bus reconnect: a key revocation
    /// broadcast may have been missed).
    pub fn forget_all(&self) {
        self.rings.invalidate_all();
    }

    /// Verifies `token` for `issuer`: a token of any other issuer, a forged or
    /// altered token, an expired one, and one whose lifetime (`exp - iat`)
    /// exceeds `max_lifetime_seconds` (or issued in the future) are all
    /// `session_invalid`.
    pub async fn verify(
        &self,
        issuer: &IssuerId,
        token: &str,
        max_lifetime_seconds: u32,
    ) -> Result<SessionClaims, ApiError> {
        let kid = session_token::kid_of(token)
            .ok_or_else(|| invalid("the session token is malformed"))?
            .to_owned();
        let mut ring = self.ring(issuer).await?;
        if ring.find(&kid).is_none() && !self.recently_refreshed.contains_key(issuer) {
            self.recently_refreshed.insert(issuer.clone(), ()).await;
            self.rings.invalidate(issuer).await;
            ring = self.ring(issuer).await?;
        }
        let now = idm_core::now().unix_timestamp();
        let claims = session_token::verify(token, issuer, now, |kid| ring.find(kid)).map_err(
            |e| match e {
                TokenError::Expired => invalid("the session has expired"),
                _ => invalid("the session token is not valid"),
            },
        )?;
        check_lifetime(&claims, now, max_lifetime_seconds)?;
        Ok(claims)
    }
}

/// A signed token is still refused when it claims more than the issuer's
/// session lifetime, or to be issued in the future.
fn check_lifetime(
    claims: &SessionClaims,
    now: i64,
    max_lifetime_seconds: u32,
) -> Result<(), ApiError> {
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime > i64::from(max_lifetime_seconds) || lifetime <= 0 {
        metrics::counter!("idm_edge_session_lifetime_refusals_total").increment(1);
        return Err(invalid(
            "the session token outlives this application's session lifetime",
        ));
    }
    if claims.iat > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
        metrics::counter!("idm_edge_session_lifetime_refusals_total").increment(1);
        return Err(invalid("the session token was issued in the future"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::{Region, SessionId, UserId};

    fn claims(iat: i64, exp: i64) -> SessionClaims {
        SessionClaims {
            iss: IssuerId::generate(),
            sid: SessionId::generate(),
            sub: UserId::generate(),
            reg: Region::Weur,
            iat,
            exp,
        }
    }

    #[test]
    fn lifetimes_beyond_the_policy_or_from_the_future_are_refused() {
        let now = 1_000_000;
        assert!(check_lifetime(&claims(now, now + 600), now, 600).is_ok());
        assert!(check_lifetime(&claims(now - 10, now + 590), now, 600).is_ok());
        assert!(check_lifetime(&claims(now, now + 601), now, 600).is_err());
        assert!(check_lifetime(&claims(now, now + 365 * 86_400), now, 86_400).is_err());
        assert!(check_lifetime(&claims(now + 30, now + 630), now, 600).is_ok());
        assert!(check_lifetime(&claims(now + 3600, now + 3700), now, 600).is_err());
        assert!(check_lifetime(&claims(now, now), now, 600).is_err());
        assert!(check_lifetime(&claims(i64::MIN, i64::MAX), now, 600).is_err());
    }
}
