#!/usr/bin/env bash
# make conformance: Autobahn|Testsuite (Python 2.7) against wavegate's echo client, per transport.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-conformance/fuzzingserver.json}"
py27="$(pyenv prefix 2.7.18 2>/dev/null)/bin/python" || true
if [ ! -x "$py27" ]; then
  echo "conformance: no CPython 2.7.18 (pyenv prefix 2.7.18): Autobahn cannot run here; skipped"
  exit 2
fi
if [ ! -x .venv-autobahn/bin/wstest ]; then
  python3 -m venv .venv-tools
  .venv-tools/bin/pip install -q 'virtualenv<20.22'
  .venv-tools/bin/virtualenv -q -p "$py27" .venv-autobahn
  .venv-autobahn/bin/pip install -q autobahntestsuite
fi
rm -rf reports/clients
.venv-autobahn/bin/wstest -m fuzzingserver -s "$config" > reports-fuzzingserver.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo > /dev/tcp/127.0.0.1/9001) 2>/dev/null && break
  sleep 0.1
done
agents=()
for transport in aiohttp picows; do
  deflate=""
  # The full run offers permessage-deflate (12.x, 13.x); picows has no compression.
  if [[ "$config" == *full* && "$transport" == aiohttp ]]; then deflate=deflate; fi
  .venv/bin/python -m conformance.client ws://127.0.0.1:9001 "$transport" $deflate
  agents+=("wavegate-$transport")
done
# picows without the compiled listener (an install without a C compiler).
WAVEGATE_PICOWS_LISTENER=python .venv/bin/python -m conformance.client ws://127.0.0.1:9001 picows
agents+=("wavegate-picows-python")
.venv/bin/python -m conformance.check reports/clients "${agents[@]}"
