//! Device keys: a per-device credential an admin creates for one user (and optionally one
//! room) of one app. A device holds its key instead of the app secret and exchanges it at
//! `POST /api/v1/token` for short-lived tokens of exactly that scope. Keys are stored hashed
//! (SHA-256 of 256 random bits: a stolen key file or state file mints nothing), shown once,
//! and revoked by ID; revocation is remembered so tokens already issued stop working too.
//!
//! This type is data only; the registry decides and the hub task writes the file.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::proto::ErrorCode;

/// The prefix of every device key, so a key in a log or a config is recognisable.
pub const KEY_PREFIX: &str = "cbk_";

/// One device key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The key's public ID (part of the key itself).
    pub id: String,
    /// The app.
    pub app_id: u32,
    /// The only user its tokens are for.
    pub user_id: String,
    /// The only room its tokens are for (any room when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// The privileges its tokens carry.
    pub privileges: Vec<String>,
    /// Created at, Unix seconds.
    pub created: u64,
    /// SHA-256 of the secret part, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    hash: String,
}

/// Every device key of the server, and the IDs revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeys {
    keys: BTreeMap<String, DeviceKey>,
    revoked: BTreeSet<String>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl DeviceKeys {
    /// Reads the stored form (the state file).
    pub fn from_json(text: &str) -> Result<DeviceKeys, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Creates a key; returns its record and the key itself (shown once, never stored).
    pub fn create(
        &mut self,
        app_id: u32,
        user_id: String,
        room_id: Option<String>,
        privileges: Vec<String>,
        now: u64,
    ) -> (DeviceKey, String) {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let key = DeviceKey { id: id.clone(), app_id, user_id, room_id, privileges, created: now, hash: hash(&secret) };
        self.keys.insert(id.clone(), key.clone());
        (key, format!("{KEY_PREFIX}{id}_{secret}"))
    }

    /// The keys of an app (no secrets, no hashes).
    pub fn list(&self, app_id: u32) -> Vec<DeviceKey> {
        self.keys
            .values()
            .filter(|k| k.app_id == app_id)
            .map(|k| DeviceKey { hash: String::new(), ..k.clone() })
            .collect()
    }

    /// Revokes a key of `app_id`; its record, if it existed.
    pub fn revoke(&mut self, app_id: u32, id: &str) -> Option<DeviceKey> {
        if self.keys.get(id).is_none_or(|k| k.app_id != app_id) {
            return None;
        }
        self.revoked.insert(id.to_string());
        self.keys.remove(id)
    }

    /// Whether tokens obtained with key `id` must be refused.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains(id)
    }

    /// The record of a presented key, if it is one of ours and not revoked.
    pub fn check(&self, presented: &str) -> Result<&DeviceKey, ErrorCode> {
        let rest = presented.trim().strip_prefix(KEY_PREFIX).ok_or(ErrorCode::DEVICE_KEY_INVALID)?;
        let (id, secret) = rest.split_once('_').ok_or(ErrorCode::DEVICE_KEY_INVALID)?;
        let key = self.keys.get(id).ok_or(ErrorCode::DEVICE_KEY_INVALID)?;
        // Both sides are fixed-length hex digests: compare without an early exit.
        let (a, b) = (hash(secret), key.hash.as_str());
        let same = a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if !same {
            return Err(ErrorCode::DEVICE_KEY_INVALID);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_list_revoke_and_survive_a_round_trip() {
        let mut keys = DeviceKeys::default();
        let (rec, key) = keys.create(7, "door".into(), Some("lobby".into()), vec!["login".into()], 100);
        assert!(key.starts_with("cbk_"));
        assert_eq!(keys.check(&key).unwrap().user_id, "door");
        // One character of the secret changed (a random key need not contain any given one).
        let last = key.chars().last().unwrap();
        let wrong = format!("{}{}", &key[..key.len() - 1], if last == '0' { '1' } else { '0' });
        assert_eq!(keys.check(&wrong).err(), Some(ErrorCode::DEVICE_KEY_INVALID));
        assert_eq!(keys.check("garbage").err(), Some(ErrorCode::DEVICE_KEY_INVALID));
        assert!(!keys.to_json().contains(key.rsplit('_').next().unwrap()), "the secret is never stored");
        let listed = keys.list(7);
        assert_eq!(listed.len(), 1);
        assert!(listed[0].hash.is_empty());
        assert!(keys.list(8).is_empty());
        let back = DeviceKeys::from_json(&keys.to_json()).unwrap();
        assert_eq!(back.check(&key).unwrap().id, rec.id);
        assert!(keys.revoke(8, &rec.id).is_none(), "another app cannot revoke it");
        assert!(keys.revoke(7, &rec.id).is_some());
        assert!(keys.is_revoked(&rec.id));
        assert_eq!(keys.check(&key).err(), Some(ErrorCode::DEVICE_KEY_INVALID));
        assert!(DeviceKeys::from_json(&keys.to_json()).unwrap().is_revoked(&rec.id));
        assert!(DeviceKeys::from_json("{not json").is_err());
    }
}
