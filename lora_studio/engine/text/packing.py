"""Padding-free packing: short records share a row of up to ``max_seq_length`` tokens.

Each record keeps its own position ids (0, 1, ... from its first token), and the row
goes to the model without an attention mask: transformers then builds a block-diagonal
causal mask from the position ids, so no record attends to another. The first token
of each record is never a target (nothing of its own record precedes it), which is
what the unpacked loss does too: the loss of a packed row is the sum of its records'
losses, responses-only masking included.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from .tokens import IGNORE, Encoded


def pack(lengths: Sequence[int], capacity: int) -> list[tuple[int, ...]]:
    """Record indices grouped into rows of at most ``capacity`` tokens: best fit,
    longest first (ties by index, so the same data always packs the same way)."""
    rooms: list[tuple[int, int]] = []       # (room left, row), sorted
    rows: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        at = bisect.bisect_left(rooms, (lengths[i], -1))
        if at < len(rooms):
            room, row = rooms.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - lengths[i] > 0:
            bisect.insort(rooms, (room - lengths[i], row))
    return [tuple(sorted(row)) for row in rows]


def collate_packed(rows: Sequence[Sequence[Encoded]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, labels and position_ids of packed rows (no attention mask: the
    positions separate the records), and ``records``: which record of the batch (0, 1,
    ... across the rows in order) each token belongs to, for the per-record loss. A
    shorter row is padded with a block of its own (record 0, whose labels there are
    ignored)."""
    built, at = [], 0
    for row in rows:
        ids, labels, positions, records = [], [], [], []
        for item in row:
            ids += item.input_ids
            labels += [IGNORE] + item.labels[1:]
            positions += range(len(item.input_ids))
            records += [at] * len(item.input_ids)
            at += 1
        built.append((ids, labels, positions, records))
    width = max(len(ids) for ids, *_ in built)
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "labels": torch.full((len(rows), width), IGNORE, dtype=torch.long),
           "position_ids": torch.zeros((len(rows), width), dtype=torch.long),
           "records": torch.zeros((len(rows), width), dtype=torch.long)}
    for r, (ids, labels, positions, records) in enumerate(built):
        n = len(ids)
        out["input_ids"][r, :n] = torch.tensor(ids)
        out["labels"][r, :n] = torch.tensor(labels)
        out["position_ids"][r, :n] = torch.tensor(positions)
        out["position_ids"][r, n:] = torch.arange(width - n)
        out["records"][r, :n] = torch.tensor(records)
    return out


def padding_share(batches: Sequence[Sequence[Sequence[int]]], lengths: Sequence[int]) -> float:
    """Share of the tokens a model sees that are padding, for micro-batches of rows
    (each row a list of record indices), every row padded to its batch's longest."""
    seen = real = 0
    for batch in batches:
        row_lengths = [sum(lengths[i] for i in row) for row in batch]
        seen += max(row_lengths) * len(row_lengths)
        real += sum(row_lengths)
    return 1 - real / seen if seen else 0.0
