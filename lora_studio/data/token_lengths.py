"""What the token view's scan found, gathered as it streams in (the ``lengths``
messages of engine/text/token_view.py): each record's length in tokens, which will be
truncated at max_seq_length, which dropped (nothing left to learn from after the cut;
training skips them), which the chat template failed on; and a histogram of the
lengths against max_seq_length. With the job's dataset.mix the records of each mixed-in
source follow the file's, and each record is named by its source."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BINS_TO_LIMIT = 32   # histogram bars from 0 to max_seq_length
MAX_BINS = 64        # longer records share the last bar
LISTED = 1000        # records listed by name in each list; the counts are always whole


@dataclass(frozen=True)
class Histogram:
    edges: np.ndarray    # len(counts) + 1 bin edges, in tokens; max_seq_length is one
    counts: np.ndarray
    overflow: bool       # the last bar holds every record beyond its left edge


@dataclass
class TokenLengths:
    max_length: int
    total: int = 0                    # records the scan will report
    lengths: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)   # record indices
    dropped: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    # The scan's sources in order, the open file first ({"name", "weight", "records"}).
    sources: list[dict] = field(default_factory=list)

    def add(self, msg: dict) -> None:
        """One ``lengths`` message, in the order the scan sent them."""
        self.lengths += msg["lengths"]
        self.lines += msg["lines"]
        self.truncated += msg["truncated"]
        self.dropped += msg["dropped"]
        self.errors.update({int(k): v for k, v in msg["errors"].items()})

    def source_of(self, index: int) -> int:
        """Which source the record at ``index`` comes from (0: the open file)."""
        end = 0
        for n, source in enumerate(self.sources):
            end += source["records"]
            if index < end:
                return n
        return 0

    def label(self, index: int) -> str:
        """``line 6``, or ``more.jsonl line 6`` when the scan mixes in other sources."""
        line = f"line {self.lines[index]}"
        if len(self.sources) < 2:
            return line
        return f"{self.sources[self.source_of(index)]['name']} {line}"

    def sources_note(self) -> str:
        """The sources a mixed scan reads, with the records each gives; "" for one file."""
        if len(self.sources) < 2:
            return ""
        first, *mixed = self.sources
        parts = [f"{s['name']} ×{s['weight']:g} ({s['records']:,})" for s in mixed]
        return (f"Records from {first['name']} ({first['records']:,}) and the mix: "
                f"{', '.join(parts)}.")

    @property
    def done(self) -> int:
        return len(self.lengths)

    @property
    def measured(self) -> np.ndarray:
        """The lengths of the records the template did not fail on."""
        lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.errors:
            keep = np.ones(len(lengths), dtype=bool)
            keep[list(self.errors)] = False
            lengths = lengths[keep]
        return lengths

    def histogram(self) -> Histogram:
        width = max(1, math.ceil(self.max_length / BINS_TO_LIMIT))
        lengths = self.measured
        longest = int(lengths.max()) if len(lengths) else 0
        bins = max(BINS_TO_LIMIT, min(MAX_BINS, math.ceil((longest + 1) / width)))
        edges = np.arange(bins + 1, dtype=np.int64) * width
        overflow = longest >= edges[-1]
        counts = np.bincount(np.minimum(lengths // width, bins - 1), minlength=bins)
        return Histogram(edges, counts, bool(overflow))

    def summary(self) -> str:
        measured = len(self.lengths) - len(self.errors)
        if not self.done:
            return f"0 of {self.total:,} records tokenised." if self.total else ""
        share = len(self.truncated) / measured if measured else 0.0
        parts = [f"{len(self.truncated):,} of {measured:,} record(s) ({share:.1%}) are longer "
                 f"than max_seq_length {self.max_length:,} tokens and will be truncated"]
        if self.dropped:
            parts.append(f"{len(self.dropped):,} will be dropped (nothing left to learn from "
                         "after the cut)")
        if self.errors:
            parts.append(f"the chat template failed on {len(self.errors):,}")
        lengths = self.measured
        if len(lengths):
            parts.append(f"median {int(np.median(lengths)):,}, longest {int(lengths.max()):,} tokens")
        text = "; ".join(parts) + "."
        if self.done < self.total:
            text = f"{self.done:,} of {self.total:,} tokenised so far: " + text
        return text

    def listed(self) -> list[tuple[int, str]]:
        """(record index, line of text) for the records training will not take whole:
        template failures, then dropped, then truncated, longest first."""
        rows = [(i, f"{self.label(i)}: the chat template failed: {msg}")
                for i, msg in sorted(self.errors.items())[:LISTED]]
        dropped = set(self.dropped)
        rows += [(i, f"{self.label(i)}: dropped, {self.lengths[i]:,} tokens and none "
                     "to learn from before the cut") for i in self.dropped[:LISTED]]
        longest = sorted((i for i in self.truncated if i not in dropped),
                         key=lambda i: -self.lengths[i])[:LISTED]
        rows += [(i, f"{self.label(i)}: truncated, {self.lengths[i]:,} tokens")
                 for i in longest]
        return rows
