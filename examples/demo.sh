#!/usr/bin/env bash
# README command 1: builds the example tasks and Warden, starts the daemon on its embedded
# default (SQLite under ./warden-data, 127.0.0.1:7700; its log in ./warden-data/warden.log),
# deploys the examples, makes one call, and prints what each example shows and what to try
# next. Ctrl-C stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${WARDEN_PORT:-7700}"
url="http://127.0.0.1:$port"

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
echo "== building the example tasks (wasm32-wasip2)"
cargo build --release --manifest-path examples/Cargo.toml --target wasm32-wasip2
echo "== building warden (release; the first build takes a few minutes)"
cargo build --release -p warden
# Where cargo put the builds: ./target and examples/target, or $CARGO_TARGET_DIR for both.
warden="${CARGO_TARGET_DIR:-target}/release/warden"
examples_wasm="${CARGO_TARGET_DIR:-examples/target}/wasm32-wasip2/release"
case "$warden" in /*) warden_abs="$warden" ;; *) warden_abs="$PWD/$warden" ;; esac

mkdir -p warden-data
log="$PWD/warden-data/warden.log"
echo "== starting warden (its log: $log)"
"$warden" serve --listen "127.0.0.1:$port" >>"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -sf "$url/health/ready" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "warden exited; its last messages:"; tail -n 20 "$log"; exit 1; }
  sleep 0.1
done

echo "== deploying the examples"
for ex in hello math flaky slow fanout; do
  "$warden" deploy "$examples_wasm/$ex.wasm" --url "$url" >/dev/null
  echo "deployed $ex"
done
echo "== one call"
"$warden" call hello '{"name":"Ada"}' --wait --url "$url"

cat <<MSG

Warden is running at $url with the example tasks deployed (its log: $log).

What each example shows:
  $warden call hello '{"name":"Ada"}' --wait --url $url        # a task's JSON result
  $warden call primes '{"below":100000}' --wait --url $url     # real work; its attempt's wall time and peak memory: curl -s $url/v1/invocations/ID/instances
  $warden call flaky '{"fail_times":2}' --wait --url $url      # retries: two failed attempts, then success ($warden history ID)
  $warden call slow '{"ms":2000}' --wait --url $url            # a long call followed live; Ctrl-C leaves it running
  $warden call fanout '{"n":10}' --wait --url $url             # a task that calls tasks and waits on them
  $warden ls invocations --url $url                            # what ran, newest first

Over HTTP:
  curl -s -X POST $url/v1/invocations -H 'content-type: application/json' -d '{"task":"hello","args":{"name":"Ada"}}'
  curl -s '$url/v1/invocations/ID/result?timeout_ms=5000'

Next:
  open $url/ui                                                  # the dashboard, live
  $warden new my-task && cd my-task && $warden_abs deploy --url $url   # your own task (--lang python|js too)
  README.md, "Concepts": workflows, triggers, clusters

Press Ctrl-C to stop.
MSG
wait "$pid"
