"""Distinct keys of a sequence and the map back to its rows: work that depends on a row's key alone (an image
on its (prompt, negative, seed), a text's embedding, a source's encoder pass) runs once per key."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def distinct_rows(keys: Sequence[Hashable]) -> tuple[list[int], torch.Tensor]:
    """(rows, inverse): the first row of each distinct key, in order of first appearance, and for every row the
    position of its key in ``rows``, so ``values[inverse]`` fans values back out."""
    position: dict[Hashable, int] = {}
    rows: list[int] = []
    inverse: list[int] = []
    for row, key in enumerate(keys):
        if key not in position:
            position[key] = len(rows)
            rows.append(row)
        inverse.append(position[key])
    return rows, torch.tensor(inverse, dtype=torch.long)
