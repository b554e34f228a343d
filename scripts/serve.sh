#!/usr/bin/env bash
# Install model-mirror into .venv (created if missing) and start the daemon on the
# embedded defaults (127.0.0.1:8090, data in ./data, upstream https://huggingface.co).
# Extra arguments go to `mirror serve` (e.g. --host 0.0.0.0 --config config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh ""
exec .venv/bin/mirror serve "$@"
