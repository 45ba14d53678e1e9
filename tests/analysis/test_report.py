"""The table, the CLI and the HTML report, rendered by a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from cvae.analysis.load import load_local
from cvae.analysis.report import baseline_sentence, uses_sentence
from cvae.analysis.table import EVAL_MEASURES, at_value_epoch, config_table, mean_ci
from PIL import Image

from cvae.cli import main


def test_mean_ci_is_the_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-5)
    assert mean_ci([5.0])[0] == 5.0 and np.isnan(mean_ci([5.0])[1])


def test_config_table_reduces_replicates(sweep_records):
    data = load_local(sweep_records.runs)
    table = config_table(data)
    assert len(table) == 4 and set(table.runs) == {2}
    assert table.best_val_psnr.is_monotonic_decreasing
    for _, row in table.iterrows():
        runs = data.runs[data.runs.label == row.configuration].run
        bests = [data.epochs[data.epochs.run == r].val_psnr.max() for r in runs]
        assert row.best_val_psnr == pytest.approx(np.mean(bests))
        assert row.best_val_psnr_ci95 == pytest.approx(mean_ci(bests)[1])
        assert row.complete == 2
        copies = [data.epochs[data.epochs.run == r].val_psnr_copy_first.iloc[0] for r in runs]
        assert row.copy_first == pytest.approx(np.mean(copies))
        assert row.margin == pytest.approx(np.mean(np.subtract(bests, copies)))
        assert row.margin_ci95 == pytest.approx(mean_ci(np.subtract(bests, copies))[1])


def test_config_table_carries_the_evaluation_at_the_best_epoch(sweep_records):
    """Each evaluation column is the mean (and t-interval) over replicates of the value every run recorded at
    its best validation PSNR's epoch (every epoch of this sweep ran the whole evaluation)."""
    data = load_local(sweep_records.runs)
    table = config_table(data).set_index("configuration")
    assert set(EVAL_MEASURES) <= set(table.columns)
    for label, group in data.runs.groupby("label"):
        at_best = []
        for run in group.run:
            ep = data.epochs[data.epochs.run == run]
            at_best.append(ep.loc[ep.val_psnr.idxmax()])
        for name, (column, base, _) in EVAL_MEASURES.items():
            values = [row[column] - (row[base] if base else 0.0) for row in at_best]
            assert table.loc[label, name] == pytest.approx(np.mean(values)), (label, name)
            assert table.loc[label, f"{name}_ci95"] == pytest.approx(mean_ci(values)[1], nan_ok=True), (label, name)
    # the runs' own records (trial.json) say the same
    best = at_value_epoch(data, ["val_ssim", "val_psnr_no_prev"]).set_index("run")
    runs = data.runs.set_index("run")
    assert best.val_ssim.tolist() == pytest.approx(runs.val_ssim.tolist())
    assert best.val_psnr_no_prev.tolist() == pytest.approx(runs.val_psnr_no_prev.tolist())


