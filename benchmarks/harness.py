"""Timing and memory measurement shared by the benchmark scripts.

- time: median and p20/p80 over repeats after warm-up, synchronising asynchronous devices;
- memory: the op's peak extra allocation (bytes allocated beyond what existed when it started,
  including its outputs) from the profiler's allocator events, so it is exact on the CPU
  (where torch keeps no peak counter) and on CUDA alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_s: float
    p20_s: float
    p80_s: float
    repeats: int

    def __str__(self) -> str:
        return f"{self.median_s * 1e3:.2f} ms [{self.p20_s * 1e3:.2f}, {self.p80_s * 1e3:.2f}]"


def synchronize(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, *, setup=None, warmup: int = 2, repeats: int = 7, device="cpu") -> Timing:
    """Times ``fn(state)`` where ``state = setup()`` is prepared untimed before each call."""
    samples = []
    for i in range(warmup + repeats):
        state = setup() if setup is not None else None
        synchronize(device)
        start = time.perf_counter()
        fn(state)
        synchronize(device)
        if i >= warmup:
            samples.append(time.perf_counter() - start)
        del state
    samples.sort()

    def pct(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    return Timing(statistics.median(samples), pct(0.2), pct(0.8), repeats)


def peak_extra_bytes(fn, device="cpu") -> int:
    """Peak bytes allocated by ``fn()`` beyond what was allocated when it started (outputs included)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - start
        del result
        return peak
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_chatter(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = json.load(handle)["traceEvents"]
    allocations = sorted(
        (e["ts"], e["args"].get("Ev Idx", 0), e["args"]["Bytes"])
        for e in events
        if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0
    )
    current = peak = 0
    for _, _, nbytes in allocations:
        current += nbytes
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _without_profiler_chatter():
    """The profiler's native layer prints "USDT: ... profiler_start/stop" lines on stderr (fd 2) at
    every start and stop; drop those lines and pass everything else written meanwhile through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith("USDT:"):
                    sys.stderr.write(line)


def machine_description() -> str:
    """One line naming the CPU (and GPU), core count and torch version, for every printed figure."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    return "; ".join(parts)


@dataclass
class LossMeasurement:
    forward: Timing
    backward: Timing
    forward_backward: Timing
    peak_extra_bytes: int


def measure_loss(fn, student, *rest, repeats: int = 7, device="cpu") -> LossMeasurement:
    """Times ``fn(student_leaf, *rest)`` forward, backward and both, and its peak extra memory.

    ``fn`` returns a 0-d loss; a fresh leaf copy of ``student`` is made (untimed) for every call.
    """

    def fresh():
        return student.detach().requires_grad_(True)

    def forward_only(z):
        return z, fn(z, *rest)

    forward = time_call(lambda z: fn(z, *rest), setup=fresh, repeats=repeats, device=device)
    backward = time_call(
        lambda state: state[1].backward(), setup=lambda: forward_only(fresh()), repeats=repeats, device=device
    )
    both = time_call(lambda z: fn(z, *rest).backward(), setup=fresh, repeats=repeats, device=device)

    def step():
        z = fresh()
        fn(z, *rest).backward()
        return z.grad

    return LossMeasurement(forward, backward, both, peak_extra_bytes(step, device=device))
