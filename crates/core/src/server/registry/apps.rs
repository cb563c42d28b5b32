//! Apps and credentials: each app's secret and login budgets, the device keys, and every
//! check a token goes through before the registry acts on it (a signalling login, a WHIP or
//! WHEP bearer token, an admin token). What a check does not know (who is logged in, which
//! streams exist) is left to the caller.

use std::collections::HashMap;
use std::time::Instant;

use super::refusal::{Refusal, RefusalKind as K};
use crate::auth::{self, Claims, Privilege};
use crate::proto::{ErrorCode, ids};
use crate::server::config::{Limits, RegistryConfig};
use crate::server::device_keys::DeviceKeys;
use crate::server::limits::Bucket;

struct App {
    key: Vec<u8>,
    logins: Bucket,
    /// Refused logins (bad or expired tokens): an attacker with only an app ID drains this
    /// one, never the bucket of logins whose credentials check out.
    refused: Bucket,
}

impl App {
    fn new(key: Vec<u8>, limits: &Limits, now: Instant) -> Self {
        App {
            key,
            logins: Bucket::new(limits.logins_per_sec, limits.login_burst, now),
            refused: Bucket::new(limits.logins_per_sec, limits.login_burst, now),
        }
    }
}

/// The apps of one server and their credentials. See the module docs.
pub(super) struct Apps {
    map: HashMap<u32, App>,
    /// Device keys, all apps.
    pub(super) device_keys: DeviceKeys,
    max_token_secs: u64,
}

/// What a reconfiguration changed.
pub(super) struct AppChanges {
    /// Apps no longer configured (their sessions must end).
    pub(super) gone: Vec<u32>,
    /// One line per change, for the journal.
    pub(super) lines: Vec<String>,
}

fn secrets(cfg: &RegistryConfig) -> HashMap<u32, Vec<u8>> {
    cfg.apps.iter().map(|a| (a.app_id, auth::parse_secret(&a.secret).unwrap_or_default())).collect()
}

impl Apps {
    /// The apps of `cfg`. Secrets must have been validated.
    pub(super) fn new(cfg: &RegistryConfig, now: Instant) -> Self {
        let map = secrets(cfg).into_iter().map(|(id, key)| (id, App::new(key, &cfg.limits, now))).collect();
        Apps { map, device_keys: DeviceKeys::default(), max_token_secs: cfg.limits.max_token_secs }
    }

    /// Takes `cfg`'s apps, secrets and login budgets. Apps that are gone are forgotten here;
    /// the caller ends their sessions.
    pub(super) fn reconfigure(&mut self, cfg: &RegistryConfig, old: &Limits, now: Instant) -> AppChanges {
        let wanted = secrets(cfg);
        let gone: Vec<u32> = self.map.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
        let mut lines = Vec::new();
        for id in &gone {
            self.map.remove(id);
        }
        if old.logins_per_sec != cfg.limits.logins_per_sec || old.login_burst != cfg.limits.login_burst {
            for app in self.map.values_mut() {
                let key = std::mem::take(&mut app.key);
                *app = App::new(key, &cfg.limits, now);
            }
        }
        for (app_id, key) in wanted {
            match self.map.get_mut(&app_id) {
                Some(app) if app.key != key => {
                    app.key = key;
                    lines.push(format!("app {app_id}: new secret (next logins and renewals)"));
                }
                Some(_) => {}
                None => {
                    self.map.insert(app_id, App::new(key, &cfg.limits, now));
                    lines.push(format!("app {app_id} added"));
                }
            }
        }
        self.max_token_secs = cfg.limits.max_token_secs;
        AppChanges { gone, lines }
    }

    /// Whether `app_id` is configured.
    pub(super) fn contains(&self, app_id: u32) -> bool {
        self.map.contains_key(&app_id)
    }

    /// The app's key bytes.
    pub(super) fn key(&self, app_id: u32) -> Option<&[u8]> {
        self.map.get(&app_id).map(|a| a.key.as_slice())
    }

