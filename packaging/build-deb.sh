#!/usr/bin/env bash
# Builds the Debian package: the release binary, the generated files (build-assets.sh runs
# that binary), then `cargo deb --no-build`, which packages what is built rather than
# building again. Prints the .deb's path last:
#   target/debian/authenta-keyd_<version>-1_<arch>.deb   (e.g. authenta-keyd_0.1.0-1_amd64.deb)
# Needs cargo-deb (`cargo install cargo-deb --locked`); .ci/package installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
fi
cargo build --release --locked --bin authenta-keyd
bash packaging/build-assets.sh
# The release profile keeps line tables (debug = "line-tables-only") for backtraces; the
# packaged binary is stripped (--strip), as Debian wants, and so about a third the size.
deb="$(cargo deb --no-build --locked --strip | tail -n 1)"
if [ ! -f "$deb" ]; then
  echo "build-deb: cargo deb printed no package path (got: $deb)" >&2
  exit 1
fi
echo "$deb"
