"""The embedded ``household`` environment: an ALFWorld-like text world (rooms, receptacles,
objects; six task types) generated deterministically from (split, seed), and an expert planner."""

from .catalog import TASK_TYPES
from .env import HouseholdEnv
from .expert import ExpertPlanner, expert_policy
from .tasks import SPLITS

__all__ = ["SPLITS", "TASK_TYPES", "ExpertPlanner", "HouseholdEnv", "expert_policy"]
