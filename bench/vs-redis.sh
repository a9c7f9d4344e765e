#!/usr/bin/env bash
# authenta-keyd's verify next to Redis GET, in the same three load shapes, on this machine:
# a thin wrapper around `authenta-bench --redis`, which starts both servers, drives both with
# the same event loop (requests encoded beforehand, every answer checked), alternates rounds,
# and prints ops/s, p50, p99 and ops per server CPU-second, with the daemon's busy polling on
# (its default) and off.
#
# Installs Debian's redis-server package when redis-server is missing (as root, without
# letting the package start a Redis of its own), builds release, and runs the comparison.
#
#   bench/vs-redis.sh                          # 10,000 keys, 3 s per run, 1 round
#   ROUNDS=3 bench/vs-redis.sh                 # what docs/performance.md shows
#   bench/vs-redis.sh --json                   # any further argument goes to authenta-bench
#   KEYS=1000 DURATION=1 bench/vs-redis.sh --shapes sync-50
#   SPIN=1 bench/vs-redis.sh                   # cores kept from halting (see --spin)
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-10000}
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-1}
SPIN=${SPIN:-0}

made_policy=""
cleanup() {
  if [[ -n "$made_policy" ]]; then
    rm -f /usr/sbin/policy-rc.d
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server from Debian's packages..." >&2
  # Keep the package's init script from starting a Redis of its own on TCP port 6379.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2
  cleanup
  made_policy=""
fi

echo "building authenta-keyd and authenta-bench (release)..." >&2
cargo build --release --locked -q -p authenta-keyd -p authenta-bench

spin=()
[[ "$SPIN" == 1 ]] && spin=(--spin)
exec target/release/authenta-bench --redis --keys "$KEYS" --duration "$DURATION" \
  --rounds "$ROUNDS" "${spin[@]}" "$@"
