"""Figures stay readable: scoring time on a log axis, a distinct marker and line style per criterion, tick labels
of at least 8 pt, and the accuracy plot says what its error bars are."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure
from test_report import write_run

from pai.report import CRITERION_ORDER, build_report
from pai.report.plots import ERROR_BARS, TICK_PT, _styles, accuracy_figure, density_figure, score_time_figure

LAYERS = [f"layer{i}.conv.weight" for i in range(40)]  # a deep net: the density plot's widest tick row


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    for crit, seconds in (("snip", 0.05), ("fts", 0.2), ("hutch_diag", 350.0)):
        for seed in (0, 1):
            write_run(root, pruner=crit, sparsity=0.9, seed=seed, test_acc=0.8 + 0.01 * seed,
                      score_seconds=seconds, layer_density=dict.fromkeys(LAYERS, 0.1))  # snip = fts: coincide
    return build_report(root, tmp_path_factory.mktemp("out"))


def _figures(report) -> list[Figure]:
    runs = report["runs"][report["runs"]["status"] == "done"]
    return [accuracy_figure(report["summary"], "t"), density_figure(runs, 0.9, "t"), score_time_figure(runs, "t")]


def test_tick_labels_are_at_least_8_pt(report):
    for fig in _figures(report):
        fig.canvas.draw()  # ticks exist once drawn
        for ax in fig.axes:
            for label in ax.get_xticklabels() + ax.get_yticklabels():
                assert label.get_fontsize() >= TICK_PT, (fig.axes[0].get_title(), label.get_text())


def test_scoring_time_on_a_log_axis(report):
    ax = _figures(report)[2].axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert low <= 0.05 and high >= 350  # the 0.05 s bar is visible beside the 350 s one


def test_criteria_that_coincide_stay_distinguishable(report):
    lines = {ln.get_label(): ln for ln in _figures(report)[1].axes[0].lines}
    snip, fts = lines["snip"], lines["fts"]
    assert list(snip.get_ydata()) == list(fts.get_ydata())  # the same densities...
    assert snip.get_marker() != fts.get_marker() and snip.get_linestyle() != fts.get_linestyle()  # ...drawn apart
    styles = _styles(list(CRITERION_ORDER))
    pairs = {(s["marker"], s["ls"]) for s in styles.values()}
    assert len(pairs) == len(CRITERION_ORDER)  # every known criterion has its own marker/line-style pair


def test_accuracy_plot_names_its_error_bars(report):
    legend = _figures(report)[0].axes[0].get_legend()
    assert ERROR_BARS in legend.get_title().get_text()
    assert Path(report["plots"]["cifar10-resnet18-global-nowarmup"]["score_time"]).is_file()
