"""Sweep bookkeeping: every job of a `-m` sweep leaves a record, and the launching command ends with a report.

Hydra 1.3 hides failed jobs: under the basic launcher and under submitit every job runs, then the sweeper
re-raises the *first* failure only, and the jobs' own logs (under `.submitit/` on SLURM) are the only trace of
the others. pai does better:

- `launch.py` catches a run's exception in MULTIRUN mode (the run's results.json already says `failed`), so
  the sweep goes on, and calls `record_job`, which writes `pai_job.json` in the Hydra job directory
  (`${hydra.sweep.dir}/<job num>/`, on the submitting machine's file system for SLURM jobs too).
- `SweepReport` (registered in `conf/config.yaml` under `hydra.callbacks`) reads those records when the sweep
  ends, logs one line per failed run (its overrides, run directory, error and log file) and exits with
  status 1 when any run failed. If the launcher itself gives up (e.g. a SLURM job killed without a result), the
  same report is printed at exit, listing the jobs that left no record.

The run directories live under `${out_root}/runs/`, not in the sweep directory; a record names its run's.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pai import files

log = logging.getLogger("pai.sweep")

RECORD = files.JOB_RECORD
FAILED = ("failed", "interrupted", "cancelled", "timed_out")  # statuses that make the sweep exit 1
LABELS = {"cancelled": "CANCELLED", "timed_out": "TIMED OUT"}  # in the report; the others are FAILED


def launch_token(environ: Mapping[str, str] | None = None) -> str:
    """A short id of this launch, in Hydra's folder names (`${pai.launch:}` in conf/config.yaml; launch.py
    registers the resolver, cached, so a sweep's jobs see the launching process's value): two launches started
    in the same second get different sweep and log folders. The processes of one multi-process launch (the
    ranks of a torchrun, the tasks of one SLURM job step) derive it from the ids they share, so they keep
    sharing one log folder."""
    env = os.environ if environ is None else environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        shared = f"slurm {env['SLURM_JOB_ID']} {env.get('SLURM_STEP_ID', '')}"
    elif int(env.get("WORLD_SIZE", "1") or 1) > 1:  # torchrun: one rendezvous address per launch
        shared = f"torchrun {env.get('MASTER_ADDR')} {env.get('MASTER_PORT')} {env.get('TORCHELASTIC_RUN_ID')}"
    else:
        return secrets.token_hex(4)
    return hashlib.sha256(shared.encode()).hexdigest()[:8]


def record_job(cfg: DictConfig | None, status: str, run_dir: str | None = None, **fields: Any) -> Path | None:
    """Write this job's outcome into its Hydra job directory; a no-op outside a Hydra sweep job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    if run_dir is None and cfg is not None:
        run_dir = run_dir_of(cfg)
    return record_outcome(Path(hc.runtime.output_dir), hc.job.num, list(hc.overrides.task), status, run_dir=run_dir,
                          log_file=str(Path(hc.runtime.output_dir) / f"{hc.job.name}.log"),
                          slurm_job_id=_slurm_job_id(),
                          slurm_restart_count=int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0), **fields)


def record_outcome(job_dir: Path, job_num: int, overrides: list[str], status: str, **fields: Any) -> Path:
    """Write one job's record into its Hydra job directory: by the job itself (record_job), or by the launcher
    for a job that ended without a word (cancelled, timed out, killed)."""
    record = {"job_num": job_num, "overrides": overrides, "status": status, "host": socket.gethostname(),
              "ended_at": time.time(), **fields}
    path = files.job_record(job_dir)
    files.write_json(path, record)
    return path


def run_dir_of(cfg: DictConfig) -> str | None:
    """The run directory of a failed config, or None when the run never started (or the config names none)."""
    try:
        from hydra.utils import instantiate

        from pai.results import run_paths

        run_dir = run_paths(cfg, instantiate(cfg.pruner)).dir
        return str(run_dir) if run_dir.is_dir() else None
    except Exception:
        return None


