#!/usr/bin/env bash
# OpenAPI-driven API fuzzing, end to end: installs schemathesis, builds and starts
# `paycore serve` on a fresh data folder, runs schemathesis against its /openapi.json with every
# check, and stops the server. Exits non-zero when schemathesis found a failure.
#
#   fuzz/schemathesis.sh                      # 50 examples per operation, at most 5 minutes
#   MAX_EXAMPLES=200 MAX_TIME=900 fuzz/schemathesis.sh
#   PAYCORE_BIN=/path/to/paycore fuzz/schemathesis.sh   # skip the build
#
# Reports (JUnit XML, and a log of the server) are written to $OUT (default /tmp/paycore-schemathesis).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MAX_EXAMPLES="${MAX_EXAMPLES:-50}"
MAX_TIME="${MAX_TIME:-300}"
SEED="${SEED:-1}"
OUT="${OUT:-/tmp/paycore-schemathesis}"
KEY="sk_fuzz_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# 1. schemathesis (PyPI), version 4.
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet 'schemathesis>=4,<5'
fi

# 2. The binary.
if [[ -z "${PAYCORE_BIN:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    (cd "$ROOT" && cargo build --quiet -p paycore --bin paycore)
    PAYCORE_BIN="$CARGO_TARGET_DIR/debug/paycore"
fi

# 3. Start it on a free port with a fresh data folder.
rm -rf "$OUT" && mkdir -p "$OUT"
DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PAYCORE_API_KEY="$KEY" "$PAYCORE_BIN" serve --data "$DATA" --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

# 4. Fuzz every operation of the document with every check (5xx, schema conformance of status
#    codes, content types, headers and bodies, negative data rejected, ...).
status=0
cd "$OUT"  # schemathesis keeps its cache (.schemathesis/) in the working folder
schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
    -H "Authorization: Bearer $KEY" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 10 \
    --report junit --report-dir "$OUT" \
    ${SCHEMATHESIS_ARGS:-} || status=$?

# The server must still answer and must not have panicked.
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "the server stopped answering" >&2; status=1; }
if grep -q "panicked" "$OUT/server.log"; then
    echo "the server panicked; see $OUT/server.log" >&2
    status=1
fi
exit "$status"
