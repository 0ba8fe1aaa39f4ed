"""Names and integer codes shared with the native kernels (csrc/sdar_row.h).

Every backend returns its per-token statistics as one ``[NUM_STATS, N]`` tensor whose rows are
the ``STAT_*`` indices below; ``tests/test_layout.py`` checks them against the C++ enum.
"""

GATES = ("gap", "entropy", "soft_or", "none")
OBJECTIVES = ("sdar", "pg")
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")

STAT_STUDENT_LOGPROB = 0
STAT_TEACHER_LOGPROB = 1
STAT_GAP = 2
STAT_GATE = 3
STAT_ENTROPY = 4
STAT_RATIO = 5
STAT_CLIPPED = 6
STAT_KL = 7
STAT_WEIGHT = 8
STAT_COEF_LOGPROB = 9
STAT_COEF_ENTROPY = 10
STAT_ROW_MAX = 11
STAT_LOG_SUM = 12
NUM_STATS = 13


def gate_code(gate: str) -> int:
    return GATES.index(gate)


def objective_code(objective: str) -> int:
    return OBJECTIVES.index(objective)