def _slurm_job_id() -> str | None:
    array_id, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task:
        return f"{array_id}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def read_records(sweep_dir: str | Path) -> tuple[list[dict], list[Path]]:
    """The job records under a sweep directory, and the job directories that have none (killed/running)."""
    sweep_dir = Path(sweep_dir)
    records: list[dict] = []
    missing: list[Path] = []
    if not sweep_dir.is_dir():
        return records, missing
    # A job that started has .hydra/; one that never started may still have a record (written by the launcher).
    job_dirs = {p.parent for pattern in (".hydra", RECORD) for p in sweep_dir.rglob(pattern)}
    for job_dir in sorted(job_dirs):
        if ".submitit" in job_dir.parts:
            continue
        try:
            records.append(json.loads((job_dir / RECORD).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            missing.append(job_dir)
    records.sort(key=lambda r: (r.get("job_num") is None, r.get("job_num")))
    return records, missing


def summarize(sweep_dir: str | Path) -> tuple[list[str], int]:
    """The report's lines and the number of failed jobs (failed runs + jobs that left no record)."""
    records, missing = read_records(sweep_dir)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    total = len(records) + len(missing)
    parts = [f"{n} {s}" for s, n in sorted(counts.items())] + ([f"{len(missing)} without record"] if missing
                                                                else [])
    lines = [f"sweep {sweep_dir}: {total} job(s): " + (", ".join(parts) or "none")]
    lines += accuracy_table(records)
    failed = [r for r in records if r["status"] in FAILED]
    varying = _varying_overrides(records)
    for r in failed:
        shown = [o for o in r.get("overrides", []) if o in varying] or r.get("overrides", [])
        lines += [
            f"{LABELS.get(r['status'], 'FAILED')} #{r.get('job_num')}: {' '.join(shown)}",
            f"    error:   {r.get('error')}",
            f"    run dir: {r.get('run_dir') or '(none: the run never started)'}",
            f"    log:     {r.get('log_file')}",
        ]
    if counts.get("busy"):
        lines.append("busy = another job was running the same run directory (e.g. the dense baseline, one run for "
                     "every sparsity); its own record says how it ended.")
    for job_dir in missing:
        lines.append(f"NO RECORD: job dir {job_dir} (the job was killed, or is still running)")
    if failed or missing:
        lines.append("Fix the cause and relaunch the same command: finished runs are skipped, failed ones rerun, "
                     "interrupted ones resume from their last.pt.")
    return lines, len(failed) + len(missing)


def accuracy_table(records: list[dict]) -> list[str]:
    """Test accuracy (%) of the sweep's finished runs per criterion (rows, dense first, then in job order) and
    sparsity (columns): mean ± std over seeds (n). A run recorded by several jobs (the dense baseline of every
    sparsity) counts once. Plain Python: this also runs at interpreter exit, where pandas cannot be imported."""
    from tabulate import tabulate

    runs = {r["run_dir"]: r for r in records
            if r.get("status") in ("done", "skipped") and r.get("test_acc") is not None and r.get("criterion")}
    if not runs:
        return []
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs.values():
        dense = r.get("pruner") == "none" or r.get("sparsity") is None
        cells.setdefault((r["criterion"], "dense" if dense else f"{r['sparsity']:g}"), []).append(100 * r["test_acc"])
    rows = sorted(dict.fromkeys(c for c, _ in cells), key=lambda c: (c, "dense") not in cells)
    columns = sorted({s for _, s in cells}, key=lambda s: (s != "dense", 0.0 if s == "dense" else float(s)))

    def cell(accs: list[float] | None) -> str:
        if not accs:
            return ""
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""  # one seed: no std
        return f"{statistics.mean(accs):.2f}{spread} ({len(accs)})"

    table = tabulate([[c, *(cell(cells.get((c, s))) for s in columns)] for c in rows],
                     headers=["criterion \\ sparsity", *columns], tablefmt="simple", disable_numparse=True)
    return ["test accuracy (%), mean ± std over seeds (n):", *table.splitlines()]


def _varying_overrides(records: list[dict]) -> set[str]:
    """Overrides that are not shared by every job: the sweep's own parameters."""
    if len(records) < 2:
        return set()
    sets = [set(r.get("overrides", [])) for r in records]
    return set.union(*sets) - set.intersection(*sets)


def _lock_sweep_dir(sweep_dir: Path) -> IO:
    """An exclusive lock on the sweep directory for as long as this launch runs: a second launch told to use the
    same directory (`hydra.sweep.dir=...`) while the first runs would overwrite its job records, so it stops."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    f = open(sweep_dir / ".sweep.lock", "a+")  # kept open by the caller; the lock goes with the process
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        print(f"error: hydra.sweep.dir={sweep_dir} is in use by a running sweep ({holder}); give this one its "
              "own directory", file=sys.stderr)
        raise SystemExit(2) from None
    f.truncate(0)
    f.write(f"{socket.gethostname()} pid {os.getpid()}\n")
    f.flush()
    return f


class SweepReport(Callback):
    """Lists failed runs when a `-m` sweep ends and makes the launching command exit with status 1."""

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure
        self._sweep_dir: str | None = None
        self._lock: IO | None = None  # held while the sweep runs (released when the process ends)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = str(config.hydra.sweep.dir)
        self._lock = _lock_sweep_dir(Path(self._sweep_dir))
        # A relaunch into the same sweep directory must not report the previous launch's jobs.
        for path in Path(self._sweep_dir).glob(f"**/{RECORD}"):
            path.unlink(missing_ok=True)
        atexit.register(self._report_at_exit)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # launch.py records its own jobs; this catches an exception that escaped the task function.
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.FAILED:
            out = OmegaConf.select(config, "hydra.runtime.output_dir")
            if out and not (Path(out) / RECORD).exists():
                exc = job_return._return_value
                record_job(config, "failed", error=f"{type(exc).__name__}: {exc}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._report_at_exit)
        lines, failed = summarize(config.hydra.sweep.dir)
        for line in lines:
            (log.error if failed else log.info)("%s", line)
        if failed and self.exit_on_failure:
            raise SystemExit(1)

    def _report_at_exit(self) -> None:
        """The launcher or sweeper raised (Hydra prints that error and exits 1): still list what we know."""
        if self._sweep_dir is None:
            return
        lines, _ = summarize(self._sweep_dir)
        log.error("the sweep did not finish normally (see the error above); what its jobs recorded:")
        for line in lines:
            log.error("%s", line)
