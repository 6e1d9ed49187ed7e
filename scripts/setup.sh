#!/usr/bin/env bash
# Set up rewarm in a virtual environment at .venv: rewarm and its dependencies. Where .venv has
# no torch, the CPU build torch==2.13.0 comes first, so pip does not pull a multi-GB CUDA build.
# To keep a GPU build instead, install it into .venv before running this script
# (python3 -m venv .venv && .venv/bin/pip install torch...): a torch already there is kept.
# With --with-slurm (the test command), it also installs a single-node SLURM from Debian's packages
# for the `slurm` tests where it can (apt-get and root), and says so clearly where it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--with-slurm" ]; then
    bash tests/slurm_cluster.sh install || echo "setup: SLURM could not be installed here: the slurm tests will not run" >&2
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
py=.venv/bin/python  # explicit, whatever environment is active in the calling shell
echo "setup: installing into $(cd .venv && pwd)"
"$py" -m pip install --quiet --upgrade pip
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet -e ".[test]"
# `dvc plots show` offline: its page with Vega inlined (.dvc/config names it; not tracked).
"$py" -m rewarm dvcfile --plots-page .dvc/plots/offline.html
"$py" -c "import rewarm, torch; print(f'setup: rewarm {rewarm.__version__}, torch {torch.__version__}')"