    /// Takes one login from the app's budget of logins whose credentials checked out.
    pub(super) fn take_login(&mut self, app_id: u32, now: Instant) -> bool {
        self.map.get_mut(&app_id).is_some_and(|a| a.logins.take(now))
    }

    /// Takes one refused login from the app's budget of those.
    pub(super) fn take_refused(&mut self, app_id: u32, now: Instant) -> bool {
        self.map.get_mut(&app_id).is_some_and(|a| a.refused.take(now))
    }

    /// Refuses the claims of a token whose device key was revoked.
    pub(super) fn check_not_revoked(&self, claims: &Claims) -> Result<(), ErrorCode> {
        match &claims.dk {
            Some(id) if self.device_keys.is_revoked(id) => Err(ErrorCode::DEVICE_KEY_REVOKED),
            _ => Ok(()),
        }
    }

    /// A login token of `app_id` for `user_id` in `room_id` (not yet checked for a revoked
    /// key, so a refused token is told apart from a revoked one).
    pub(super) fn verify_login(
        &self,
        app_id: u32,
        token: &str,
        user_id: &str,
        room_id: &str,
        unix_secs: u64,
    ) -> Result<Claims, ErrorCode> {
        let key = self.key(app_id);
        auth::verify_login(key, app_id, token, user_id, room_id, unix_secs, self.max_token_secs)
    }

    /// A bearer token (WHIP/WHEP) for `app_id`/`room_id` with `privilege` and `stream_id`
    /// allowed.
    pub(super) fn bearer_claims(
        &self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        privilege: Privilege,
        unix_secs: u64,
    ) -> Result<Claims, Refusal> {
        ids::check_room_id(room_id).map_err(|c| Refusal::new(K::Invalid, c, "invalid room ID"))?;
        ids::check_stream_id(stream_id).map_err(|c| Refusal::new(K::Invalid, c, "invalid stream ID"))?;
        let app = self
            .map
            .get(&app_id)
            .ok_or_else(|| Refusal::new(K::NotFound, ErrorCode::APP_ID_MISMATCH, format!("unknown app_id {app_id}")))?;
        let claims = auth::verify(&app.key, token, unix_secs, self.max_token_secs).map_err(|c| {
            let why = match c {
                ErrorCode::TOKEN_EXPIRED => "token expired",
                ErrorCode::TOKEN_NOT_YET_VALID => "token not valid yet",
                ErrorCode::TOKEN_LIFETIME_TOO_LONG => "token lifetime longer than the server allows",
                _ => "token invalid",
            };
            Refusal::new(K::Unauthenticated, c, why)
        })?;
        self.check_not_revoked(&claims)
            .map_err(|c| Refusal::new(K::Unauthenticated, c, "the device key of this token was revoked"))?;
        if claims.app_id != app_id {
            return Err(Refusal::new(K::Unauthenticated, ErrorCode::APP_ID_MISMATCH, "token is for another app"));
        }
        if claims.room_id.as_deref().is_some_and(|r| r != room_id) {
            return Err(Refusal::new(K::Forbidden, ErrorCode::TOKEN_ROOM_MISMATCH, "token is for another room"));
        }
        if !claims.has(privilege) {
            let code = if privilege == Privilege::Publish {
                ErrorCode::NO_PUBLISH_PRIVILEGE
            } else {
                ErrorCode::NO_PLAY_PRIVILEGE
            };
            return Err(Refusal::new(K::Forbidden, code, format!("token lacks the {privilege} privilege")));
        }
        if !claims.allows_stream(stream_id) {
            return Err(Refusal::new(
                K::Forbidden,
                ErrorCode::STREAM_NOT_ALLOWED,
                "token does not allow this stream ID",
            ));
        }
        Ok(claims)
    }

