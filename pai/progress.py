"""Progress bars for the long silent steps (scoring sample groups, SynFlow rounds, the BN-warmup pass).

Bars are tqdm's, drawn only when stderr is a terminal: in a log file (a sweep job, SLURM) they print nothing,
so logs hold the one-line summaries that pai logs itself, never a bar per sample. `leave=False`: a finished
bar is erased, so nested bars (rounds over groups) do not pile up on the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from pai import distributed

T = TypeVar("T")


def bars_enabled() -> bool:
    """Draw bars only on an interactive terminal, and only on rank 0 of a distributed run."""
    return sys.stderr.isatty() and distributed.is_main()


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar while they are consumed (nothing is drawn when `bars_enabled()` is false)."""
    return iter(tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                     disable=not bars_enabled()))


def over_chunks(chunks: list[tuple[int, int, int]], desc: str = "scoring") -> Iterator[tuple[int, int, int]]:
    """`(start, stop, group size)` chunks of scoring samples (estimators.objective.group_chunks), with a bar
    that counts sample groups (a chunk advances it by the groups it holds)."""
    total = sum((stop - start) // size for start, stop, size in chunks)
    with tqdm(total=total, desc=desc, unit="group", leave=False, dynamic_ncols=True,
              disable=not bars_enabled()) as bar:
        for start, stop, size in chunks:
            yield start, stop, size
            bar.update((stop - start) // size)
