//! The command line: `serve` runs the daemon; every other command is a client of it.

mod audit;
mod exit;
mod generate;
mod health;
mod keys;
mod limits;
mod load_index;
mod output;
mod owners;
mod policy;
mod rekey;
mod revoke;
mod serve;
mod status;
mod update;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The API-key sidecar: keeps API keys in an encrypted local store and answers "is this key
/// valid, and may it read / write / delete?" over a Unix socket.
///
/// Start the daemon with `authenta-keyd serve`, then manage keys with `authenta-keyd keys`.
/// Every command but `serve` talks to the daemon over its socket.
#[derive(Parser)]
#[command(name = "authenta-keyd", version, propagate_version = true)]
#[command(after_help = after_help())]
struct Cli {
    /// The daemon's socket [default: /run/authenta/keyd.sock as root, else
    /// $XDG_RUNTIME_DIR/authenta/keyd.sock, else $TMPDIR/authenta-<euid>/keyd.sock]
    #[arg(long, global = true, env = "AUTHENTA_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Print machine-readable JSON instead of text for people.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Serve(serve::ServeArgs),
    /// Create, list, show, update, regenerate and revoke keys (admin).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Set and show the limits all keys of one owner share (admin).
    #[command(subcommand)]
    Owners(owners::OwnersCommand),
    /// Check a token, read from AUTHENTA_KEY or one line of stdin (never from arguments).
    Verify(verify::VerifyArgs),
    /// The daemon's version, uptime, paths and key counts (admin).
    Status,
    /// Is the daemon ready? Exit 0 ready, 1 not ready (any user that may connect; for
    /// monitoring). Over HTTP: /healthz and /readyz.
    Health,
    /// The audit log of admin changes (admin).
    Audit(audit::AuditArgs),
    /// Check a policy file, or show the one in force (admin).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Wrap the store's data key under a new master key (admin; online or offline).
    Rekey(rekey::RekeyArgs),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions(generate::CompletionsArgs),
    /// Write the man pages into a directory (used when building the package).
    #[command(hide = true)]
    Man(generate::ManArgs),
}

/// Examples and the exit codes, under `--help`.
fn after_help() -> String {
    format!(
        "Examples:\n  \
         authenta-keyd serve\n  \
         authenta-keyd keys create --name Backend-Server-Key --permissions read,write\n  \
         AUTHENTA_KEY=api_... authenta-keyd verify --permission read\n  \
         authenta-keyd keys revoke key_XXXXXXXXXXXXXXXX --reason leaked\n\n{}",
        exit::TABLE
    )
}

/// What a command needs to reach the daemon and print.
pub struct Context {
    pub socket: PathBuf,
    pub json: bool,
}

impl Context {
    /// A client for the daemon with a generous timeout: admin writes wait for a durable commit.
    pub fn client(&self) -> authenta_client::Client {
        let mut client = authenta_client::Client::new(&self.socket);
        client.set_timeout(Some(std::time::Duration::from_secs(30)));
        client
    }
}

/// Runs the command line and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(crate::host::paths::default_socket);
    if let Err(e) = trusted_socket(&socket, &cli.command) {
        return exit::report(exit::FAILURE, "untrusted_socket", &one_line(&e), cli.json);
    }
    let context = Context {
        socket,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, cli.socket),
        Command::Keys(command) => keys::run(command, &context),
        Command::Owners(command) => owners::run(command, &context).map(|()| ExitCode::SUCCESS),
        Command::Verify(args) => verify::run(args, &context),
        Command::Status => status::run(&context),
        Command::Health => health::run(&context),
        Command::Audit(args) => audit::run(args, &context),
        Command::Rekey(args) => rekey::run(args, &context),
        Command::Policy(command) => policy::run(command, &context),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let (code, word) = exit::classify(&e);
            exit::report(code, word, &one_line(&e), context.json)
        }
    }
}

/// A command line clap refused: its message, and exit 64 (`--help` and `--version` exit 0).
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(exit::USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// A client refuses the fallback socket directory when another user could have put a socket
/// there (the daemon refuses to use it too); `serve` checks it itself.
fn trusted_socket(socket: &std::path::Path, command: &Command) -> anyhow::Result<()> {
    if !talks_to_the_daemon(command) {
        return Ok(());
    }
    let fallback = crate::host::paths::fallback_socket_dir();
    match socket.parent() {
        Some(dir) if dir == fallback && dir.exists() => crate::host::paths::check_private_dir(dir),
        _ => crate::host::trust::check_socket_for_client(socket).map_err(|why| {
            anyhow::Error::new(exit::UsageError(format!(
                "the socket {} is not trusted: {why}. Whoever made it could answer in the \
                 daemon's place and receive what this command sends (a token, a key): use \
                 the daemon's socket in a directory only root or the daemon's user can write \
                 (by default /run/authenta/keyd.sock)",
                socket.display()
            )))
        }),
    }
}

/// Whether the command is a client of the daemon (`serve` checks its own directory; the
/// generators never connect).
fn talks_to_the_daemon(command: &Command) -> bool {
    !matches!(
        command,
        Command::Serve(_) | Command::Completions(_) | Command::Man(_)
    )
}

/// An error and its causes on one line, leaving out a cause its parent already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
