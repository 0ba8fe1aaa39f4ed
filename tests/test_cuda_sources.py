"""The CUDA sources compile with nvcc for sm_80 and sm_90 with warnings as errors (CI has no GPU, so
this is the check that they build), and they take their per-row math from csrc/sdar_row.h."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import torch
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if os.path.exists(p)), None
)


def test_there_are_cuda_sources():
    assert {p.name for p in CUDA_SOURCES} >= {"row_kernels.cu", "objective_cuda.cu"}


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA sources were not compiled")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_compiles_for_sm80_and_sm90_without_warnings(source, tmp_path):
    include = pathlib.Path(torch.utils.cpp_extension.include_paths()[0])
    command = [
        NVCC, "-c", str(source), "-o", str(tmp_path / (source.stem + ".o")),
        f"-I{ROOT / 'csrc'}", f"-I{include}", f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
        "-std=c++20", "-O3", "-DSDAR_WITH_CUDA",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *COMMON_NVCC_FLAGS,
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
        "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed:\n{result.stdout}\n{result.stderr}"


def test_cuda_kernels_use_the_shared_row_math():
    """No second copy of the formulas: the gate, objective, softmax statistics and gradient come
    from sdar_row.h (included through kernel_args.h)."""
    kernels = (ROOT / "csrc" / "cuda" / "row_kernels.cu").read_text()
    for shared in (
        "row_objective<float>",
        "softmax_stats_push",
        "softmax_stats_merge",
        "logit_gradient",
        "logprob_of",
        "softmax_stats_entropy",
    ):
        assert shared in kernels, shared
    for formula in ("sigmoid", "clip_low", "kl_coef", "entropy_coef"):
        assert formula not in kernels, f"row_kernels.cu spells out '{formula}' instead of using sdar_row.h"
    assert '#include "../kernel_args.h"' in (ROOT / "csrc" / "cuda" / "row_kernels.cuh").read_text()
