#!/usr/bin/env bash
# schemathesis over gengate's /openapi.json, every check on, once with a
# normal key and once with an admin key:
#   crates/gengate/tests/schemathesis/run.sh [path to the gengate binary]
# The binary defaults to target/debug/gengate (`cargo build -p gengate`);
# nothing is built here. The virtual environment (requirements.txt, pinned)
# is made in target/schemathesis-venv when missing or stale, by
# crates/testkit/python/venv.sh. Exits non-zero on any failure of any check.
#
# Where requests can go: gengate and schemathesis run in a network
# namespace of their own with loopback only (`unshare --net`), so no
# generated URL (callback_url, an image URL to fetch, a server named by the
# spec) can take a request off this machine, whatever it names; gengate
# also keeps its default address policy (loopback and private addresses
# refused), and the spec's `servers` are checked to be relative or loopback.
#
# Environment: ST_EXAMPLES (test cases per operation, default 20),
# ST_SEED (default 20260000).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
venv="$root/target/schemathesis-venv"
bin="$(realpath "${1:-$root/target/debug/gengate}")"

if [ -z "${GENGATE_ST_ISOLATED:-}" ]; then
    # Outside the namespace: the venv (the registry is reachable here only).
    "$root/crates/testkit/python/venv.sh" "$venv" "$here/requirements.txt"
    [ -x "$bin" ] || { echo "no gengate binary at $bin (cargo build -p gengate)" >&2; exit 1; }
    # Root (CI) makes the namespace directly; anyone else through a user namespace.
    userns=()
    [ "$(id -u)" -eq 0 ] || userns=(--map-root-user)
    export GENGATE_ST_ISOLATED=1
    exec unshare --net "${userns[@]}" -- "$0" "$bin"
fi

# Inside the namespace: loopback only.
ip link set lo up
if [ -n "$(ip -o link show | grep -v ': lo:' || true)" ] || [ -n "$(ip route show)" ]; then
    echo "the network namespace has more than loopback; refusing to run" >&2
    exit 1
fi
# Nothing inherited decides where gengate or schemathesis send.
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
while read -r name; do unset "$name"; done < <(compgen -e | grep '^GENGATE_' || true)
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

tmp="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

admin_key="gg_$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
# A fresh data directory, no gengate.toml (the server runs in $tmp), the
# default sandbox channel, fast so tasks finish while the run goes on, and
# room for many at once: schemathesis creates video tasks by the hundred, and
# with few slots a synchronous image create (POST /v1/images/generations)
# queues behind them past its wait and answers 504.
(cd "$tmp" && exec env GENGATE_ADMIN_KEY="$admin_key" GENGATE_LOG=warn \
    "$bin" --data-dir "$tmp/data" serve --listen 127.0.0.1:0 \
    --sandbox-latency-ms 100 --sync-wait-secs 10 --concurrency 64 \
    >"$tmp/server.log" 2>&1) &
server=$!
base=""
for _ in $(seq 1 300); do
    base="$(sed -n 's|^gengate listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$tmp/server.log")"
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "gengate did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi
echo "== gengate at $base"

py="$venv/bin/python"
user_key="$("$bin" --data-dir "$tmp/data" keys create --name schemathesis --json \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# The spec names no server but this one (relative or loopback URLs only).
"$py" - "$base/openapi.json" <<'EOF'
import json, sys, urllib.parse, urllib.request
spec = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
for s in spec.get("servers", []):
    host = urllib.parse.urlsplit(s.get("url", "")).hostname
    if host not in (None, "127.0.0.1", "localhost", "::1"):
        sys.exit(f"the spec's servers name {s['url']!r}, not this gengate")
EOF

examples="${ST_EXAMPLES:-20}"
seed="${ST_SEED:-20260000}"
failed=0
# schemathesis keeps a .schemathesis/ of replayable cases where it runs.
cd "$tmp"
for who in user admin; do
    if [ "$who" = admin ]; then key="$admin_key"; else key="$user_key"; fi
    echo "== schemathesis as the $who key"
    # --url: requests go to this server whatever the spec says; no
    # redirects followed. Secrets stay out of the output.
    if ! "$venv/bin/schemathesis" --no-color --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
        --url "$base" \
        --checks all \
        --header "Authorization: Bearer $key" \
        --seed "$seed" --max-examples "$examples" \
        --workers 1 --max-redirects 0 --request-timeout 30 --continue-on-failure \
        --generation-database none \
        --report junit --report-dir "$root/target/schemathesis-report/$who" \
        --output-truncate false; then
        failed=1
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "== schemathesis found failures (gengate's log, last 50 lines):"
    tail -n 50 "$tmp/server.log"
    exit 1
fi
echo "== schemathesis: no failures as a normal key and as an admin"
