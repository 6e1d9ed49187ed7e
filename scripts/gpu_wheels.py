"""Wheels for `benchmarks/gpu_check.py` on a GPU machine without network: what its imports need beyond
what the machine's image holds, at the versions installed here (the ones the tests ran with).

    python scripts/gpu_wheels.py --out .whl          # download them (cp312, manylinux, x86-64)
    python scripts/gpu_wheels.py --list              # only print what would be fetched

On the GPU machine, from the repository's root:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu_check.py --out gpu_check.json

A package published only as a source archive (pure Python) is built into a wheel here.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

NEEDED = [("jsonschema", ()), ("filelock", ()), ("lm-eval", ("hf",))]
"""What the check imports that the image lacks or holds in an older version: the shards' manifests
(jsonschema), the state's lock (filelock, whose flock-less fallback is recent), the harness."""

ALWAYS = {"filelock"}
"""Fetched even though the image has a version of it: rewarm needs a newer one."""

IMAGE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
"""The GPU machine's image ('cuda', nvidia-h200), as the device tool's KINDS.md listed it on 2026-11-17."""

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """name -> installed version of everything NEEDED pulls in, less what the image holds (ALWAYS kept)."""
    found: dict[str, str] = {}

    def walk(name: str, extras: tuple = ()) -> None:
        key = normalize(name)
        if key in found or (key in IMAGE and key not in ALWAYS):
            return
        distribution = metadata.distribution(name)
        found[key] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                continue
            walk(requirement.name)

    for name, extras in NEEDED:
        walk(name, extras)
    return dict(sorted(found.items()))


def fetch(name: str, version: str, out: Path) -> None:
    """A cp312 x86-64 wheel of name==version, or one built here from its (pure-Python) source archive."""
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "--platform=any", "-d", str(out),
                f"{name}=={version}"]
    if subprocess.run(download).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=:all:", "-d", tmp,
                        f"{name}=={version}"], check=True)
        archive = next(Path(tmp).iterdir())
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(archive)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".whl", help="where to put the wheels (default: .whl, which git ignores)")
    parser.add_argument("--list", action="store_true", help="print name==version of each, fetch nothing")
    args = parser.parse_args()
    wanted = closure()
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in wanted.items()))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, version in wanted.items():
        fetch(name, version, out)
    size = sum(path.stat().st_size for path in out.glob("*.whl"))
    print(f"{len(wanted)} packages in {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
