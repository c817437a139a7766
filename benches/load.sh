#!/usr/bin/env bash
# Loopback load test: one release server (bench-compare's `serve` example) with a
# route outside any layer (/bare), a read-only session route under this crate
# (/ours/read) and the same under tower-sessions 0.15 (/theirs/read), both on
# their memory stores, under wrk, in one run.
#   bash benches/load.sh            (needs wrk: apt-get install wrk)
#   ROUNDS=5 bash benches/load.sh
#   REDIS_URL=redis://127.0.0.1:6379/0 bash benches/load.sh
# With REDIS_URL, a fourth route, /cached/read: this crate on Redis with
# store.cache on, read warm (no Redis command per request).
# Every route gets the same requests, both session cookies included, so the
# difference is each layer's work. Each wrk run is bounded (10 s, 1 thread, 32
# connections); the three alternate for ROUNDS rounds (default 3), and each ratio
# is the median of the rounds' ratios: this machine's throughput drifts more
# between runs than a layer costs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
rounds=${ROUNDS:-3}
cargo build --release --quiet -p bench-compare --example serve
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:$port" target/release/examples/serve 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$base/bare" >/dev/null && break; sleep 0.1; done
cookie_of() { curl -s -D - -o /dev/null "$base$1" | sed -n 's/^set-cookie: \([^;]*\);.*/\1/ip'; }
ours=$(cookie_of /ours/write)
theirs=$(cookie_of /theirs/write)
[ -n "$ours" ] && [ -n "$theirs" ] || { echo "a write did not set a cookie" >&2; exit 1; }
cookie="$ours; $theirs"
sides="ours theirs"
if [ -n "${REDIS_URL:-}" ]; then
  cached=$(cookie_of /cached/write)
  [ -n "$cached" ] || { echo "the cached write did not set a cookie" >&2; exit 1; }
  cookie="$cookie; $cached"
  sides="$sides cached"
fi
for side in $sides; do
  [ "$(curl -s -H "Cookie: $cookie" "$base/$side/read")" = 1 ] \
    || { echo "the $side session does not read back" >&2; exit 1; }
done
run() { wrk -t1 -c32 -d10s --latency -H "Cookie: $cookie" "$1" | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'; }
ours_ratios=()
theirs_ratios=()
cached_ratios=()
for round in $(seq 1 "$rounds"); do
  read -r bare_rps bare_p99 < <(run "$base/bare")
  read -r ours_rps ours_p99 < <(run "$base/ours/read")
  read -r theirs_rps theirs_p99 < <(run "$base/theirs/read")
  ours_ratios+=("$(python3 -c "print(f'{float($ours_rps)/float($bare_rps):.3f}')")")
  theirs_ratios+=("$(python3 -c "print(f'{float($theirs_rps)/float($bare_rps):.3f}')")")
  echo "round $round: bare $bare_rps req/s (p99 $bare_p99); this crate, read $ours_rps (p99 $ours_p99," \
    "${ours_ratios[-1]} of bare); tower-sessions, read $theirs_rps (p99 $theirs_p99, ${theirs_ratios[-1]} of bare)"
  if [ -n "${REDIS_URL:-}" ]; then
    read -r cached_rps cached_p99 < <(run "$base/cached/read")
    cached_ratios+=("$(python3 -c "print(f'{float($cached_rps)/float($bare_rps):.3f}')")")
    echo "round $round: this crate on Redis with store.cache, warm read $cached_rps (p99 $cached_p99, ${cached_ratios[-1]} of bare)"
  fi
done
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
echo "median of the bare throughput, reads: this crate $(median "${ours_ratios[@]}"), tower-sessions $(median "${theirs_ratios[@]}")"
if [ -n "${REDIS_URL:-}" ]; then
  echo "median of the bare throughput, warm reads on Redis with store.cache: $(median "${cached_ratios[@]}")"
fi
