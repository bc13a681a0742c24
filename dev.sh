#!/usr/bin/env bash
# One-step set-up and run on a fresh Linux machine (Python 3.11+):
#   bash dev.sh demo    install into .venv, then run the tiny end-to-end demo
#   bash dev.sh test    install into .venv (plus .venv/interop, see below), then run the test suite
#   bash dev.sh interop only (re)build .venv/interop, the diffusers environment of the interop tests
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
    uv pip install -q -p "$VENV/bin/python" -e ".[test,lowvram]"
  else
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test,lowvram]"
  fi
  touch "$stamp"
}

# A second, separate environment for the interop tests: diffusers' LTX-2 LoRA loader needs transformers 5 and
# huggingface-hub >= 1, which conflict with our pinned transformers < 5. These few wheels go into $VENV/interop
# (no second torch: tests put it first on PYTHONPATH and take torch, peft, numpy, ... from $VENV).
INTEROP_PACKAGES="diffusers==0.42.1 transformers==5.24.0 huggingface_hub==2.4.0 tokenizers==0.23.3
  importlib_metadata==10.2.0 zipp==4.1.2 httpx2==2.16.2 httpcore2==2.16.2 anyio==4.16.0 h11==0.16.0
  lazy-importer==0.1.0 truststore==0.10.5 click==8.5.1"
install_interop() {
  local dir="$VENV/interop" stamp="$VENV/interop/.ltx-lora-interop"
  local want
  want=$(echo $INTEROP_PACKAGES)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  echo "Installing the interop test environment (diffusers + transformers 5) into $dir..."
  rm -rf "$dir"
  # shellcheck disable=SC2086
  if command -v uv >/dev/null 2>&1; then
    uv pip install -q -p "$VENV/bin/python" --no-deps --target "$dir" $want
  else
    "$VENV/bin/python" -m pip install -q --no-deps --target "$dir" $want
  fi
  echo "$want" > "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo) install; exec "$VENV/bin/ltx-lora" demo "$@" ;;
  # Two worker processes, one test file each at a time: every CLI test spends ~10 s of single-core import time in
  # its subprocess, which left one of CI's 2 cores idle (full suite on 2 cores: 1,245 s in one process, 1,030 s in
  # two, 2026-12-04). LTX_LORA_TEST_WORKERS=0 runs everything in this process.
  test) install; install_interop
        workers=()
        if [ "${LTX_LORA_TEST_WORKERS:-2}" != 0 ]; then
          # pytest-xdist is a speed-up, not a need: without it (no index reachable) the suite runs in one process.
          "$VENV/bin/python" -c "import xdist" 2>/dev/null \
            || "$VENV/bin/python" -m pip install -q "pytest-xdist>=3.5" >/dev/null 2>&1 \
            || { command -v uv >/dev/null 2>&1 && uv pip install -q -p "$VENV/bin/python" "pytest-xdist>=3.5" >/dev/null 2>&1; } \
            || echo "note: pytest-xdist could not be installed; the tests run in one process"
          if "$VENV/bin/python" -c "import xdist" 2>/dev/null; then
            workers=(-n "${LTX_LORA_TEST_WORKERS:-2}" --dist loadfile)
          fi
        fi
        # One thread per process: the tiny models spend more time syncing threads than computing, and 2 workers
        # on 2 cores with 2 threads each oversubscribe them (tests/test_fast_step.py alone: 50 -> 40 s).
        OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" exec "$VENV/bin/python" -m pytest -q "${workers[@]}" "$@" ;;
  install) install ;;
  interop) install_interop ;;
  *) echo "usage: bash dev.sh demo|test|install [args...]" >&2; exit 2 ;;
esac