    /// An admin API token for `app_id`; `room_id` is the room the request is about, if any.
    pub(super) fn admin_claims(
        &self,
        app_id: u32,
        token: &str,
        room_id: Option<&str>,
        unix_secs: u64,
    ) -> Result<Claims, Refusal> {
        let app = self
            .map
            .get(&app_id)
            .ok_or_else(|| Refusal::new(K::NotFound, ErrorCode::ADMIN_NOT_FOUND, "no such app"))?;
        let claims =
            auth::verify_admin(&app.key, app_id, token, unix_secs, self.max_token_secs).map_err(|c| match c {
                ErrorCode::ADMIN_FORBIDDEN => Refusal::new(K::Forbidden, c, "the token lacks the admin privilege"),
                _ => Refusal::new(K::Unauthenticated, c, "token invalid, expired or for another app"),
            })?;
        if let (Some(mine), Some(asked)) = (&claims.room_id, room_id)
            && mine != asked
        {
            return Err(Refusal::new(
                K::Forbidden,
                ErrorCode::ADMIN_FORBIDDEN,
                format!("the token is limited to room {mine}"),
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::AppConfig;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn cfg(apps: &[u32]) -> RegistryConfig {
        let mut cfg: RegistryConfig = toml::from_str("").unwrap();
        cfg.apps = apps.iter().map(|id| AppConfig::new(*id, SECRET)).collect();
        cfg.limits.logins_per_sec = 1.0;
        cfg.limits.login_burst = 1.0;
        cfg
    }

    fn token(app_id: u32, privileges: &[&str], room: Option<&str>) -> String {
        let claims = Claims {
            app_id,
            user_id: "door".into(),
            room_id: room.map(str::to_string),
            privileges: privileges.iter().map(|s| s.to_string()).collect(),
            streams: None,
            nbf: None,
            dk: None,
            iat: 1000,
            exp: 2000,
        };
        auth::mint(&auth::parse_secret(SECRET).unwrap(), &claims).unwrap()
    }

    #[test]
    fn login_budgets_are_per_app_and_refused_logins_have_their_own() {
        let now = Instant::now();
        let mut a = Apps::new(&cfg(&[1, 2]), now);
        assert!(a.take_refused(1, now) && !a.take_refused(1, now));
        assert!(a.take_login(1, now), "refused logins did not spend the good ones");
        assert!(!a.take_login(1, now) && a.take_login(2, now));
        assert!(!a.take_login(9, now), "no such app");
    }

    #[test]
    fn bearer_tokens_are_refused_by_kind() {
        let a = Apps::new(&cfg(&[1]), Instant::now());
        let play = token(1, &["play"], Some("lobby"));
        let kind = |r: Result<Claims, Refusal>| r.map(|_| ()).map_err(|e| (e.kind, e.code));
        assert_eq!(kind(a.bearer_claims(1, "lobby", "cam", &play, Privilege::Play, 1500)), Ok(()));
        assert_eq!(
            kind(a.bearer_claims(1, "lobby", "cam", &play, Privilege::Publish, 1500)),
            Err((K::Forbidden, ErrorCode::NO_PUBLISH_PRIVILEGE))
        );
        assert_eq!(
            kind(a.bearer_claims(1, "hall", "cam", &play, Privilege::Play, 1500)),
            Err((K::Forbidden, ErrorCode::TOKEN_ROOM_MISMATCH))
        );
        assert_eq!(
            kind(a.bearer_claims(1, "lobby", "cam", &play, Privilege::Play, 2500)).unwrap_err().0,
            K::Unauthenticated
        );
        assert_eq!(kind(a.bearer_claims(2, "lobby", "cam", &play, Privilege::Play, 1500)).unwrap_err().0, K::NotFound);
        assert_eq!(kind(a.bearer_claims(1, "lo bby", "cam", &play, Privilege::Play, 1500)).unwrap_err().0, K::Invalid);
    }

    #[test]
    fn a_reconfiguration_names_what_changed_and_which_apps_went() {
        let now = Instant::now();
        let mut a = Apps::new(&cfg(&[1, 2]), now);
        let old = cfg(&[]).limits;
        let ch = a.reconfigure(&cfg(&[2, 3]), &old, now);
        assert_eq!(ch.gone, vec![1]);
        assert_eq!(ch.lines, vec!["app 3 added".to_string()]);
        assert!(!a.contains(1) && a.contains(3));
    }
}
