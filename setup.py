"""Builds sdar_kernels._C, the native ops, against the torch that is already installed.

Install with ``pip install --no-build-isolation -e .`` (or without ``-e``): the extension must be
compiled against the torch in your environment, so pip must not build it in an isolated one.
"""

import os
import platform
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - message for users only
    sys.exit(
        "sdar: torch must be installed before building the native ops "
        "(pip install torch, then pip install --no-build-isolation -e .)"
    )

HERE = os.path.dirname(os.path.abspath(__file__))

GENERIC_SOURCES = [
    "csrc/bindings.cpp",
    "csrc/op_args.cpp",
    "csrc/cpu/objective_cpu.cpp",
    "csrc/cpu/capability.cpp",
    "csrc/cpu/kernels_default.cpp",
]

# Files compiled once more with an instruction set enabled for them alone; the kernels pick the
# variant at run time (csrc/cpu/capability.cpp). Keep in sync with CMakeLists.txt.
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
ISA_SOURCES = {
    "csrc/cpu/kernels_avx2.cpp": ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"],
    "csrc/cpu/kernels_avx512.cpp": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mavx2",
        "-mfma",
        "-mf16c",
        "-mbmi",
        "-mbmi2",
        "-mlzcnt",
        "-mpopcnt",
    ],
}

CUDA_SOURCES = ["csrc/cuda/row_kernels.cu", "csrc/cuda/objective_cuda.cu"]
NVCC_FLAGS = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-DSDAR_WITH_CUDA"]

CXX_FLAGS = [
    "-O3",
    "-std=c++20",
    "-fopenmp",
    "-DSDAR_PYTHON_MODULE",
    "-Wall",
    "-Wno-unknown-pragmas",
    "-Wno-maybe-uninitialized",
]


class BuildNativeOps(BuildExtension):
    """BuildExtension plus per-file instruction-set flags.

    The ISA files are compiled on their own with their -m flags and linked after the generic
    objects: the linker keeps the first copy of an inline function it sees, so c10 helpers
    instantiated in the AVX2/AVX-512 files never replace the generic ones.
    """

    def build_extension(self, ext):
        isa_sources = getattr(ext, "isa_sources", {})
        objects = []
        for source, isa_flags in isa_sources.items():
            flags = CXX_FLAGS + (isa_flags if IS_X86_64 else [])
            objects += self.compiler.compile(
                [source],
                output_dir=self.build_temp,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": flags, "nvcc": NVCC_FLAGS},
                depends=ext.depends,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def build_with_cuda() -> bool:
    """SDAR_WITH_CUDA=auto (default): CUDA kernels when a CUDA toolkit and a CUDA build of torch are
    present; 1 requires them; 0 builds the CPU kernels only."""
    choice = os.environ.get("SDAR_WITH_CUDA", "auto").lower()
    if choice in ("0", "off", "false", "no"):
        return False
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if choice in ("1", "on", "true", "yes") and not possible:
        sys.exit(
            f"SDAR_WITH_CUDA={choice} but torch.version.cuda={torch.version.cuda} and CUDA_HOME={CUDA_HOME}: "
            "a CUDA build of torch and a CUDA toolkit are needed"
        )
    return possible


def native_extension():
    with_cuda = build_with_cuda()
    extension = CUDAExtension if with_cuda else CppExtension
    ext = extension(
        name="sdar_kernels._C",
        sources=GENERIC_SOURCES + (CUDA_SOURCES if with_cuda else []),
        include_dirs=[os.path.join(HERE, "csrc")],
        depends=[os.path.join(root, f) for root, _, files in os.walk("csrc") for f in files],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
        extra_link_args=["-fopenmp"],
    )
    ext.isa_sources = ISA_SOURCES
    return ext


setup(
    packages=find_packages(include=["sdar_kernels", "sdar_kernels.*", "sdar", "sdar.*"]),
    ext_modules=[native_extension()],
    cmdclass={"build_ext": BuildNativeOps.with_options(use_ninja=True)},
)
