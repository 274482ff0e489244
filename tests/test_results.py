"""RunResult: the one schema of results.json (validation, extra keys, the README's key table)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO_ROOT

from pai.results import REQUIRED_DONE, SCHEMA_VERSION, ResultsError, RunResult, read_results, write_results

DONE = {"status": "done", "dataset": "digits", "model": "resnet20", "pruner": "snip", "seed": 0, "sparsity": 0.9,
        "test_acc": 0.7, "test_loss": 0.9, "history": [{"epoch": 1, "test_acc": 0.7}],
        "layer_density": {"conv1.weight": 0.1}, "collapsed_layers": [], "cache_hit": True, "score_seconds": 0.0}


def test_the_readme_shows_the_schema_key_table():
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = "<!-- results-keys: python -m pai.results -->\n", "\n<!-- /results-keys -->"
    assert start in readme and end in readme
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    assert shown == RunResult.keys_markdown(), "regenerate README's results.json table: python -m pai.results"


def test_documented_keys_are_fields():
    # The names reports, W&B and outside tools rely on; renaming one breaks them.
    documented = {"config_hash", "dataset", "model", "pruner", "seed", "sparsity", "sparsity_achieved", "scope",
                  "bn_warmup", "test_acc", "test_loss", "layer_density", "collapsed_layers", "score_seconds",
                  "warmup_seconds", "train_seconds", "history", "status", "error", "cache_hit", "schema_version"}
    assert documented <= set(RunResult.keys())


@pytest.mark.parametrize(
    ("data", "reason"),
    [("x", "top level is str"), ([], "top level is list"), ({"status": "done"}, "missing or null"),
     ({**DONE, "test_acc": None}, "test_acc"), ({**DONE, "test_acc": 71.2}, "not in [0, 1]"),
     ({**DONE, "test_acc": math.nan}, "not in [0, 1]"), ({**DONE, "seed": "abc"}, "seed: 'abc' is not int"),
     ({**DONE, "seed": True}, "seed"), ({**DONE, "layer_density": {"a": "x"}}, "layer_density"),
     ({**DONE, "history": "none"}, "history"), ({**DONE, "status": "finished"}, "status: 'finished'"),
     ({**DONE, "sparsity": 1.5}, "sparsity: 1.5 is not in"), ({**DONE, "sparsity": 1.0}, "sparsity: 1.0 is not in"),
     ({**DONE, "sparsity": -0.1}, "sparsity: -0.1 is not in"), ({**DONE, "sparsity": math.nan}, "sparsity: nan"),
     ({**DONE, "effective_sparsity": math.nan}, "effective_sparsity: nan is not finite"),
     ({**DONE, "score_seconds": math.inf}, "score_seconds: inf is not finite")],
)
def test_invalid_records_are_refused_with_the_reason(data, reason):
    with pytest.raises(ResultsError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        RunResult.from_dict(data)


def test_only_finished_runs_need_finite_values_and_a_diverged_loss_is_kept():
    assert math.isnan(RunResult.from_dict({**DONE, "test_loss": math.nan}).test_loss)  # training diverged
    RunResult.from_dict({**DONE, "status": "failed", "sparsity": 1.5, "effective_sparsity": math.nan})
    assert RunResult.from_dict({**DONE, "sparsity": 0, "effective_sparsity": 1.0}).sparsity == 0  # dense


def test_every_required_key_of_a_finished_run_is_checked():
    for key in REQUIRED_DONE:
        with pytest.raises(ResultsError, match=key):
            RunResult.from_dict({k: v for k, v in DONE.items() if k != key})


def test_round_trip_keeps_unknown_keys_and_reads_old_files(tmp_path):
    path = tmp_path / "results.json"
    written = RunResult.from_dict({**DONE, "schema_version": SCHEMA_VERSION}).update({"a_key_from_a_newer_pai": 0.93})
    write_results(path, written)
    back = read_results(path)
    assert back == written and back.extra == {"a_key_from_a_newer_pai": 0.93}
    assert json.loads(path.read_text())["a_key_from_a_newer_pai"] == 0.93
    assert RunResult.from_dict(DONE).schema_version == 0  # a file from before the version key existed
    assert back.finished and back.cache_hit is True
    summary = back.summary()
    assert "history" not in summary and "layer_density" not in summary and summary["a_key_from_a_newer_pai"] == 0.93


def test_a_record_that_does_not_fit_is_never_written(tmp_path):
    with pytest.raises(ResultsError, match="test_acc"):
        write_results(tmp_path / "results.json", RunResult.from_dict(DONE).update({"test_acc": None}))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("content", ['"x"', '{"status": "done"}', '{"status": "done", "test_acc": null}',
                                     '{"status": "do', "", json.dumps({**DONE, "sparsity": 1.5}),
                                     json.dumps({**DONE, "effective_sparsity": math.nan})])
def test_reading_a_bad_results_json_sets_it_aside(tmp_path, content, caplog):
    path = tmp_path / "results.json"
    path.write_text(content)
    with caplog.at_level("WARNING"):
        assert read_results(path) is None
    (aside,) = tmp_path.glob("results.json.corrupt-*")
    assert aside.read_text() == content and not path.exists() and str(path) in caplog.text
    assert read_results(path) is None  # now simply missing


@pytest.mark.parametrize(
    ("record", "row"),
    [({"pruner": "grasp", "hessian_params": "all"}, "grasp"),  # the defaults: the plain row
     ({"pruner": "grasp", "hessian_params": "prunable"}, "grasp[prunable]"),
     ({"pruner": "synflow", "schedule": "seed_inverted"}, "synflow[seed_inverted]"),
     ({"pruner": "hts", "hessian_params": "prunable_classifier", "schedule": "linear", "ablation": "reinit"},
      "hts[prunable_classifier,linear]+reinit"),
     ({"pruner": "snip", "label": "snip+mask_from"}, "snip+mask_from"),  # default_label's tags
     ({"pruner": "grasp", "label": "grasp+init_from+mask_from", "hessian_params": "prunable",
       "ablation": "layer_shuffle"}, "grasp[prunable]+init_from+mask_from+shuffle"),
     ({"pruner": "grasp", "label": "g@x", "hessian_params": "prunable", "ablation": "none"}, "g@x"),  # label wins
     ({"pruner": "grasp", "label": "grasp", "hessian_params": "prunable"}, "grasp"),  # explicit, = the pruner
     ({"pruner": "none"}, "none")],
)
def test_row_name_marks_every_non_default_variant(record, row):
    assert RunResult.from_dict({**DONE, **record}).row_name() == row


def test_files_without_the_variant_keys_keep_their_row():
    old = RunResult.from_dict({**DONE, "pruner": "grasp", "label": "snip@x"})
    assert (old.hessian_params, old.schedule, old.row_name()) == (None, None, "snip@x")
    assert RunResult.from_dict({**DONE, "pruner": "synflow_seed"}).row_name() == "synflow_seed"
