//! SIGHUP on the server: what of a new configuration the registry takes without a restart.

use super::*;

impl Registry {
    /// Applies `cfg`'s apps, session timing and limits. Returns what changed, one line each.
    /// An app that is gone takes its sessions with it (kicked with 1002055); a new secret
    /// applies to the next logins and renewals (sessions in progress keep going).
    pub fn reconfigure(&mut self, cfg: &RegistryConfig, now: Now) -> Vec<String> {
        let mut changed = Vec::new();
        let apps = self.apps.reconfigure(cfg, &self.limits, now.at);
        for app_id in apps.gone {
            let sessions = self.sessions.ids_where(|s| s.app_id == app_id);
            for sid in &sessions {
                self.kick_session(sid, ErrorCode::KICKED_BY_ADMIN, "the app was removed from the server", now);
            }
            changed.push(format!("app {app_id} removed ({} sessions ended)", sessions.len()));
        }
        changed.extend(apps.lines);
        let hooked = hooked(cfg);
        if hooked != self.hooked {
            changed.push(format!("apps with a webhook: {hooked:?}"));
            self.hooked = hooked;
        }
        if self.grace != cfg.session.grace() {
            changed.push(format!("session.grace_secs {} -> {}", self.grace.as_secs(), cfg.session.grace_secs));
            self.grace = cfg.session.grace();
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
                "[limits] applied (buckets of new connections, sessions and apps; max_pending needs a restart)".into(),
            );
            self.limits = cfg.limits.clone();
            self.conns.configure(&cfg.limits);
            self.resources.configure(&cfg.limits);
        }
        changed
    }
}
