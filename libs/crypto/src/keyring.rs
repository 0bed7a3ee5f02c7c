//! A service's master keys during a rotation: the current key, which seals
//! everything new, and optionally the previous one, which only opens what
//! was sealed before the rotation. Values sealed here carry a short key id
//! (`idk1` ‖ 4 bytes derived from the key, never the key itself) in front of
//! the nonce, so the right key is chosen without trial decryption; values
//! sealed before key ids existed (`nonce ‖ ciphertext`) are still opened, by
//! trying the current key and then the previous one.

use crate::{CryptoError, MasterKey};
use zeroize::Zeroizing;

/// Marks a sealed value that names its key.
const MAGIC: [u8; 4] = *b"idk1";
/// Length of a key id.
pub const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN;

/// Which configured key opened a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Current,
    Previous,
}

/// A value opened by [`MasterKeys::open`].
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub key: Which,
    /// Whether the value named its key (sealed since key ids exist).
    pub tagged: bool,
}

impl Opened {
    /// Sealed under the previous key, or under the current one before key
    /// ids existed: a re-seal moves it to the current key's tagged form.
    pub fn needs_reseal(&self) -> bool {
        self.key == Which::Previous || !self.tagged
    }
}

/// The current master key and, during a rotation, the previous one.
pub struct MasterKeys {
    current: MasterKey,
    current_id: [u8; KEY_ID_LEN],
    previous: Option<(MasterKey, [u8; KEY_ID_LEN])>,
}

fn key_id(key: &MasterKey) -> [u8; KEY_ID_LEN] {
    let full = key.derive("idmesh/master-key/key-id/v1");
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&full[..KEY_ID_LEN]);
    id
}

impl MasterKeys {
    /// From the configured base64 values (`<P>_MASTER_KEY` and the optional
    /// `<P>_MASTER_KEY_PREVIOUS`). A previous key equal to the current one
    /// is refused: it is a configuration mistake, not a rotation.
    pub fn from_base64(current: &str, previous: Option<&str>) -> Result<Self, CryptoError> {
        let current = MasterKey::from_base64(current)?;
        let previous = previous.map(MasterKey::from_base64).transpose()?;
        Self::new(current, previous)
    }

    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Result<Self, CryptoError> {
        let current_id = key_id(&current);
        let previous = previous.map(|key| {
            let id = key_id(&key);
            (key, id)
        });
        if previous.as_ref().is_some_and(|(_, id)| *id == current_id) {
            return Err(CryptoError::PreviousIsCurrent);
        }
        Ok(Self {
            current,
            current_id,
            previous,
        })
    }

    /// The key that seals new values.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Every configured key for one derived purpose (MAC and hash keys),
    /// the current key's first: verification accepts any of them while a
    /// rotation overlaps, new values use the first.
    pub fn derive_all(&self, purpose: &str) -> Vec<Zeroizing<[u8; 32]>> {
        let mut all = vec![self.current.derive(purpose)];
        if let Some((previous, _)) = &self.previous {
            all.push(previous.derive(purpose));
        }
        all
    }

    /// The same pair, each derived for one sealing purpose.
    pub fn derive_sealing_keys(&self, purpose: &str) -> Self {
        let current = self.current.derive_sealing_key(purpose);
        let current_id = key_id(&current);
        let previous = self.previous.as_ref().map(|(key, _)| {
            let derived = key.derive_sealing_key(purpose);
            let id = key_id(&derived);
            (derived, id)
        });
        Self {
            current,
            current_id,
            previous,
        }
    }

    /// `idk1 ‖ key id ‖ nonce ‖ ciphertext`, under the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let body = self.current.seal(plaintext, aad)?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.current_id);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Which key a tagged value names without opening it (`None`: untagged,
    /// or a key that is not configured).
    pub fn named_key(&self, sealed: &[u8]) -> Option<Which> {
        let id = sealed.get(MAGIC.len()..HEADER_LEN)?;
        if sealed.get(..MAGIC.len())? != MAGIC {
            return None;
        }
        if id == self.current_id {
            Some(Which::Current)
        } else if self.previous.as_ref().is_some_and(|(_, p)| id == p) {
            Some(Which::Previous)
        } else {
            None
        }
    }

