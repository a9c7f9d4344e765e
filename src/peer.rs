//! Who is calling, from the socket's peer credentials (`SO_PEERCRED`), and what they may do.
//!
//! Anyone who can connect may verify, unless `verify_gids` narrows it. Admin requests need
//! root, the daemon's own uid, or a uid or gid the config names. Groups include the
//! supplementary ones, read from `/proc/PID/status`.

use crate::config::Config;

/// The process on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Who may do what.
#[derive(Debug, Clone)]
pub struct Access {
    daemon_uid: u32,
    admin_uids: Vec<u32>,
    admin_gids: Vec<u32>,
    verify_gids: Vec<u32>,
}

impl Access {
    pub fn from_config(config: &Config) -> Self {
        Access {
            daemon_uid: nix::unistd::geteuid().as_raw(),
            admin_uids: config.admin_uids.clone(),
            admin_gids: config.admin_gids.clone(),
            verify_gids: config.verify_gids.clone(),
        }
    }

    /// Whether `peer` may make admin requests.
    pub fn may_admin(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || peer.uid == self.daemon_uid
            || self.admin_uids.contains(&peer.uid)
            || in_any_group(peer, &self.admin_gids)
    }

    /// Whether `peer` may verify.
    pub fn may_verify(&self, peer: &Peer) -> bool {
        self.verify_gids.is_empty() || self.may_admin(peer) || in_any_group(peer, &self.verify_gids)
    }

    /// The daemon's own uid, named in refusals.
    pub fn daemon_uid(&self) -> u32 {
        self.daemon_uid
    }
}

fn in_any_group(peer: &Peer, gids: &[u32]) -> bool {
    if gids.is_empty() {
        return false;
    }
    gids.contains(&peer.gid)
        || supplementary_groups(peer.pid)
            .iter()
            .any(|g| gids.contains(g))
}

/// The peer's supplementary groups, or none when they cannot be read.
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(admin_uids: Vec<u32>, admin_gids: Vec<u32>, verify_gids: Vec<u32>) -> Access {
        Access {
            daemon_uid: 999,
            admin_uids,
            admin_gids,
            verify_gids,
        }
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn admins_are_root_self_and_named() {
        let a = access(vec![1000], vec![50], vec![]);
        assert!(a.may_admin(&peer(0, 0)));
        assert!(a.may_admin(&peer(999, 999)));
        assert!(a.may_admin(&peer(1000, 1000)));
        assert!(a.may_admin(&peer(1001, 50)));
        assert!(!a.may_admin(&peer(1001, 1001)));
    }

    #[test]
    fn verify_is_open_unless_narrowed() {
        assert!(access(vec![], vec![], vec![]).may_verify(&peer(4242, 4242)));
        let narrowed = access(vec![], vec![], vec![77]);
        assert!(!narrowed.may_verify(&peer(4242, 4242)));
        assert!(narrowed.may_verify(&peer(4242, 77)));
        assert!(narrowed.may_verify(&peer(0, 0)));
    }
}
