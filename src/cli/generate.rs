//! `authenta-keyd completions SHELL` and `authenta-keyd man --out-dir DIR`: shell completions
//! and man pages made from the command line's own definition, so they cannot drift from it.
//! The Debian package runs both at build time (packaging/build-assets.sh).

use super::Cli;
use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory, ValueEnum};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The name the program is installed and completed under.
const BIN: &str = "authenta-keyd";

#[derive(Args)]
#[command(after_help = "Install (or let the Debian package do it):\n  \
    authenta-keyd completions bash > /usr/share/bash-completion/completions/authenta-keyd\n  \
    authenta-keyd completions zsh > /usr/share/zsh/vendor-completions/_authenta-keyd\n  \
    authenta-keyd completions fish > /usr/share/fish/vendor_completions.d/authenta-keyd.fish")]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory to write the pages to (made if missing): authenta-keyd.1, and one page per
    /// subcommand named by its path, e.g. authenta-keyd-keys-create.1.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    let mut command = Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Made whole first: clap_complete panics on a failed write, and a reader that stops early
    // (`| head`) is no error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN, &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the completion script")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Writes one man page per command and visible subcommand into `args.out_dir`, and lists the
/// files written.
pub fn man(args: ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot make {}", args.out_dir.display()))?;
    // No `help` subcommand page: it only prints the others' --help.
    let mut command = Cli::command().disable_help_subcommand(true);
    // Building fills in each subcommand's full usage line ("authenta-keyd keys create").
    command.build();
    let mut written = Vec::new();
    write_pages(&command, BIN, &args.out_dir, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `command`'s page as `NAME.1`, then its visible subcommands' pages as
/// `NAME-SUBCOMMAND.1`, recursively. Hidden commands (this one's own `man`) get no page.
fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let page = clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