    /// Whether the value is already in its final form: tagged with the
    /// current key (no decryption needed to tell).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        self.named_key(sealed) == Some(Which::Current)
    }

    /// Opens a value sealed under either configured key. A tagged value is
    /// opened with the key it names only; an untagged one (sealed before key
    /// ids existed) with the current key, then the previous one. A value
    /// neither key opens is [`CryptoError::NoMasterKeyOpens`]: the master key
    /// was changed without giving the old one as previous, or the value was
    /// tampered with.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Opened, CryptoError> {
        match self.named_key(sealed) {
            Some(Which::Current) => {
                if let Ok(plaintext) = self.current.open(&sealed[HEADER_LEN..], aad) {
                    return Ok(Opened {
                        plaintext,
                        key: Which::Current,
                        tagged: true,
                    });
                }
            }
            Some(Which::Previous) => {
                if let Some((previous, _)) = &self.previous {
                    if let Ok(plaintext) = previous.open(&sealed[HEADER_LEN..], aad) {
                        return Ok(Opened {
                            plaintext,
                            key: Which::Previous,
                            tagged: true,
                        });
                    }
                }
            }
            None => {}
        }
        // Untagged (or, with odds of 2^-32, a nonce that starts like a tag).
        if let Ok(plaintext) = self.current.open(sealed, aad) {
            return Ok(Opened {
                plaintext,
                key: Which::Current,
                tagged: false,
            });
        }
        if let Some((previous, _)) = &self.previous {
            if let Ok(plaintext) = previous.open(sealed, aad) {
                return Ok(Opened {
                    plaintext,
                    key: Which::Previous,
                    tagged: false,
                });
            }
        }
        Err(CryptoError::NoMasterKeyOpens)
    }

    /// `open`, then a fresh seal under the current key when the value needs
    /// one (`None` when it is already current): what a re-seal pass writes
    /// back, compare-and-swap on the old value.
    pub fn reseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let opened = self.open(sealed, aad)?;
        if !opened.needs_reseal() {
            return Ok(None);
        }
        Ok(Some(self.seal(&opened.plaintext, aad)?))
    }
}

/// How often a service's re-seal pass runs after the one at start-up.
pub const RESEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `pass` at start-up and then every [`RESEAL_EVERY`] until `stop`
/// completes, publishing each result as `service`'s `rows` (see
/// [`ResealPass::publish`]); a failed pass is logged and tried again at the
/// next tick. Shared by every service that keeps values sealed at rest.
pub fn spawn_resealing<P, F, E>(
    service: &'static str,
    rows: &'static str,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    mut pass: P,
) -> tokio::task::JoinHandle<()>
where
    P: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = Result<ResealPass, E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(RESEAL_EVERY);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = every.tick() => {}
            }
            match pass().await {
                Ok(done) => done.publish(service, rows),
                Err(e) => {
                    tracing::warn!(service, rows, error = %e, "re-seal pass failed; retried later")
                }
            }
        }
    })
}

/// What one re-seal pass over a table found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealPass {
    /// Rows this pass moved to the current key.
    pub resealed: u64,
    /// Rows still under the previous key (or untagged) after the pass. A
    /// row whose compare-and-swap lost to a concurrent writer is not one:
    /// every writer seals under the current key. A pass that fails midway
    /// (a database or store error) publishes nothing and is retried.
    pub previous: u64,
    /// Rows neither configured key opens.
    pub unreadable: u64,
}

impl ResealPass {
    pub fn add(&mut self, other: ResealPass) {
        self.resealed += other.resealed;
        self.previous += other.previous;
        self.unreadable += other.unreadable;
    }

