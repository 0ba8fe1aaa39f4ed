"""Data-parallel training: ``torchrun --nproc-per-node N -m sdar.cli train ...``.

- The process group comes from torchrun's environment (gloo on CPU, nccl on CUDA).
- The policy is sharded with FSDP2 (``fully_shard`` on each decoder layer, then on the root).
  FSDP's gradient averaging is turned off (divide factor 1): every rank's loss is its token sum over
  the *global* token count (all-reduced), so the summed gradients are exactly those of the whole
  step's token mean, as in a single process.
- Each rank rolls out its share of the step's tasks (a task's whole group stays on one rank, so
  group advantages are unchanged).
- Every FSDP forward/backward is a collective, so ranks run the same number of micro-batches: a
  rank with fewer runs extra passes whose loss is multiplied by 0.
- After the optimiser step every rank gathers the full weights into its own unsharded copy, which
  its generation engine (one per rank; the HF engine on CPU) and the no-grad passes use.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DataParallel:
    """This process's place in the data-parallel group, and the collectives the trainer needs."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def from_environment(cls) -> DataParallel | None:
        """The group torchrun describes (``WORLD_SIZE`` > 1), initialised if needed; None otherwise."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shards a Hugging Face causal LM in place with FSDP2 (each decoder layer, then the root) and
        turns off FSDP's gradient averaging; returns the model."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard

        # the root returns HF outputs holding views (sliced logits); the loss never edits them in place
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        body = getattr(model, "model", None)
        for layer in getattr(body, "layers", []):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)
                module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
        return model

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (every ``world_size``-th item from ``rank``)."""
        if len(items) < self.world_size:
            raise ValueError(
                f"{len(items)} items cannot be split over {self.world_size} ranks: every rank needs at "
                "least one (raise --tasks-per-step)"
            )
        return list(items[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def max(self, value: int) -> int:
        tensor = torch.tensor([int(value)], dtype=torch.int64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def padded_micro_batches(self, batches: list[list[int]]) -> list[tuple[list[int], float]]:
        """``(row indices, loss weight)`` per pass: this rank's micro-batches (weight 1), then repeats
        of its first one with weight 0 until every rank runs as many passes as the busiest."""
        if not batches:
            raise ValueError("batches must not be empty: every rank needs at least one row")
        passes = self.max(len(batches))
        return [(b, 1.0) for b in batches] + [(batches[0], 0.0)] * (passes - len(batches))

    def gather_full_weights(self, sharded: torch.nn.Module, into: torch.nn.Module) -> None:
        """Copies the sharded model's full weights into the unsharded ``into`` (on every rank)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
        missing, unexpected = into.load_state_dict(state, strict=False)
        if unexpected or [name for name in missing if name != "lm_head.weight"]:
            raise ValueError(
                f"gathered weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")
