"""The per-token statistics layout is defined twice (C++ enum, Python constants); they must agree."""

import pathlib
import re

from sdar_kernels import _layout

HEADER = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "sdar_row.h"


def cpp_enum(name: str) -> dict[str, int]:
    text = HEADER.read_text()
    body = re.search(r"enum " + name + r" : int32_t \{(.*?)\};", text, re.S).group(1)
    return {key: int(value) for key, value in re.findall(r"(k\w+)\s*=\s*(\d+)", body)}


def snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def test_stat_rows_match_the_cpp_enum():
    cpp = cpp_enum("StatRow")
    python = {
        name: value
        for name, value in vars(_layout).items()
        if name.startswith("STAT_") or name == "NUM_STATS"
    }
    converted = {
        ("NUM_STATS" if k == "kNumStats" else "STAT_" + snake(k[len("kStat") :])): v for k, v in cpp.items()
    }
    assert converted == python


def test_gate_and_objective_codes_match_the_cpp_enums():
    gates = cpp_enum("GateKind")
    assert [gates[f"kGate{name.title().replace('_', '')}"] for name in _layout.GATES] == list(range(4))
    objectives = cpp_enum("ObjectiveKind")
    assert [objectives[f"kObjective{name.title()}"] for name in _layout.OBJECTIVES] == [0, 1]
