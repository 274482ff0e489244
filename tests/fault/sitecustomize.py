"""A fault injected into one rank of a pai run, for tests/test_distributed.py (not collected by pytest).

Python imports `sitecustomize` at start-up from PYTHONPATH, so with tests/fault on it every process of a run
(torchrun workers, the tasks of a SLURM job) patches itself before launch.py or submitit runs anything.
PAI_TEST_FAULT=<rank>:<mode>[:<epoch>]: the process whose RANK (torchrun, plain processes) or SLURM_PROCID (a
SLURM task) is <rank> fails: `raise` (the end-of-epoch evaluation of epoch <epoch>, default 1, raises),
`hang` (that evaluation blocks for an hour: alive but never arriving) or `score` (scoring raises). Processes
without either variable (the sweep's submitter, torchrun's agent) are left alone.
"""

import os

_fault = os.environ.get("PAI_TEST_FAULT")
_rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID"))
if _fault and _rank is not None and _rank == _fault.split(":")[0]:
    import time

    import pai.run
    import pai.train.loop as loop

    _, mode, *rest = _fault.split(":")
    fault_epoch = int(rest[0]) if rest else 1
    if mode == "score":
        def failing_score(*args, **kwargs):
            raise RuntimeError(f"injected scoring failure on rank {_rank}")

        pai.run.score_and_mask = failing_score
    else:
        evaluate, calls = loop.evaluate, []

        def faulty(*args, **kwargs):
            calls.append(1)
            if len(calls) == fault_epoch:
                if mode == "hang":
                    time.sleep(3600)
                raise RuntimeError(f"injected failure on rank {_rank}")
            return evaluate(*args, **kwargs)

        loop.evaluate = faulty
