#!/usr/bin/env bash
# Set up and start Adapter Registry on the embedded default: SQLite + a local artifact
# directory + kombu's filesystem broker (no Docker, Redis or PostgreSQL), with the API
# (uvicorn) and one real Celery worker process. Ctrl-C stops both.
#   REGISTRY_HOME (default ./.registry) holds the database, artifacts, broker and admin token.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export REGISTRY_HOME=${REGISTRY_HOME:-$(pwd)/.registry}
export HF_HUB_OFFLINE=1
PORT=${PORT:-8000}
.venv/bin/adapter-registry migrate
.venv/bin/adapter-registry worker &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo "web pages: http://127.0.0.1:$PORT/   API docs: http://127.0.0.1:$PORT/docs"
.venv/bin/adapter-registry serve --port "$PORT"
