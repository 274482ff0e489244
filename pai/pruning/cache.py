"""Score cache: one scoring serves every sparsity of a sweep.

An entry holds a criterion's raw scores (every scored weight, before inversion and masking) under
`${out_root}/cache/<key>.pt`, where the key hashes everything the scores depend on: the dataset and model
nodes, the seed, the criterion's class and knobs, the scoring-sample options, the BN warmup (and its batch
size, which sets its running averages), and a fingerprint of the initial weights (so a changed model
initialisation never reuses stale scores). Not the sparsity, scope, inversion or classifier pruning: those
only act on the scores. Only single-round scoring is cached (later rounds depend on the sparsity).

With BN warmup the entry also holds the warmed-up buffers, so a hit restores them instead of repeating a pass
over the training set: training then starts from the same model as after a miss.

Entries are written atomically (`pai.files.atomic_open`), so concurrent jobs see either no file or a whole one.
Each carries a digest of its content, checked on every read: an entry that is unreadable, fails its digest or
holds another identity is set aside (`<key>.pt.corrupt-<time>`, with a warning) and is a miss. Jobs that
need one entry at the same time take its lock (`flock` on `<key>.lock`, released when the holder exits or
dies): the first scores, the others wait and then read its entry instead of scoring again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig
from torch import Tensor, nn

from pai import files
from pai.build import resolved
from pai.digest import load_checked, save_checked, tensor_digest
from pai.pruning.criteria.base import Criterion
from pai.pruning.options import PruneOptions
from pai.run_files import model_node

log = logging.getLogger(__name__)
CACHE_VERSION = 4  # bump when the scoring code changes what a criterion returns (2: random's stream order,
# since restored; 3: GraSP and the Hutchinson criteria differentiate every trainable parameter by default) or
# the entry format changes (4: entries carry a content digest)


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's parameters and buffers (names, shapes, dtypes and bytes)."""
    return tensor_digest(model.state_dict())


def cache_identity(cfg: DictConfig, options: PruneOptions, criterion: Criterion, model: nn.Module,
                   warmup_batch_size: int) -> dict:
    """Everything the raw scores depend on (call before BN warmup: it fingerprints the initial weights)."""
    p = options
    dataset = resolved(cfg.dataset)
    dataset.pop("root", None)  # where the files are does not change them
    cls = type(criterion)
    return {
        "version": CACHE_VERSION,
        "dataset": dataset,
        "model": model_node(cfg),  # without model.init_from: the weights fingerprint covers what it loads
        "seed": cfg.seed,
        "criterion": f"{cls.__module__}.{cls.__qualname__}",
        "knobs": criterion.knobs(),
        "samples_per_class": p.samples_per_class,
        "augment": p.augment,
        "score_batch_size": p.score_batch_size,
        "bn_warmup": p.bn_warmup,
        "warmup_batch_size": warmup_batch_size if p.bn_warmup else None,
        "weights": weights_fingerprint(model),
    }


class ScoreCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(identity: dict) -> str:
        return hashlib.sha256(_identity_text(identity).encode()).hexdigest()[:32]

    def path(self, identity: dict) -> Path:
        return files.cache_entry(self.root, self.key(identity))

    @contextmanager
    def lock(self, identity: dict) -> Iterator[None]:
        """Hold the entry's exclusive lock (blocking): one job scores, concurrent ones wait for its entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(files.cache_lock(self.root, self.key(identity)), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield  # closing the file releases the lock, also when the body raises

    def load(self, identity: dict) -> dict | None:
        """{"scores": ..., "buffers": ... | None} on CPU, or None: missing, or failing a check (unreadable, content
        not matching its digest, not this identity's entry), in which case the file is set aside as
        `<key>.pt.corrupt-<time>` with a warning and the caller scores again."""
        text = _identity_text(identity)
        return load_checked(self.path(identity), "score cache entry", "scoring again", required="scores",
                            check=lambda entry: None if entry.get("identity") == text
                            else "it holds the scores of another configuration")

    def save(self, identity: dict, scores: dict[str, Tensor], buffers: dict[str, Tensor] | None) -> Path:
        path = self.path(identity)
        save_checked({
            "identity": _identity_text(identity),
            "scores": {n: s.detach().cpu() for n, s in scores.items()},
            "buffers": None if buffers is None else {n: b.detach().cpu() for n, b in buffers.items()},
        }, path)
        return path


def _identity_text(identity: dict) -> str:
    return json.dumps(identity, sort_keys=True, default=str)