    /// Publishes the pass as gauges: `idm_sealed_rows_previous_key` (rows
    /// the previous key is still needed for: drop it at 0) and
    /// `idm_sealed_rows_unreadable` (rows no configured key opens), per
    /// service and kind of row.
    pub fn publish(&self, service: &'static str, rows: &'static str) {
        metrics::gauge!(idm_core::metric::SEALED_ROWS_PREVIOUS_KEY.name, "service" => service, "rows" => rows)
            .set(self.previous as f64);
        metrics::gauge!(idm_core::metric::SEALED_ROWS_UNREADABLE.name, "service" => service, "rows" => rows)
            .set(self.unreadable as f64);
        if self.resealed > 0 {
            metrics::counter!(idm_core::metric::SEALED_ROWS_RESEALED.name, "service" => service, "rows" => rows)
                .increment(self.resealed);
        }
        if self.unreadable > 0 {
            tracing::error!(
                service,
                rows,
                count = self.unreadable,
                "sealed rows open with neither the current nor the previous master key"
            );
        } else if self.resealed > 0 || self.previous > 0 {
            tracing::info!(
                service,
                rows,
                resealed = self.resealed,
                remaining = self.previous,
                "re-sealed rows under the current master key"
            );
        }
    }
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_key_bytes(&[byte; 32])
    }

    fn keys(current: u8, previous: Option<u8>) -> MasterKeys {
        match MasterKeys::new(key(current), previous.map(key)) {
            Ok(keys) => keys,
            Err(e) => unreachable!("distinct keys: {e}"),
        }
    }

    fn plain(opened: Result<Opened, CryptoError>) -> Option<(Vec<u8>, Which, bool)> {
        opened.ok().map(|o| (o.plaintext.to_vec(), o.key, o.tagged))
    }

    #[test]
    fn values_sealed_under_the_previous_key_open_and_reseal_under_the_current() {
        let a = keys(1, None);
        let sealed_a = a.seal(b"secret", b"row").unwrap_or_default();
        let legacy_a = key(1).seal(b"legacy", b"row").unwrap_or_default();
        assert_eq!(a.named_key(&sealed_a), Some(Which::Current));
        assert_eq!(a.named_key(&legacy_a), None);

        let b_after_a = keys(2, Some(1));
        assert_eq!(
            plain(b_after_a.open(&sealed_a, b"row")),
            Some((b"secret".to_vec(), Which::Previous, true))
        );
        assert_eq!(
            plain(b_after_a.open(&legacy_a, b"row")),
            Some((b"legacy".to_vec(), Which::Previous, false))
        );
        let resealed = b_after_a.reseal(&sealed_a, b"row").ok().flatten();
        let Some(resealed) = resealed else {
            unreachable!("a value under the previous key is re-sealed")
        };
        assert!(b_after_a.is_current(&resealed));
        assert!(matches!(b_after_a.reseal(&resealed, b"row"), Ok(None)));

        // Only B now: the re-sealed value opens, the old one does not.
        let b = keys(2, None);
        assert_eq!(
            plain(b.open(&resealed, b"row")),
            Some((b"secret".to_vec(), Which::Current, true))
        );
        assert!(matches!(
            b.open(&sealed_a, b"row"),
            Err(CryptoError::NoMasterKeyOpens)
        ));
        assert!(b.open(&legacy_a, b"row").is_err());
    }

    #[test]
    fn a_wrong_previous_key_opens_nothing_and_context_still_binds() {
        let a = keys(1, None);
        let sealed = a.seal(b"secret", b"row").unwrap_or_default();
        let wrong = keys(2, Some(3));
        assert!(wrong.open(&sealed, b"row").is_err());
        assert!(wrong.reseal(&sealed, b"row").is_err());
        let right = keys(2, Some(1));
        assert!(right.open(&sealed, b"other row").is_err());
        // A forged tag naming the current key does not make a value open.
        let mut forged = sealed.clone();
        forged[MAGIC.len()..HEADER_LEN].copy_from_slice(&right.current_id);
        assert!(right.open(&forged, b"row").is_err());
        assert!(matches!(
            MasterKeys::new(key(4), Some(key(4))),
            Err(CryptoError::PreviousIsCurrent)
        ));
    }

    #[test]
    fn derived_keys_list_the_current_first() {
        let b_after_a = keys(2, Some(1));
        let all = b_after_a.derive_all("purpose");
        assert_eq!(all.len(), 2);
        assert_eq!(*all[0], *key(2).derive("purpose"));
        assert_eq!(*all[1], *key(1).derive("purpose"));
        let sealed = keys(1, None)
            .derive_sealing_keys("mail")
            .seal(b"m", b"id")
            .unwrap_or_default();
        let opened = b_after_a.derive_sealing_keys("mail").open(&sealed, b"id");
        assert_eq!(plain(opened), Some((b"m".to_vec(), Which::Previous, true)));
    }
}
