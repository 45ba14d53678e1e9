"""Figures and tables formatted for people (issue 24, point 7), on a TPE sweep with a log-uniform ``lr``.

The records (``tpe_records``, :func:`conftest.write_tpe_records`) are those a TPE sweep of 10 trials leaves, its
parameters sampled by Optuna's TPE sampler: ``lr`` log-uniform between 0.0002 and 0.005 (``log_uniform_values``:
a span of 25, which alone would not make a log axis), ``tfr`` uniform, ``N_dim`` and ``kl_anneal_type`` categorical,
``optim`` a categorical the sampler gave one value (Adam), ``batch_size`` a constant; trial 6 pruned after one epoch.
"""

from __future__ import annotations

import math
import re
import shutil

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from cvae.analysis import figdata as D
from cvae.analysis import figures as F
from cvae.analysis.importance import FEW_IMPORTANCE_RUNS, MIN_IMPORTANCE_RUNS
from cvae.analysis.load import load_local, load_optuna, run_labels
from cvae.analysis.numbers import distinct, number, value
from cvae.analysis.report import build_report
from cvae.analysis.table import config_table, render_terminal
from rich.console import Console
from tpe_records import TPE_PRUNED, write_tpe_records

from cvae.cli import main

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?:e[-+]?\d+)?|(?<![\w.])\d+e[-+]?\d+")


def significant_digits(text: str) -> int:
    mantissa = text.split("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def long_numbers(text: str) -> list[str]:
    """The numbers in ``text`` written with more than 4 significant digits (a raw float: 0.0022124023820958194)."""
    return [n for n in NUMBER.findall(text) if significant_digits(n) > 4]


def lr_texts(text: str) -> list[str]:
    return re.findall(r"lr=([0-9.e+-]+\d)", text)


@pytest.fixture(scope="module")
def tpe(tpe_records):
    return load_local(tpe_records.runs)


def figure_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


# -- the formatter ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("x", "shown"), [
    (0.0022124023820958194, "0.00221"), (1e-05, "1e-05"), (0.000123456, "0.000123"), (1.0, "1"), (3, "3"),
    (np.float64(2.0), "2"), (1.5, "1.5"), (23.456, "23.5"), (1234.5, "1234"), (float("nan"), "—"),
])
def test_numbers_are_written_with_three_significant_digits_and_integers_as_integers(x, shown):
    assert number(x) == shown


@pytest.mark.parametrize(("x", "shown"), [
    (0.0022124023820958194, "0.00221"), (1.0, "1.0"), (0.0, "0.0"), (0.25, "0.25"), (1e-05, "1e-05"), (12, "12"),
    ("cyclical", "cyclical"), (True, "True"),
])
def test_parameter_values_keep_a_whole_floats_point_zero(x, shown):
    assert value(x) == shown


def test_close_values_get_the_digits_that_keep_them_apart():
    shown = distinct([0.0022124, 0.0022139, 0.5])
    assert (shown(0.0022124), shown(0.0022139), shown(0.5)) == ("0.002212", "0.002214", "0.5")
    runs = pd.DataFrame({"lr": [0.0022124, 0.0022139, 0.0022124], "optim": ["Adam"] * 3})
    assert run_labels(runs, ["lr", "optim"]) == ["lr=0.002212, optim=Adam", "lr=0.002214, optim=Adam",
                                                 "lr=0.002212, optim=Adam"]  # two configurations, not one


# -- what a TPE sweep's records say -------------------------------------------------------------------------------
def test_a_tpe_sweeps_records_name_every_swept_parameter_and_the_log_one(tpe, tpe_records):
    assert tpe.params == ["lr", "tfr", "N_dim", "kl_anneal_type", "optim"]  # batch_size: a constant
    assert tpe.log_params == ["lr"]
    lr = tpe.runs["lr"].to_numpy(dtype=float)
    assert lr.max() / lr.min() < 100  # the spec, not the span of the values, makes lr's axis log
    assert any(len(repr(x)) > 12 for x in lr)  # the data keep the sampler's exact values
    study = load_optuna(tpe_records.storage, tpe_records.study)  # FloatDistribution(log=True)
    assert study.params == tpe.params and study.log_params == ["lr"]
    assert study.runs["label"].tolist() == tpe.runs["label"].tolist()


