#!/usr/bin/env bash
# Makes the files the Debian package ships that are generated rather than kept in git, into
# target/assets/ (the paths [package.metadata.deb] assets in Cargo.toml name):
#   man/*.1.gz            one page per command and subcommand, from the clap definitions
#   completions/          bash, zsh and fish completion scripts, likewise
#   systemd/              the units with ExecStart= at /usr/bin/authenta-keyd (the package's
#                         path; the units in systemd/ name /usr/local/bin, for a hand install)
#   changelog.gz          CHANGELOG.md, gzipped, where Debian looks for an upstream changelog
#   changelog.Debian.gz   the package's own changelog entry
# Runs the release binary it is given (default: the one `cargo build --release` made), so
# run it after that build: packaging/build-deb.sh does both, then cargo deb.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${1:-${CARGO_TARGET_DIR:-target}/release/authenta-keyd}"
out=target/assets
maintainer="authenta-keyd maintainers <maintainers@authenta.example>"

if [ ! -x "$binary" ]; then
  echo "build-assets: no binary at $binary; run cargo build --release --bin authenta-keyd first" >&2
  exit 1
fi
version="$("$binary" --version | awk '{print $2}')"
if [ -z "$version" ]; then
  echo "build-assets: $binary --version printed no version" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/man" "$out/completions" "$out/systemd"

"$binary" man --out-dir "$out/man" >/dev/null
# -n: no name or time stamp inside, so the same sources give the same package.
gzip -9n "$out"/man/*.1

"$binary" completions bash > "$out/completions/authenta-keyd.bash"
"$binary" completions zsh > "$out/completions/_authenta-keyd"
"$binary" completions fish > "$out/completions/authenta-keyd.fish"

for unit in authenta-keyd.service authenta-keyd.socket authenta-keyd-http.socket; do
  sed 's|/usr/local/bin/authenta-keyd|/usr/bin/authenta-keyd|g' "systemd/$unit" > "$out/systemd/$unit"
done
if grep -q /usr/local/bin "$out"/systemd/*; then
  echo "build-assets: a packaged unit still names /usr/local/bin" >&2
  exit 1
fi
grep -q '^ExecStart=/usr/bin/authenta-keyd ' "$out/systemd/authenta-keyd.service"

gzip -9n < CHANGELOG.md > "$out/changelog.gz"

# Dated by the last commit (or SOURCE_DATE_EPOCH), not the build, so rebuilds match.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
{
  printf 'authenta-keyd (%s-1) unstable; urgency=medium\n\n' "$version"
  printf '  * authenta-keyd %s. Its changes: /usr/share/doc/authenta-keyd/changelog.gz.\n\n' "$version"
  printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n > "$out/changelog.Debian.gz"

echo "build-assets: $(find "$out" -type f | wc -l) files in $out for authenta-keyd $version"
