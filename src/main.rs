//! authenta-keyd: the API-key sidecar. One binary: the daemon (`serve`) and its admin CLI.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    authenta_keyd::cli::main()
}
