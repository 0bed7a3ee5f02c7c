//! Stateless session-token verification at the edge, against the calling
//! issuer's own key ring (fetched from the session service and cached).

use base64::Engine;
use idm_bus::Bus;
use idm_core::proto::session::{self, KeyRing, KeyRingRequest};
use idm_core::{ApiError, ErrorCode, IssuerId};
use idm_crypto::session_token::{self, RingKey, SessionClaims, TokenError};
use std::sync::Arc;
use std::time::Duration;

type Ring = Arc<Vec<RingKey>>;

#[derive(Clone)]
pub struct SessionKeys {
    bus: Bus,
    rings: moka::future::Cache<IssuerId, Ring>,
    /// Issuers whose ring was re-fetched for an unknown key id just now, so
    /// made-up key ids cannot turn into a stream of lookups.
    recently_refreshed: moka::future::Cache<IssuerId, ()>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::SessionInvalid, message)
}

impl SessionKeys {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            rings: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            recently_refreshed: moka::future::Cache::builder()
                .time_to_live(Duration::from_secs(2))
                .build(),
        }
    }

    async fn ring(&self, issuer: &IssuerId) -> Result<Ring, ApiError> {
        let bus = self.bus.clone();
        let request = KeyRingRequest {
            issuer_id: issuer.clone(),
        };
        self.rings
            .try_get_with(issuer.clone(), async move {
                let ring: KeyRing = bus.call("session", session::KEY_RING, &request).await?;
                let keys = ring
                    .keys
                    .into_iter()
                    .filter_map(|k| {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(k.secret.expose())
                            .ok()?;
                        let secret: [u8; 32] = bytes.as_slice().try_into().ok()?;
                        Some(RingKey {
                            kid: k.kid,
                            secret: zeroize::Zeroizing::new(secret),
                        })
                    })
                    .collect();
                Ok::<_, ApiError>(Arc::new(keys))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    pub async fn forget(&self, issuer: &IssuerId) {
        self.rings.invalidate(issuer).await;
    }

    /// Verifies `token` for `issuer`: a token of any other issuer, a forged or
    /// altered token, and an expired one are all `session_invalid`.
    pub async fn verify(&self, issuer: &IssuerId, token: &str) -> Result<SessionClaims, ApiError> {
        let kid = session_token::kid_of(token)
            .ok_or_else(|| invalid("the session token is malformed"))?
            .to_owned();
        let mut ring = self.ring(issuer).await?;
        if !ring.iter().any(|k| k.kid == kid) && !self.recently_refreshed.contains_key(issuer) {
            self.recently_refreshed.insert(issuer.clone(), ()).await;
            self.rings.invalidate(issuer).await;
            ring = self.ring(issuer).await?;
        }
        let now = idm_core::now().unix_timestamp();
        session_token::verify(token, issuer, now, |kid| ring.iter().find(|k| k.kid == kid)).map_err(
            |e| match e {
                TokenError::Expired => invalid("the session has expired"),
                _ => invalid("the session token is not valid"),
            },
        )
    }
}
