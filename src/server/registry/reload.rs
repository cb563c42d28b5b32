//! SIGHUP on the server: what of a new configuration the registry takes without a restart.

use super::*;

impl Registry {
    /// Applies `cfg`'s apps, session timing and limits. Returns what changed, one line each.
    /// An app that is gone takes its sessions with it (kicked with 1002055); a new secret
    /// applies to the next logins and renewals (sessions in progress keep going).
    pub fn reconfigure(&mut self, cfg: &ServerConfig, now: Now) -> Vec<String> {
        let mut changed = Vec::new();
        let wanted: HashMap<u32, Vec<u8>> =
            cfg.apps.iter().map(|a| (a.app_id, auth::parse_secret(&a.secret).unwrap_or_default())).collect();
        let gone: Vec<u32> = self.apps.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
        for app_id in gone {
            let sessions: Vec<String> =
                self.sessions.iter().filter(|(_, s)| s.app_id == app_id).map(|(sid, _)| sid.clone()).collect();
            for sid in &sessions {
                self.kick_session(sid, ErrorCode::KICKED_BY_ADMIN, "the app was removed from the server", now);
            }
            self.apps.remove(&app_id);
            changed.push(format!("app {app_id} removed ({} sessions ended)", sessions.len()));
        }
        if self.limits.logins_per_sec != cfg.limits.logins_per_sec || self.limits.login_burst != cfg.limits.login_burst
        {
            for app in self.apps.values_mut() {
                app.logins = Bucket::new(cfg.limits.logins_per_sec, cfg.limits.login_burst, now.at);
                app.refused = Bucket::new(cfg.limits.logins_per_sec, cfg.limits.login_burst, now.at);
            }
        }
        for (app_id, key) in wanted {
            match self.apps.get_mut(&app_id) {
                Some(app) if app.key != key => {
                    app.key = key;
                    changed.push(format!("app {app_id}: new secret (next logins and renewals)"));
                }
                Some(_) => {}
                None => {
                    let app = App {
                        key,
                        rooms: BTreeMap::new(),
                        logins: Bucket::new(cfg.limits.logins_per_sec, cfg.limits.login_burst, now.at),
                        refused: Bucket::new(cfg.limits.logins_per_sec, cfg.limits.login_burst, now.at),
                    };
                    self.apps.insert(app_id, app);
                    changed.push(format!("app {app_id} added"));
                }
            }
        }
        if self.grace != cfg.grace() {
            changed.push(format!("session.grace_secs {} -> {}", self.grace.as_secs(), cfg.session.grace_secs));
            self.grace = cfg.grace();
        }
        if self.heartbeat_ms != cfg.session.heartbeat_ms {
            changed.push(format!(
                "session.heartbeat_ms {} -> {} (sessions logging in from now)",
                self.heartbeat_ms, cfg.session.heartbeat_ms
            ));
            self.heartbeat_ms = cfg.session.heartbeat_ms;
        }
        let (old, new) = (format!("{:?}", self.limits), format!("{:?}", cfg.limits));
        if old != new {
            changed.push(
                "[limits] applied (buckets of new sessions and apps; max_pending and whip limits need a restart)"
                    .into(),
            );
            self.limits = cfg.limits.clone();
            self.handshake = Duration::from_secs(cfg.limits.handshake_secs);
        }
        changed
    }
}
