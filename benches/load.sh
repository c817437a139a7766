#!/usr/bin/env bash
# Loopback load test: the quickstart (release build, memory store) under wrk, a
# route outside the layer against a read-only session route, in one run.
#   bash benches/load.sh            (needs wrk: apt-get install wrk)
#   ROUNDS=5 bash benches/load.sh
# Both routes get the same requests, session cookie included, so the difference is
# the layer's work. Each wrk run is bounded (10 s, 1 thread, 32 connections); the
# two alternate for ROUNDS rounds (default 3), and the ratio is the median of the
# rounds' ratios: this machine's throughput drifts more between runs than the
# layer costs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
rounds=${ROUNDS:-3}
cargo build --release --quiet --example quickstart
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn ADDR="127.0.0.1:$port" target/release/examples/quickstart >/dev/null &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
cookie=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
  -d '{"username":"load"}' "http://127.0.0.1:$port/api/login" | sed -n 's/^set-cookie: \([^;]*\);.*/\1/ip')
[ -n "$cookie" ] || { echo "login did not set a cookie" >&2; exit 1; }
[ "$(curl -s -H "Cookie: $cookie" "http://127.0.0.1:$port/api/me")" = '"load"' ] \
  || { echo "the session cookie does not read back" >&2; exit 1; }
run() { wrk -t1 -c32 -d10s --latency -H "Cookie: $cookie" "$1" | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'; }
ratios=()
for round in $(seq 1 "$rounds"); do
  read -r bare_rps bare_p99 < <(run "http://127.0.0.1:$port/bare")
  read -r sess_rps sess_p99 < <(run "http://127.0.0.1:$port/api/me")
  ratio=$(python3 -c "print(f'{float($sess_rps)/float($bare_rps):.3f}')")
  ratios+=("$ratio")
  echo "round $round: bare (outside the layer) $bare_rps req/s, p99 $bare_p99;" \
    "read-only session (layer) $sess_rps req/s, p99 $sess_p99; ratio $ratio"
done
python3 -c "import statistics, sys; print(f'median ratio: {statistics.median(map(float, sys.argv[1:])):.2f} of the bare throughput')" "${ratios[@]}"
