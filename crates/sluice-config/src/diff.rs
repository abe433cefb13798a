//! What a reload can and cannot change: the settings fixed at start-up.

use crate::Config;

/// The settings that differ between `old` and `new` but only apply after a restart.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if old.server.threads != new.server.threads {
        changes.push("server.threads");
    }
    if old.admin.listen != new.admin.listen {
        changes.push("admin.listen");
    }
    if old.server.upgrade_socket != new.server.upgrade_socket {
        changes.push("server.upgrade_socket");
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::restart_only_changes;

    #[test]
    fn names_the_settings_a_reload_cannot_apply() {
        let old = crate::parse("[server]\nthreads = 1\n", "a.toml").expect("valid");
        let same =
            crate::parse("[server]\nthreads = 1\naccess_log = false\n", "b.toml").expect("valid");
        assert!(restart_only_changes(&old, &same).is_empty());
        let new = crate::parse(
            "[server]\nthreads = 2\nupgrade_socket = \"/run/s.sock\"\n[admin]\nlisten = \"127.0.0.1:9999\"\n",
            "c.toml",
        )
        .expect("valid");
        assert_eq!(
            restart_only_changes(&old, &new),
            ["server.threads", "admin.listen", "server.upgrade_socket"]
        );
    }
}
