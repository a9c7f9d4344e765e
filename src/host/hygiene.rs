//! Process hygiene for a process that holds keys: no core dumps, and not dumpable (no ptrace
//! attach by other processes of the same uid, no `/proc/PID/mem` reads). Key material itself
//! is kept in locked memory by `crate::store::locked_key`.
//! It also raises the open-files limit the connection caps need.

/// Turns off core dumps and makes the process non-dumpable. Failures are logged, not fatal:
/// the daemon is still correct without them, only less hardened.
pub fn harden_process() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot set PR_SET_DUMPABLE 0");
    }
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot turn off core dumps");
    }
}

/// Raises the soft limit on open files to the hard one (as nginx and Go programs do): the
/// soft default of 1024 is below what the two connection caps allow together. Returns the
/// limit in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}
