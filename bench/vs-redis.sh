#!/usr/bin/env bash
# authenta-keyd's verify next to Redis GET, in the same three load shapes, on this machine.
#
# Installs redis-server and redis-tools from Debian's packages when missing (as root), starts
# Redis on a temporary Unix socket with persistence off, loads as many entries as the bench
# seeds keys, runs authenta-bench (shapes only) and then redis-benchmark with the same number
# of requests per shape as keyd answered, stops Redis (also on failure), and prints one table,
# with what CPU each server spent (keyd's busy polling buys latency with a core).
#
#   bench/vs-redis.sh                    # 10,000 keys, 3 s per keyd run
#   KEYS=10000 DURATION=5 ROUNDS=3 bench/vs-redis.sh
#   SPIN=1 bench/vs-redis.sh             # cores kept from halting (see authenta-bench --spin)
#
# Redis answers GET from one thread with an epoll loop; redis-benchmark drives it from one
# thread with an epoll loop, and so does authenta-bench drive keyd (its default --client
# event-loop). All of it runs on the same cores, so the client's own cost is part of both
# figures.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-10000}
DURATION=${DURATION:-3}
# keyd and echo runs per shape, alternating; authenta-bench reports the median one.
ROUNDS=${ROUNDS:-1}
# 1: a nice-19 busy loop per core for the whole comparison, so that no vCPU halts between
# requests (waking one costs ~50 us on a VM); Redis and keyd get the same treatment.
SPIN=${SPIN:-0}
# Redis values of 36 bytes make a GET reply of 43 bytes ("$36\r\n" + value + "\r\n"), about
# the size of keyd's verify answer frame (42 bytes on average in the bench's mix).
VALUE_BYTES=${VALUE_BYTES:-36}

