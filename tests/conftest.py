import os
import sys

# Without a GPU the Triton kernels run in Triton's CPU interpreter; the switch must be set before
# triton is first imported. (A CUDA device is detected without importing torch's CUDA state.)
if not os.path.exists("/dev/nvidia0") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from helpers import SEED


def pytest_report_header(config):
    import sdar_kernels

    capability = sdar_kernels.cpu_capability() if sdar_kernels.native_available() else "n/a"
    return [
        f"sdar test seed: SDAR_TEST_SEED={SEED} (set it to replay these inputs)",
        f"torch {torch.__version__}; native ops: {sdar_kernels.native_available()}; "
        f"CPU kernels: {capability}",
    ]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
