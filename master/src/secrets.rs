//! The master's secrets: sealed at rest with a key file in the data directory, opened only to
//! send a value to a host whose containers use it.
//!
//! `secrets.key` holds 32 random bytes (hex). From it HKDF derives one key for
//! ChaCha20-Poly1305, which seals each value with the secret's name as associated data (a
//! sealed value cannot be moved under another name), and one for HMAC-SHA256, which gives each
//! value its fingerprint: a spec carries the fingerprint, so a new value changes the hash of
//! the containers that use it, while nothing in a spec, a record or a log tells the value.
//! Every master of a fleet that shares a store needs the same key file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use brine_common::names::SecretName;
use brine_common::secret::{SecretValue, SecretValueError};
use brine_common::spec::DesiredState;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};

use crate::store::{SecretRecord, Store, StoreError};

/// The key file's bytes.
const KEY_BYTES: usize = 32;
/// A fingerprint's bytes (shown as twice as many hex digits).
const FINGERPRINT_BYTES: usize = 16;
/// Opened values kept in memory for the links, beyond which the cache starts again: a fleet has
/// a handful of secrets, and each new value adds one entry.
const CACHE_ENTRIES: usize = 1024;

/// Why a secret could not be sealed, opened or found.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0:?} is not held by the master; set it with `brine-master secret set {0}`")]
    NotFound(SecretName),
    #[error(
        "secret {0:?} was given a new value after the job started; run the job again to send it"
    )]
    Changed(SecretName),
    #[error(
        "secret {name:?} was sealed with key {sealed_with}, and this master's secrets.key is \
         {this}: copy secrets.key from the master that set it into this master's data directory"
    )]
    OtherKey {
        name: SecretName,
        sealed_with: String,
        this: String,
    },
    #[error("secret {0:?} does not open with this master's key: its record is damaged")]
    Damaged(SecretName),
    #[error(transparent)]
    Value(#[from] SecretValueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master's key, and the values it opened lately.
pub struct Vault {
    sealing: aead::LessSafeKey,
    fingerprinting: hmac::Key,
    key_id: String,
    random: SystemRandom,
    opened: Mutex<HashMap<(SecretName, String), SecretValue>>,
}

/// A length for HKDF's output.
struct Bytes(usize);

impl hkdf::KeyType for Bytes {
    fn len(&self) -> usize {
        self.0
    }
}

impl Vault {
    /// The vault of the key in `path`, made (private to the master's user) if there is none.
    pub fn open_or_create(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
                let text = format!("{}\n", hex::encode(key));
                brine_daemon::files::write_new(path, &text, 0o600)
                    .with_context(|| format!("create the secrets key {}", path.display()))?;
                tracing::info!(path = %path.display(), "created the key that seals secrets");
                text
            }
            Err(err) => {
                return Err(err).with_context(|| format!("read {}", path.display()));
            }
        };
        let key = hex::decode(text.trim())
            .ok()
            .filter(|key| key.len() == KEY_BYTES)
            .with_context(|| {
                format!(
                    "{} must hold {KEY_BYTES} bytes as {} hex digits",
                    path.display(),
                    KEY_BYTES * 2
                )
            })?;
        Ok(Self::from_key(&key))
    }

    fn from_key(key: &[u8]) -> Self {
        let root = hkdf::Salt::new(hkdf::HKDF_SHA256, b"brine secrets").extract(key);
        let derive = |info: &'static [u8], len: usize| {
            let mut bytes = vec![0u8; len];
            root.expand(&[info], Bytes(len))
                .and_then(|okm| okm.fill(&mut bytes))
                .expect("HKDF-SHA256 gives up to 8160 bytes");
            bytes
        };
        let sealing = aead::UnboundKey::new(
            &aead::CHACHA20_POLY1305,
            &derive(b"seal v1", aead::CHACHA20_POLY1305.key_len()),
        )
        .expect("the derived key has the algorithm's length");
        Self {
            sealing: aead::LessSafeKey::new(sealing),
            fingerprinting: hmac::Key::new(hmac::HMAC_SHA256, &derive(b"fingerprint v1", 32)),
            key_id: hex::encode(derive(b"key id v1", 8)),
            random: SystemRandom::new(),
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Which key this is, as records name it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The fingerprint of `value` as the value of `name`.
    pub fn fingerprint(&self, name: &SecretName, value: &SecretValue) -> String {
        let mut context = hmac::Context::with_key(&self.fingerprinting);
        context.update(name.as_str().as_bytes());
        context.update(&[0]);
        context.update(value.expose().as_bytes());
        hex::encode(&context.sign().as_ref()[..FINGERPRINT_BYTES])
    }

    /// Seals `value` as the value of `name`.
    pub fn seal(
        &self,
        name: &SecretName,
        value: &SecretValue,
        updated_by: String,
        now_unix_ms: i64,
    ) -> anyhow::Result<SecretRecord> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        let mut sealed = value.expose().as_bytes().to_vec();
        self.sealing
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(name.as_str().as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        Ok(SecretRecord {
            fingerprint: self.fingerprint(name, value),
            key_id: self.key_id.clone(),
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
            updated_at_unix_ms: now_unix_ms,
            updated_by,
        })
    }

    /// Opens the value `record` holds for `name`.
    pub fn open(
        &self,
        name: &SecretName,
        record: &SecretRecord,
    ) -> Result<SecretValue, SecretError> {
        if record.key_id != self.key_id {
            return Err(SecretError::OtherKey {
                name: name.clone(),
                sealed_with: record.key_id.clone(),
                this: self.key_id.clone(),
            });
        }
        let damaged = || SecretError::Damaged(name.clone());
        let nonce: [u8; aead::NONCE_LEN] = hex::decode(&record.nonce)
            .ok()
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or_else(damaged)?;
        let mut sealed = hex::decode(&record.sealed).map_err(|_| damaged())?;
        let plain = self
            .sealing
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(name.as_str().as_bytes()),
                &mut sealed,
            )
            .map_err(|_| damaged())?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| damaged())?;
        Ok(SecretValue::new(text)?)
    }

    /// The values of the secrets `desired` uses, each the one its fingerprint names: from
    /// memory, or opened from the store. A secret deleted or given a new value since the job
    /// filled in its fingerprint is an error, not a silently different value.
    pub async fn values_for(
        &self,
        store: &dyn Store,
        desired: &DesiredState,
    ) -> Result<BTreeMap<SecretName, SecretValue>, SecretError> {
        let mut values = BTreeMap::new();
        for reference in desired.secret_refs() {
            if values.contains_key(&reference.secret) {
                continue;
            }
            let key = (reference.secret.clone(), reference.fingerprint.clone());
            let cached = self.cache().get(&key).cloned();
            let value = match cached {
                Some(value) => value,
                None => {
                    let record = store
                        .secret(reference.secret.clone())
                        .await?
                        .ok_or_else(|| SecretError::NotFound(reference.secret.clone()))?;
                    if record.fingerprint != reference.fingerprint {
                        return Err(SecretError::Changed(reference.secret.clone()));
                    }
                    let value = self.open(&reference.secret, &record)?;
                    let mut cache = self.cache();
                    if cache.len() >= CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(key, value.clone());
                    value
                }
            };
            values.insert(reference.secret.clone(), value);
        }
        Ok(values)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(SecretName, String), SecretValue>> {
        // A panic while the lock was held cannot leave the map half-changed.
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
