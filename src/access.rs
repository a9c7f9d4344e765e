//! Who is calling, from the socket's peer credentials (`SO_PEERCRED`), and what they may do.
//!
//! Anyone who can connect may verify, unless `verify_gids` narrows it. Admin requests need
//! root, the daemon's own uid, or a uid or gid the config names. Groups include the
//! supplementary ones of the peer's user, from the group database (`getgrouplist`), which
//! works under systemd's `ProtectProc=invisible` where `/proc/PID` of others is hidden.

use crate::config::Config;

/// The process on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Primary and supplementary groups, looked up at accept when any rule names a gid.
    pub groups: Vec<u32>,
}

impl Peer {
    /// A peer from its credentials; `with_groups` looks up its supplementary groups.
    pub fn new(uid: u32, gid: u32, pid: Option<i32>, with_groups: bool) -> Peer {
        let groups = if with_groups {
            user_groups(uid, gid)
        } else {
            vec![gid]
        };
        Peer {
            uid,
            gid,
            pid,
            groups,
        }
    }
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

    /// Whether any rule names a gid, so peers' supplementary groups must be looked up.
    pub fn needs_groups(&self) -> bool {
        !self.admin_gids.is_empty() || !self.verify_gids.is_empty()
    }

    /// The daemon's own uid, named in refusals.
    pub fn daemon_uid(&self) -> u32 {
        self.daemon_uid
    }
}

fn in_any_group(peer: &Peer, gids: &[u32]) -> bool {
    gids.contains(&peer.gid) || peer.groups.iter().any(|g| gids.contains(g))
}

/// The groups of user `uid` (primary `gid` included), or just `gid` when the user is unknown.
fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let lookup = || -> Option<Vec<u32>> {
        let user = User::from_uid(Uid::from_raw(uid)).ok()??;
        let name = std::ffi::CString::new(user.name).ok()?;
        let groups = getgrouplist(&name, Gid::from_raw(gid)).ok()?;
        Some(groups.into_iter().map(|g| g.as_raw()).collect())
    };
    lookup().unwrap_or_else(|| vec![gid])
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
        Peer::new(uid, gid, None, false)
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
    fn supplementary_groups_count() {
        let a = access(vec![], vec![50], vec![]);
        let mut p = peer(1001, 1001);
        assert!(!a.may_admin(&p));
        p.groups.push(50);
        assert!(a.may_admin(&p));
    }

    #[test]
    fn root_has_its_groups_looked_up() {
        let root = Peer::new(0, 0, None, true);
        assert!(root.groups.contains(&0));
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
