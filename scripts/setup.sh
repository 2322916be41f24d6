#!/usr/bin/env bash
# Installs everything curate needs into ./.venv, from a fresh clone on a fresh machine.
#   bash scripts/setup.sh          # runtime: ffmpeg, venv, torch, curate
#   bash scripts/setup.sh --test   # + test tools: chromium + chromedriver, espeak-ng, pytest, selenium,
#                                  #   imagebind-unofficial (test-only, --no-deps, CC BY-NC-SA)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if [ $want_test = 1 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
  # speech made locally for the speech filter's tests (tests/avmedia.py: espeak)
  command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip >/dev/null 2>&1 || true
# No GPU here: take the CPU wheel first so the torch range in pyproject is already met and
# pip does not pull the multi-GB CUDA build. With a GPU, pip resolves the CUDA build itself.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/python -c "import torch" 2>/dev/null || $pip install -q torch==2.13.0
fi
if [ $want_test = 1 ]; then
  $pip install -q -e ".[test]"
  # reference implementation for the ImageBind equivalence test only; its own dependencies
  # do not install here and are not needed by the model modules the test imports
  $pip install -q --no-deps imagebind-unofficial
else
  $pip install -q -e .
fi
# yt-dlp[default] and deno come with curate (YouTube's JavaScript challenges need both)
echo "setup done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $(.venv/bin/deno --version | head -1)"
