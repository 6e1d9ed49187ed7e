#!/usr/bin/env bash
# Set up rewarm: a virtual environment at .venv (or the active one) with rewarm and its
# dependencies. Where no torch is installed, the CPU build torch==2.13.0 comes first, so
# pip does not pull a multi-GB CUDA build; an environment with its own (GPU) torch keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
echo "setup: installing into $(python -c 'import sys; print(sys.prefix)')"
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
python -c "import rewarm, torch; print(f'setup: rewarm {rewarm.__version__}, torch {torch.__version__}')"
