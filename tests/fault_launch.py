"""launch.py with a fault injected into one rank, for tests/test_distributed.py (not collected by pytest).

PAI_TEST_FAULT=<rank>:<mode>[:<epoch>] — on that rank the end-of-epoch evaluation of epoch <epoch> (default 1)
raises (`raise`: the process dies) or blocks for an hour (`hang`: the process is alive but never arrives);
`score`: scoring raises (on rank 0, the rank that scores).
"""

import os
import runpy
import time
from pathlib import Path

import pai.run
import pai.train.loop as loop

rank, mode, *rest = os.environ["PAI_TEST_FAULT"].split(":")
fault_epoch = int(rest[0]) if rest else 1
if int(os.environ.get("RANK", "0")) == int(rank) and mode == "score":
    def failing_score(*args, **kwargs):
        raise RuntimeError(f"injected scoring failure on rank {rank}")

    pai.run.score_and_mask = failing_score
elif int(os.environ.get("RANK", "0")) == int(rank):
    evaluate, calls = loop.evaluate, []

    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == fault_epoch:
            if mode == "hang":
                time.sleep(3600)
            raise RuntimeError(f"injected failure on rank {rank}")
        return evaluate(*args, **kwargs)

    loop.evaluate = faulty

# As a script (run_name __main__), so Hydra finds conf/ next to launch.py; it imports the patched module.
runpy.run_path(str(Path(__file__).resolve().parents[1] / "launch.py"), run_name="__main__")
