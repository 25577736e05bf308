"""Sharding work over accelerate processes, the one mechanism for every stage: each process takes a
slice of whole micro-batches, results are gathered (RL rollouts and calibration, generate's images).

Every process must see the same inputs (prompts, negatives, seeds); the gathered result is then the
same on all of them, so the policy update that follows is identical on every rank.

Slices are whole micro-batches (``granularity`` items, the pipeline batch size): float kernels give
slightly different numbers for different batch shapes (a tiny SD image can move by one uint8 level,
which a sharp Inception posterior amplifies), so one process must run exactly the batches that
several processes run between them. Then N processes reproduce one process bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def world(accelerator) -> tuple[int, int]:
    """(rank, world size); (0, 1) without accelerate. ``accelerator``: an ``Accelerator``, a
    ``PartialState`` or None."""
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def shard_indices(n: int, rank: int, world_size: int, granularity: int = 1) -> tuple[list[int], int]:
    """``rank``'s contiguous slice of ``range(n)`` in whole micro-batches; returns (indices, chunk).

    Each rank gets ``ceil(ceil(n / granularity) / world_size)`` micro-batches (``chunk`` items);
    the last slices may be short or empty. Every rank gathers ``chunk`` rows (padding included).
    """
    blocks = math.ceil(n / granularity)
    chunk = math.ceil(blocks / world_size) * granularity
    return list(range(min(n, rank * chunk), min(n, (rank + 1) * chunk))), chunk


def gather_rows(accelerator, x: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's padded slice in rank order and drop the padding: [chunk, ...] -> [n, ...]."""
    if accelerator is None or accelerator.num_processes == 1:
        return x[:n]
    from accelerate.utils import gather  # works for an Accelerator's and a bare PartialState's processes

    full = gather(x.to(accelerator.device).contiguous()).cpu()  # [world * chunk, ...]
    # slices are contiguous blocks and only the last non-empty one is short, so the first n rows are real
    return full[:n]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    fill = x[-1:].expand(rows - x.shape[0], *x.shape[1:]) if x.shape[0] else torch.zeros(rows, *x.shape[1:], dtype=x.dtype)
    return torch.cat([x, fill])


def map_sharded(accelerator, n: int, fn: Callable[[list[int]], dict[str, torch.Tensor]],
                granularity: int = 1) -> dict[str, torch.Tensor]:
    """Run ``fn(indices) -> {name: Tensor [len(indices), ...]}`` on this rank's slice; gather on all ranks.

    A rank with an empty slice runs ``fn`` on one dummy index for the shapes and gathers padding only.
    """
    if n == 0:
        return {}
    rank, size = world(accelerator)
    idx, chunk = shard_indices(n, rank, size, granularity)
    local = fn(idx) if idx else {k: v[:0] for k, v in fn([n - 1]).items()}
    return {name: gather_rows(accelerator, _pad_rows(value, chunk), n) for name, value in local.items()}


def map_micro_batches(accelerator, n: int, fn: Callable[[list[int]], dict[str, torch.Tensor]],
                      batch_size: int) -> dict[str, torch.Tensor]:
    """``fn(part)`` on each micro-batch of ``batch_size`` indices of this rank's slice (``map_sharded`` deals
    whole micro-batches), concatenated and gathered: one pipeline or scorer call per micro-batch, the same
    calls on any process count."""

    def work(idx: list[int]) -> dict[str, torch.Tensor]:
        parts = [fn(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    return map_sharded(accelerator, n, work, granularity=batch_size)