def test_table_command_prints_and_writes_csv(sweep_records, tmp_path, capsys):
    assert main(["analysis", "table", "--runs", str(sweep_records.runs), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "TF1, kl_anneal_type=none" in out and "±" in out
    assert "what each configuration uses" in out and "active units" in out and "posterior collapse" in out
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "give a source"),
    (["--runs", "/nonexistent/runs"], "/nonexistent/runs: no such folder"),
    (["--storage", "sqlite:///x.db"], "--storage and --study go together"),
])
def test_bad_sources_are_one_line_errors(args, fragment, capsys):
    assert main(["analysis", "table", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


@pytest.mark.slow
def test_figures_command_from_each_source(sweep_records, tmp_path, capsys):
    for name, source in (("local", ["--runs", str(sweep_records.runs)]),
                         ("optuna", ["--storage", sweep_records.storage, "--study", sweep_records.study]),
                         ("wandb", ["--wandb-dir", str(sweep_records.wandb_dir)])):
        out = tmp_path / name
        assert main(["analysis", "figures", *source, "--out", str(out)]) == 0, name
        pngs = sorted(p.name for p in out.glob("*.png"))
        assert pngs and all((out / p.replace(".png", ".svg")).exists() for p in pngs)
    local = {p.stem for p in (tmp_path / "local").glob("*.png")}
    assert {"tfr_loss", "tfr_psnr", "kl_beta_psnr", "kl_psnr", "kl_loss", "psnr_per_frame"} <= local
    assert "ndim_psnr" not in local  # N_dim does not vary in this sweep
    assert "psnr_per_frame" not in {p.stem for p in (tmp_path / "optuna").glob("*.png")}  # no frames in Optuna
    assert main(["analysis", "figures", "--runs", str(sweep_records.runs), "--out", str(tmp_path / "c"),
                 "--only", "kl_psnr", "--compare", "kl_anneal_type", "--y", "train_loss"]) == 0
    assert len(list((tmp_path / "c").glob("*.png"))) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained_and_complete(sweep_records, tmp_path):
    out = tmp_path / "report.html"
    assert main(["analysis", "report", "--runs", str(sweep_records.runs), "--out", str(out)]) == 0
    page = out.read_text()
    assert not re.search(r'src="(?!data:)', page)  # every image embedded
    figures = re.findall(r'<figure id="(\w+)"><img alt="[^"]*" src="data:image/png;base64,', page)
    assert {"tfr_loss", "kl_psnr", "psnr_per_frame"} <= set(figures)
    assert page.count("<figcaption>") == len(figures) + 2  # + the best and the worst rollouts
    assert page.count('src="data:image/gif;base64,') == 2
    assert page.count("<tr") == 2 * (1 + 4)  # header + 4 configurations, then what each one uses
    assert "<th>margin over copy-first</th>" in page
    table = config_table(load_local(sweep_records.runs))
    sentence = re.search(r'<p id="baselines">([^<]+)</p>', page).group(1)
    n = int((table.margin > 0).sum())
    assert sentence == html.escape(baseline_sentence(table))
    assert sentence.startswith(f"{n} of 4 configurations" if n else "None of the 4 configurations beats")
    assert "fixture" in page and "kl_anneal_type" in page  # the spec
    uses_table = re.search(r'<table id="uses-table">.*?</table>', page).group(0)
    assert "uses" in figures and "<th>active units</th>" in uses_table
    assert "<th>Δ without prev. frame (dB)</th>" in uses_table and uses_table.count("<tr") == 1 + 4
    uses = re.search(r'<p id="uses">([^<]+)</p>', page).group(1)
    assert uses == html.escape(uses_sentence(table)) and "of 4 configurations ignore" in uses


@pytest.mark.parametrize(("margins", "start"), [
    ([-1.0, -2.5], "None of the 2 configurations beats copying the first frame (19.84 dB on the validation "
                   "video) at its best epoch (best margin -1.00 dB): these models have not learned"),
    ([3.2, -0.5], "1 of 2 configurations beats copying the first frame (19.84 dB on the validation video) at its "
                  "best epoch (mean over replicates); the widest margin is +3.20 dB (a)."),
    ([3.2, 0.5], "2 of 2 configurations beat copying the first frame (19.84 dB on the validation video) at "
                 "their best epoch"),
])
def test_the_report_says_how_many_configurations_beat_copying_the_first_frame(margins, start):
    import pandas as pd

    table = pd.DataFrame({"configuration": ["a", "b"], "margin": margins, "copy_first": [19.84, 19.84]})
    assert baseline_sentence(table).startswith(start)
    assert baseline_sentence(table.assign(margin=np.nan)) == ""


def test_the_report_says_which_configurations_ignore_their_latent_or_their_previous_frame():
    import pandas as pd

    table = pd.DataFrame({"configuration": ["a", "b", "c", "d"], "active_units": [0.0, 0.0, 2.5, 0.5],
                          "no_prev_change": [-0.05, -1.2, -2.0, 0.3]})
    assert uses_sentence(table) == (
        "2 of 4 configurations ignore their latent (0 active units at the epoch of the value, mean over replicates: "
        "posterior collapse): a, b; 2 of 4 do not use their previous frame (no PSNR drop without it: the rollout "
        "with the clip's first frame at every step scores within 0.1 dB of, or above, the normal one): a, d.")
    one = table.assign(no_prev_change=[-0.05, -1.2, -2.0, -0.11])
    assert "; 1 of 4 does not use its previous frame (" in uses_sentence(one) and uses_sentence(one).endswith(": a.")
    many = pd.DataFrame({"configuration": list("abcd"), "active_units": [0.0] * 4, "no_prev_change": [-3.0] * 4})
    assert uses_sentence(many) == (
        "4 of 4 configurations ignore their latent (0 active units at the epoch of the value, mean over replicates: "
        "posterior collapse); 0 of 4 do not use their previous frame (no PSNR drop without it: the rollout with "
        "the clip's first frame at every step scores within 0.1 dB of, or above, the normal one).")
    assert uses_sentence(table[["configuration"]]) == ""  # records without the diagnostics
    assert uses_sentence(table.assign(active_units=np.nan, no_prev_change=np.nan)) == ""
    assert uses_sentence(table.drop(columns=["no_prev_change"])).endswith("): a, b.")


@pytest.mark.skipif(_chromium() is None and os.environ.get("CVAE_REQUIRE_CHROMIUM") != "1",
                    reason="Chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(sweep_records, tmp_path):
    out = tmp_path / "report.html"
    assert main(["analysis", "report", "--runs", str(sweep_records.runs), "--out", str(out)]) == 0
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    chromium = _chromium()
    assert chromium, "CVAE_REQUIRE_CHROMIUM=1 but no chromium on PATH"
    subprocess.run([chromium, *flags, "--window-size=1280,2200", f"--screenshot={shot}", out.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as img:
        assert img.size == (1280, 2200)
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not a blank page: text, tables and plots
    # The images decoded: Chromium's DOM has every <img> with a natural size.
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--run-all-compositor-stages-before-draw",
                          "--dump-dom", out.as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<figure") >= 8 and "Sweep report: fixture" in dom
    shutil.copy(shot, "/tmp/report_shot.png") if os.environ.get("CVAE_KEEP_SHOT") else None