work=""
redis_pid=""
spinners=()
made_policy=""
cleanup() {
  if [[ -n "$redis_pid" ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if ((${#spinners[@]})); then
    kill "${spinners[@]}" 2>/dev/null || true
    wait "${spinners[@]}" 2>/dev/null || true
  fi
  if [[ -n "$made_policy" ]]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [[ -n "$work" ]]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
  echo "installing ${need[*]} from Debian's packages..." >&2
  # Keep the package's init script from starting a Redis of its own on TCP port 6379.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  if [[ -n "$made_policy" ]]; then
    rm -f /usr/sbin/policy-rc.d
    made_policy=""
  fi
fi

echo "building authenta-keyd and authenta-bench (release)..." >&2
cargo build --release --locked -q -p authenta-keyd -p authenta-bench

work=$(mktemp -d /tmp/authenta-vs-redis.XXXXXX)

if [[ "$SPIN" == 1 ]]; then
  for _ in $(seq "$(nproc)"); do
    nice -n 19 sh -c 'while :; do :; done' &
    spinners+=($!)
  done
fi

sock="$work/redis.sock"
# No TCP listener (port 0), no RDB snapshots, no AOF: an in-memory cache on a Unix socket.
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save "" \
  --appendonly no --dir "$work" --logfile "$work/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 200); do
  [[ "$(redis-cli -s "$sock" ping 2>/dev/null)" == PONG ]] && break
  sleep 0.05
done
[[ "$(redis-cli -s "$sock" ping)" == PONG ]] || { cat "$work/redis.log" >&2; exit 1; }

# The keys redis-benchmark's -r asks for: key:000000000000 .. key:(KEYS-1), 12 digits.
awk -v n="$KEYS" -v size="$VALUE_BYTES" 'BEGIN {
  v = sprintf("%0" size "d", 0)
  for (i = 0; i < n; i++) {
    k = sprintf("key:%012d", i)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  }
}' | redis-cli -s "$sock" --pipe >/dev/null
loaded=$(redis-cli -s "$sock" dbsize)
[[ "$loaded" == "$KEYS" ]] || { echo "Redis holds $loaded entries, not $KEYS" >&2; exit 1; }

echo "authenta-bench: $KEYS keys, ${DURATION} s per shape..." >&2
target/release/authenta-bench --shapes-only --json --keys "$KEYS" --duration "$DURATION" \
  --rounds "$ROUNDS" \
  >"$work/keyd.json"
cp "$work/keyd.json" target/vs-redis-keyd.json

# Redis's user + system CPU so far, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name before them is in parentheses and has no spaces here).
redis_cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$redis_pid/stat"
}

declare -A flags=([sync-1]="-c 1" [sync-50]="-c 50" [pipe-50x32]="-c 50 -P 32")
rows=()
all_ok=1
for shape in sync-1 sync-50 pipe-50x32; do
  row=$(jq -r --arg s "$shape" '.shapes[] | select(.shape.name == $s)
    | "\(.keyd.ops) \(.keyd.ops_per_sec) \(.keyd.latency.p50_us) \(.echo.latency.p50_us)"
      + " \(.keyd.server_cpu.cores // "nan")"' \
    "$work/keyd.json")
  read -r keyd_ops keyd_rps keyd_p50 echo_p50 keyd_cpu <<<"$row"
  echo "redis-benchmark $shape: GET x $keyd_ops..." >&2
  cpu_before=$(redis_cpu_ticks)
  # shellcheck disable=SC2086 # the flags are words on purpose
  csv=$(redis-benchmark -s "$sock" -t get -r "$KEYS" -n "$keyd_ops" ${flags[$shape]} --csv \
    | tr -d '"' | awk -F, '$1 == "GET"')
  cpu_ticks=$(($(redis_cpu_ticks) - cpu_before))
  redis_rps=$(cut -d, -f2 <<<"$csv")
  # CPU seconds per second of the run, which lasted keyd_ops / redis_rps seconds.
  redis_cpu=$(awk -v t="$cpu_ticks" -v hz="$(getconf CLK_TCK)" -v n="$keyd_ops" -v r="$redis_rps" \
    'BEGIN { printf "%.2f", (t / hz) / (n / r) }')
  redis_p50_ms=$(cut -d, -f5 <<<"$csv")
  ratio=$(awk -v k="$keyd_rps" -v r="$redis_rps" 'BEGIN { printf "%.2f", k / r }')
  awk -v r="$ratio" 'BEGIN { exit !(r >= 1.0) }' || all_ok=0
  rows+=("$(awk -v s="$shape" -v k="$keyd_rps" -v r="$redis_rps" -v x="$ratio" \
    -v kp="$keyd_p50" -v ep="$echo_p50" -v rp="$redis_p50_ms" -v kc="$keyd_cpu" -v rc="$redis_cpu" \
    'BEGIN { printf "%-11s %12.0f %12.0f %6s %10.1f %10.1f %10.1f %9.2f %9.2f",
      s, k, r, x, kp, ep, rp * 1000, kc, rc }')")
done

kill "$redis_pid" && wait "$redis_pid" 2>/dev/null || true
redis_pid=""

echo
spin_note=""
[[ "$SPIN" == 1 ]] && spin_note=", cores kept busy by nice-19 spinners"
echo "authenta-keyd verify vs Redis GET: $KEYS keys, $(nproc) cores$spin_note, Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//')"
jq -r '"keyd mix: " + .mix_text' target/vs-redis-keyd.json
printf '%-11s %12s %12s %6s %10s %10s %10s %9s %9s\n' shape "keyd ops/s" "Redis ops/s" ratio \
  "keyd p50us" "echo p50us" "Redis p50us" "keyd cpu" "Redis cpu"
printf '%s\n' "${rows[@]}"
echo "cpu: the server's CPU seconds per second of its run (1.00 is one core busy)"
if ((all_ok)); then
  echo "keyd/Redis >= 1.0 in all three shapes"
else
  echo "keyd/Redis < 1.0 in at least one shape"
fi
