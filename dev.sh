#!/usr/bin/env bash
# One-step set-up and run on a fresh Linux machine (Python 3.11+):
#   bash dev.sh demo    install into .venv, then run the tiny end-to-end demo
#   bash dev.sh test    install into .venv, then run the test suite
# Uses uv when it is installed, else pip. Re-running skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${LTX_LORA_VENV:-.venv}

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    if command -v uv >/dev/null 2>&1; then uv venv -q -p "$PY" "$VENV"; else "$PY" -m venv "$VENV"; fi
  fi
  local stamp="$VENV/.ltx-lora-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then return; fi
  echo "Installing ltx-lora and its dependencies into $VENV (the first time downloads torch: several minutes)..."
  if command -v uv >/dev/null 2>&1; then
    uv pip install -q -p "$VENV/bin/python" -e ".[test]"
  else
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
  fi
  touch "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo) install; exec "$VENV/bin/ltx-lora" demo "$@" ;;
  test) install; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  install) install ;;
  *) echo "usage: bash dev.sh demo|test|install [args...]" >&2; exit 2 ;;
esac
