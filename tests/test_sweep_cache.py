"""Concurrent jobs of one sweep that share (dataset, model, seed, criterion) share one scoring through the score
cache (pai/pruning/cache.py): nobody reads a torn entry, and the scores are computed once."""

from __future__ import annotations

import pytest
from conftest import TINY, all_results


def test_sequential_jobs_score_once(run_launch, tmp_path):
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, "pruner=fisher_diag", "sparsity=0.5,0.7,0.9"], out)
    assert proc.returncode == 0, proc.output
    results = all_results(out)
    assert len(results) == 3 and all(r["status"] == "done" for r in results)
    assert sorted(r["cache_hit"] for r in results) == [False, True, True]
    assert len(list((out / "cache").glob("*.pt"))) == 1


@pytest.mark.slow
def test_parallel_jobs_score_once(run_launch, tmp_path):
    """Four jobs started at once (submitit local launcher), with a scoring of ~seconds: the entry's lock lets
    exactly one compute the shared scores; the others wait and read its entry."""
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, "hydra/launcher=local", "pruner=hutch_diag", "prune.samples_per_class=6",
                       "sparsity=0.3,0.5,0.7,0.9"], out)
    assert proc.returncode == 0, proc.output
    results = all_results(out)
    assert len(results) == 4 and all(r["status"] == "done" for r in results)
    assert "unreadable score cache" not in proc.output  # never a torn entry
    misses = sum(not r["cache_hit"] for r in results)
    assert misses == 1, f"{misses} of 4 concurrent jobs computed the same scores"