def test_a_categorical_the_sampler_gave_one_value_stays_in_the_labels(tpe):
    assert tpe.runs["optim"].nunique() == 1 and tpe.runs["batch_size"].nunique() == 1
    for label in tpe.runs["label"]:
        assert label.endswith(", optim=Adam") and "batch_size" not in label
    assert "optim" in D.parallel_coordinates(tpe).attrs["axes"]
    assert "pooled over lr, tfr, N_dim; shaded" in D.kl_psnr(tpe).attrs["caption"]  # one value pools nothing
    importances = D.param_importances_data(tpe)
    assert "Not ranked (one value in every complete run): optim." in importances.attrs["caption"]


def test_labels_and_legends_show_lr_rounded(tpe):
    for label in tpe.runs["label"]:
        (lr,) = lr_texts(label)
        assert significant_digits(lr) <= 3 and not long_numbers(label), label
    exact = dict(zip(tpe.runs["label"], tpe.runs["lr"], strict=True))
    assert all(float(lr_texts(label)[0]) == pytest.approx(x, rel=5e-3) for label, x in exact.items())
    legend = F.render_psnr_per_frame(tpe).fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 10 and all(len(lr_texts(t)) == 1 for t in texts)
    assert not [n for t in texts for n in long_numbers(t)]


def test_no_figure_prints_a_raw_float(tpe):
    names = [*F.applicable_figures(tpe), "tfr_psnr"]  # tfr_psnr: asked for (one panel per run here)
    assert {"parallel_coordinates", "param_importances", "psnr_per_frame", "kl_beta_psnr"} <= set(names)
    for name in names:
        result = F.FIGURES[name][1](tpe)
        texts = [*figure_texts(result.fig), result.caption]
        assert not [n for t in texts for n in long_numbers(t)], name
        assert all(significant_digits(lr) <= 4 for t in texts for lr in lr_texts(t)), name
    caption = D.optimization_history(tpe).attrs["caption"]
    assert re.search(r"Best: \d+\.\d{2} \(t\d{4}, lr=0\.\d+, tfr=", caption)


def test_parallel_coordinates_draw_lr_on_a_log_axis_with_rounded_ticks(tpe):
    df = D.parallel_coordinates(tpe)
    assert df.attrs["scales"] == {"lr": "log", "tfr": "linear", "N_dim": "linear", "kl_anneal_type": "categorical",
                                  "optim": "categorical", "val/psnr": "linear"}
    assert "Log scale: lr." in df.attrs["caption"]
    runs = df[(df["kind"] == "run") & (df["axis"] == "lr")].set_index("run")["position"]
    lr = np.log10(tpe.runs.set_index("run")["lr"].reindex(runs.index).to_numpy(dtype=float))
    slope, intercept = np.polyfit(lr, runs.to_numpy(), 1)
    assert np.allclose(slope * lr + intercept, runs.to_numpy())  # positions linear in log10(lr)
    ticks = df[(df["kind"] == "tick") & (df["axis"] == "lr")]
    assert ticks["text"].tolist() == ["0.0002", "0.0005", "0.001", "0.002", "0.005"]
    assert ticks["position"].to_numpy() == pytest.approx(
        (np.log10(ticks["text"].astype(float)) - math.log10(0.0002)) / math.log10(25))
    for axis in df.attrs["axes"]:  # several ticks on every axis that has several values
        n = df[(df["kind"] == "tick") & (df["axis"] == axis)].shape[0]
        assert n >= (1 if axis == "optim" else 3), axis
    cats = df[(df["kind"] == "tick") & (df["axis"] == "kl_anneal_type")]["text"].tolist()
    assert cats == sorted(set(tpe.runs["kl_anneal_type"]))

    # the drawing: each lr tick written at its log position beside the lr axis (x = 0), every axis named
    fig = F.render_parallel_coordinates(tpe).fig
    ax = fig.axes[0]
    written = {t.get_text(): t.get_position() for t in ax.texts if t.get_position()[0] < 0}
    assert set(written) == {"0.0002", "0.0005", "0.001", "0.002", "0.005"}
    ys = np.array([written[k][1] for k in ("0.0002", "0.0005", "0.001", "0.002", "0.005")])
    assert ys == pytest.approx((np.log10([0.0002, 0.0005, 0.001, 0.002, 0.005]) - math.log10(0.0002))
                               / math.log10(25))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr\n(log scale)", "tfr", "N_dim", "kl_anneal_type",
                                                            "optim", "val/psnr"]
    assert {"Adam", "cyclical", "4", "16"} <= {t.get_text() for t in ax.texts}


