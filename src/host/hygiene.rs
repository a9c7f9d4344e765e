//! Process hygiene for a process that holds keys: no core dumps, and not dumpable (no ptrace
//! attach by other processes of the same uid, no `/proc/PID/mem` reads). Key material itself
//! is kept in locked memory by `crate::store::locked_key`.

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
