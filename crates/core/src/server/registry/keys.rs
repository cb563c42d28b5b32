//! Credentials in the registry: admin tokens and their scope, device keys and the tokens
//! they obtain, and what revoking a key ends.

use super::refusal::{Refusal, RefusalKind as K};
use super::*;
use crate::server::device_keys::{DeviceKey, DeviceKeys};

/// What `POST /api/v1/apps/{app}/device-keys` asks for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceKey {
    /// The user its tokens are for.
    pub user_id: String,
    /// The room its tokens are for (any room when absent).
    #[serde(default)]
    pub room_id: Option<String>,
    /// Privileges (default: login, publish, play). `admin` is never granted to a device.
    #[serde(default)]
    pub privileges: Option<Vec<String>>,
}

/// A token obtained with a device key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// Its lifetime, seconds.
    pub expires_in: u64,
    /// The app.
    pub app_id: u32,
    /// The user it is for.
    pub user_id: String,
    /// The room it is for, if limited to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
}

impl Registry {
    /// Installs the stored device keys (at start).
    pub fn load_device_keys(&mut self, keys: DeviceKeys) {
        self.apps.device_keys = keys;
    }

    /// Checks an admin API token for `app_id` (NotFound: ADMIN_NOT_FOUND, Unauthenticated:
    /// ADMIN_UNAUTHORIZED, Forbidden: ADMIN_FORBIDDEN); `room_id` is the room the request is
    /// about, if any.
    pub fn admin_claims(&self, app_id: u32, token: &str, room_id: Option<&str>, now: Now) -> Result<Claims, Refusal> {
        self.apps.admin_claims(app_id, token, room_id, now.unix_secs())
    }

    /// Creates a device key within the admin token's scope.
    pub fn create_device_key(
        &mut self,
        app_id: u32,
        admin: &Claims,
        req: NewDeviceKey,
        now: Now,
    ) -> Result<(DeviceKey, String), Refusal> {
        let bad = |m: &str| Refusal::new(K::Invalid, ErrorCode::ADMIN_BAD_REQUEST, m);
        ids::check_user_id(&req.user_id).map_err(|_| bad("user_id must be a valid user ID"))?;
        if req.user_id == "*" {
            return Err(bad("a device key is for one user, not *"));
        }
        if let Some(r) = &req.room_id {
            ids::check_room_id(r).map_err(|_| bad("room_id must be a valid room ID"))?;
        }
        let room_id = match (&admin.room_id, req.room_id) {
            (Some(mine), None) => Some(mine.clone()),
            (Some(mine), Some(r)) if &r != mine => {
                return Err(Refusal::new(
                    K::Forbidden,
                    ErrorCode::ADMIN_FORBIDDEN,
                    format!("the token is limited to room {mine}"),
                ));
            }
            (_, r) => r,
        };
        let privileges = req.privileges.unwrap_or_else(|| ["login", "publish", "play"].map(String::from).to_vec());
        auth::check_privileges(&privileges).map_err(|e| bad(&e.to_string()))?;
        if privileges.iter().any(|p| p == "admin") || !privileges.iter().any(|p| p == "login") {
            return Err(bad("a device key needs login and can never carry admin"));
        }
        let made = self.apps.device_keys.create(app_id, req.user_id, room_id, privileges, now.unix_secs());
        tracing::info!(callbox_event = "device_key", app_id, key = %made.0.id, user_id = %made.0.user_id, "device key created");
        self.out.push_back(Output::SaveDeviceKeys(self.apps.device_keys.to_json()));
        Ok(made)
    }

    /// The app's device keys the admin token may see.
    pub fn list_device_keys(&self, app_id: u32, admin: &Claims) -> Vec<DeviceKey> {
        let mut keys = self.apps.device_keys.list(app_id);
        if let Some(room) = &admin.room_id {
            keys.retain(|k| k.room_id.as_ref() == Some(room));
        }
        keys
    }

    /// Revokes a key: the sessions that logged in with its tokens end at once with
    /// DEVICE_KEY_REVOKED, and its tokens are refused from now on. The number of sessions
    /// ended, or `None` when there is no such key in the admin token's scope.
    pub fn revoke_device_key(&mut self, app_id: u32, admin: &Claims, id: &str, now: Now) -> Option<usize> {
        let in_scope = self
            .apps
            .device_keys
            .list(app_id)
            .iter()
            .any(|k| k.id == id && admin.room_id.as_ref().is_none_or(|r| k.room_id.as_ref() == Some(r)));
        if !in_scope {
            return None;
        }
        self.apps.device_keys.revoke(app_id, id)?;
        self.out.push_back(Output::SaveDeviceKeys(self.apps.device_keys.to_json()));
        let ended = self.sessions.ids_where(|s| s.app_id == app_id && s.claims.dk.as_deref() == Some(id));
        for sid in &ended {
            self.kick_session(sid, ErrorCode::DEVICE_KEY_REVOKED, "the device key of this session was revoked", now);
        }
        tracing::info!(callbox_event = "device_key", app_id, key = %id, sessions = ended.len(), "device key revoked");
        Some(ended.len())
    }

    /// `POST /api/v1/token`: a short-lived token for exactly the key's scope. Refused keys
    /// draw on the per-address budget of refused logins.
    pub fn device_token(&mut self, presented: &str, peer: Option<IpAddr>, now: Now) -> Result<IssuedToken, Refusal> {
        let key = match self.apps.device_keys.check(presented) {
            Ok(k) => k.clone(),
            Err(code) => {
                if !self.conns.refused_from(peer, now.at) {
                    let why = "too many refused keys; retry later";
                    return Err(Refusal::new(K::RateLimited, ErrorCode::LOGIN_RATE_LIMITED, why));
                }
                return Err(Refusal::new(K::Unauthenticated, code, "unknown, malformed or revoked device key"));
            }
        };
        let Some(app_key) = self.apps.key(key.app_id) else {
            let why = "the key's app is not on this server";
            return Err(Refusal::new(K::Unauthenticated, ErrorCode::DEVICE_KEY_INVALID, why));
        };
        let unix = now.unix_secs();
        let expires_in = self.limits.device_token_secs;
        let claims = Claims {
            app_id: key.app_id,
            user_id: key.user_id.clone(),
            room_id: key.room_id.clone(),
            privileges: key.privileges.clone(),
            streams: None,
            dk: Some(key.id.clone()),
            nbf: None,
            iat: unix,
            exp: unix + expires_in,
        };
        let token = auth::mint(app_key, &claims)
            .map_err(|e| Refusal::new(K::Internal, ErrorCode::SERVER_INTERNAL, format!("minting failed: {e}")))?;
        Ok(IssuedToken { token, expires_in, app_id: key.app_id, user_id: key.user_id, room_id: key.room_id })
    }
}
