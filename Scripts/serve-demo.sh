#!/usr/bin/env bash
# One command from a fresh clone to a serving RecServe: installs what is missing, builds the
# release binary and serves the models in ./models (training the demo model there on first run),
# keeping events (AppendEvents) in ./events. Extra arguments go to `recserve serve` (e.g. --port
# 50052 --host 0.0.0.0 --admin-token-file token.txt; a later --events-dir overrides this one).
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/install-deps.sh
swift build -c release --product recserve
exec .build/release/recserve serve --models "${RECSERVE_MODELS:-models}" \
  --events-dir "${RECSERVE_EVENTS:-events}" "$@"
