"""Files on disk: the names of what pai writes, one atomic way to write them, and one way to set aside a file
that fails its check when read back.

Layout (every name below comes from this module):

    ${out_root}/runs/<dataset>-<model>/<pruner>/sp<s>/seed<n>-<hash>/   a run directory (pai.results.run_paths)
        results.json        the run's RunResult (pai.results)
        last.pt             the epoch checkpoint (pai.train.checkpoint), digest-checked on load
        .lock               flock held by the job running the run
        config.yaml         the resolved config; overrides.yaml: the attempt's command-line overrides (pai.run_files)
        init.safetensors    the initial weights; masks.safetensors: the masks, uint8 (pai.run_files)
    ${out_root}/cache/<key>.pt, <key>.lock                               score cache entries (pai.pruning.cache)
    ${hydra.sweep.dir}/<job num>/pai_job.json                            a sweep job's record (pai.callbacks)

A file that fails its check is renamed `<name>.corrupt-<UTC time>` next to where it was (never deleted), with a
warning that names it and says why; the caller then recomputes what the file held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
CACHE_DIR = "cache"
RESULTS = "results.json"
CHECKPOINT = "last.pt"
RUN_LOCK = ".lock"
CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
INIT = "init.safetensors"
MASKS = "masks.safetensors"
JOB_RECORD = "pai_job.json"
CORRUPT_SUFFIX = ".corrupt-"


def runs_root(out_root: str | Path) -> Path:
    return Path(out_root) / RUNS_DIR


def cache_root(out_root: str | Path) -> Path:
    return Path(out_root) / CACHE_DIR


def results(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS


def checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def run_lock(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_LOCK


def cache_entry(root: str | Path, key: str) -> Path:
    return Path(root) / f"{key}.pt"


def cache_lock(root: str | Path, key: str) -> Path:
    return Path(root) / f"{key}.lock"


def job_record(job_dir: str | Path) -> Path:
    return Path(job_dir) / JOB_RECORD


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write `path` all at once: readers (and a crash at any moment) see either the old file or the whole new one.

    The body writes to a temporary file in the same directory (so the rename cannot cross file systems), which
    is flushed, fsynced and renamed over `path`; the directory is fsynced so the rename survives a power loss.
    If the body raises, the temporary file is removed and `path` is untouched. The file is created with mode
    0o666 minus the process umask, like `open()` would (mkstemp's 0600 would hide results from collaborators).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened or fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON (non-JSON values, e.g. numpy scalars, as their str)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


def brief(exc: BaseException) -> str:
    """`<type>: <first sentence of the message>`, for a one-line warning about a file that could not be read."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].split('. ')[0][:160] if lines else ''}".rstrip(": ")


def set_aside(path: str | Path, reason: str) -> Path | None:
    """Rename a file that failed its check to `<name>.corrupt-<UTC time>` beside it and warn with its path and
    the reason. Returns the new path, or None when the file is already gone (another process set it aside)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    log.warning("set aside %s: %s; moved to %s", path, reason, target.name)
    return target
