"""Both build systems produce the same library: the CMake build is configured, built and loaded."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHECK = """
import sys, torch, sdar_kernels
assert 'sdar_kernels._C' not in sys.modules, 'loaded the setup.py build instead'
assert sdar_kernels.native_available(), sdar_kernels._native.load_error()
g = torch.Generator().manual_seed(0)
z = torch.randn(33, 1001, generator=g, dtype=torch.float64).requires_grad_(True)
t = torch.randn(33, 1001, generator=g, dtype=torch.float64)
y = torch.randint(0, 1001, (33,), generator=g)
native = sdar_kernels.sdar_loss(z, t, y, backend='cpu')
(g_native,) = torch.autograd.grad(native, z)
eager = sdar_kernels.sdar_loss(z, t, y, backend='torch')
(g_eager,) = torch.autograd.grad(eager, z)
torch.testing.assert_close(native, eager, rtol=1e-12, atol=1e-12)
torch.testing.assert_close(g_native, g_eager, rtol=1e-10, atol=1e-12)
print('cmake library ok', sdar_kernels.cpu_capability())
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_build_loads_and_matches(tmp_path):
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            *generator,
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--parallel", "2"], check=True, capture_output=True, text=True
    )
    library = build / "libsdar_kernels.so"
    assert library.exists()
    env = {**os.environ, "SDAR_KERNELS_LIBRARY": str(library)}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "cmake library ok" in out.stdout