def test_tables_show_rounded_lr_and_the_best_epoch_as_an_integer(tpe, tmp_path):
    table = config_table(tpe)
    assert table["lr"].tolist() == pytest.approx(sorted(tpe.runs["lr"], key=dict(
        zip(tpe.runs["lr"], tpe.runs["value"], strict=True)).get, reverse=True))  # exact in the data
    console = Console(record=True, width=250)
    console.print(render_terminal(tpe, table))
    text = console.export_text()
    assert not long_numbers(text) and len(lr_texts(text)) == 10
    rows = [line for line in text.splitlines() if "lr=" in line]
    assert all(re.search(r"│\s+3 │", line) for line in rows[:-1]) and re.search(r"│\s+0 │", rows[-1])
    assert "3.0" not in text and "0.0 " not in text
    table.to_csv(tmp_path / "t.csv", index=False)
    assert repr(float(tpe.runs["lr"].iloc[0])) in (tmp_path / "t.csv").read_text()  # the CSV keeps the exact values


def test_the_reports_card_and_table_are_rounded(tpe, tmp_path):
    page = build_report(tpe, tmp_path / "report.html", only=["parallel_coordinates"]).read_text()
    card = re.search(r'<div class="card" id="best-configuration">(.*?)</div>', page).group(1)
    best = config_table(tpe).iloc[0]
    assert f"<b>{best.configuration}</b>val/psnr {best.best_val_psnr:.2f} dB" in card
    assert not long_numbers(card) and significant_digits(lr_texts(card)[0]) <= 3
    visible = re.sub(r'src="data:[^"]*"', "", page)
    assert not long_numbers(visible)
    cells = re.findall(r"<td>([^<]*)</td>", re.search(r"<table>.*?</table>", page, re.S).group(0))
    assert "3" in cells and "3.0" not in cells  # best epoch


def test_a_run_pruned_early_shares_its_panels_schedule(tpe):
    df = D.kl_beta_psnr(tpe)
    pruned = f"t{TPE_PRUNED:04d}"
    panel = df[df["run"] == pruned]["panel"].iloc[0]
    schedules = df[(df["kind"] == "schedule") & (df["panel"] == panel)]
    assert schedules["line"].unique().tolist() == ["β (KL weight)"]


def test_panel_legends_stay_inside_their_column(tpe):
    fig = F.render_kl_beta_psnr(tpe).fig
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend() is not None]
    assert len(boxes) == 3
    width, height = fig.bbox.width, fig.bbox.height
    assert all(b.x0 >= 0 and b.x1 <= width and b.y0 >= 0 and b.y1 <= height for b in boxes)
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    axes = [ax.get_window_extent(renderer) for ax in fig.axes]
    assert all(b.y1 <= a.y0 for b in boxes for a in axes)  # under the panels, not over them


def test_a_schedule_figure_of_a_panel_per_run_is_not_drawn_and_says_why(tpe):
    assert len(F.tf_groups(tpe).order) == 10 > F.MAX_PANELS
    assert not {"tfr_loss", "tfr_psnr"} & set(F.applicable_figures(tpe))
    reasons = F.not_drawn(tpe)
    assert reasons["tfr_psnr"].startswith("10 teacher-forcing configurations, one panel each is more than 9")
    assert "param_importances" not in reasons


# -- importances and few trials ---------------------------------------------------------------------------------------
def test_importances_of_few_trials_carry_a_caveat(tpe):
    df = D.param_importances_data(tpe)
    assert df.attrs["layout"] == "bars" and MIN_IMPORTANCE_RUNS <= 9 < FEW_IMPORTANCE_RUNS
    assert "Only 9 complete trials (fewer than 10): importances from so few are rough" in df.attrs["caption"]


def test_importances_of_two_trials_say_why_they_are_not_drawn(tmp_path, capsys):
    records = write_tpe_records(tmp_path / "two", n_trials=2)
    data = load_local(records.runs)
    why = "importances need at least 4 complete trials with a val/psnr value, this sweep has 2"
    assert "param_importances" not in F.applicable_figures(data)
    assert F.not_drawn(data) == {"param_importances": why}
    assert main(["analysis", "figures", "--runs", str(records.runs), "--out", str(tmp_path / "figs")]) == 0
    assert f"not drawn: param_importances: {why}\n" in capsys.readouterr().out
    page = build_report(data, tmp_path / "report.html").read_text()
    assert f"<li><b>param_importances</b>: {why}.</li>" in re.search(r'<div id="not-drawn".*?</div>', page).group(0)
    shutil.rmtree(tmp_path / "figs")
