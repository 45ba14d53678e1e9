"""benchmarks/reports.py: its statistics, its per-run CSV, the docs page it generates, and its specs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from bench_loader import load_benchmark
from cvae.core.schedules import kl_beta, teacher_forcing_ratio
from cvae.sweeps.spec import load_spec, parse_spec

from cvae.schema import TrialRecord

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "benchmarks" / "configs" / "reports"


reports = load_benchmark("reports")


# -- statistics ----------------------------------------------------------------------------------------------------
def test_holm_matches_the_hand_computed_adjustment():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06.
    assert reports.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reports.holm([0.5, 0.6]) == [1.0, 1.0]  # 0.5 x 2 capped at 1; 0.6 x 1 never below it
    assert reports.holm([0.02]) == [0.02]
    assert reports.holm([]) == []


def test_hedges_g_on_known_data():
    # Means 3 and 5, both standard deviations sqrt(2.5): d = -2 / sqrt(2.5); J = 1 - 3 / (4 * 10 - 9) = 28/31.
    g = reports.hedges_g([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])
    assert g == pytest.approx(-2 / math.sqrt(2.5) * 28 / 31)
    assert g == pytest.approx(-1.142500, abs=1e-6)


def test_a_p_of_003_is_not_significant_among_4_contrasts():
    alone, among_four = reports.holm([0.03]), reports.holm([0.03, 0.2, 0.5, 0.8])
    assert reports.verdict({"diff": 1.0, "p_holm": alone[0]}) == "holds"
    assert among_four[0] == pytest.approx(0.12)
    assert reports.verdict({"diff": 1.0, "p_holm": among_four[0]}) == "inconclusive"
    assert reports.verdict({"diff": 1.0, "p_holm": among_four[0]}, at_least=True) == "consistent"
    assert reports.verdict({"diff": -1.0, "p_holm": 0.01}) == "contradicted"
    assert reports.verdict(None) == "not run"


def test_a_family_uses_the_bonferroni_level_for_its_intervals():
    from scipy import stats

    a, b, c = [1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 2.5, 3.0]
    results = reports.family([(a, b), (a, c), ([1.0], c)], reports.welch)
    assert results[2] is None  # one run: not tested, and not counted in m
    assert [r["m"] for r in results[:2]] == [2, 2]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - 0.05 / 2)
    assert (results[0]["lo"], results[0]["hi"]) == pytest.approx((ci.low, ci.high))
    assert [r["p_holm"] for r in results[:2]] == pytest.approx(reports.holm([results[0]["p"], results[1]["p"]]))


# -- the specs -----------------------------------------------------------------------------------------------------
def _configs(name: str) -> dict:
    """A shipped spec's training configs by configuration label (TF1, N_dim=12)."""
    spec, raw = load_spec(SPECS / f"{name}.yaml"), reports.read_spec(name)
    key, _ = reports.compared(raw)
    return {reports.label(raw, p[key]): spec.trial_config(p, save_root="x") for p in spec.grid()}


def test_kl1p_kl2p_and_kl3_end_on_beta_1_and_kl1_kl2_do_not():
    cfgs = _configs("kl_annealing")
    last = {k: kl_beta(c.schedule, c.run.num_epoch, c.run.num_epoch - 1) for k, c in cfgs.items()}
    assert {k: last[k] for k in ("KL1p", "KL2p", "KL3")} == {"KL1p": 1.0, "KL2p": 1.0, "KL3": 1.0}
    assert last["KL1"] == pytest.approx(5 / 6) and last["KL2"] == pytest.approx(11 / 12)
    assert [round(kl_beta(cfgs["KL1p"].schedule, 12, e), 3) for e in range(6)] == [0, 0.208, 0.417, 0.625, 0.833, 1]


def test_the_specs_run_5_seeds_judged_at_a_fully_evaluated_last_epoch():
    for name in ("teacher_forcing", "kl_annealing", "ndim"):
        spec = load_spec(SPECS / f"{name}.yaml")
        assert spec.replicates == 5 and spec.metric.summary == "last"
        for cfg in _configs(name).values():  # the K samples of z and the diagnostics at the last epoch only
            assert cfg.run.val_samples == 5 and cfg.run.val_diagnostics
            assert cfg.run.val_eval_every == cfg.run.num_epoch == 12


def test_ndim_12_trains_as_tf3_and_is_not_run_again():
    tf3, ndim12 = _configs("teacher_forcing")["TF3"], _configs("ndim")["N_dim=12"]
    a, b = tf3.to_flat(), ndim12.to_flat()
    assert {k for k in a if a[k] != b[k]} == {"tfr_sde", "tfr_d_step"}
    assert all(teacher_forcing_ratio(c.schedule, e) == 0.0 for c in (tf3, ndim12) for e in range(12))
    mapping = reports.spec_mapping("ndim", 0, Path("/tmp/out"), workers=2, smoke=False)
    assert [p["N_dim"] for p in parse_spec(mapping, base_dir=SPECS).grid()] == [32]


def test_the_second_data_seed_changes_only_the_data_and_the_outputs():
    mapping = reports.spec_mapping("kl_annealing", 1, Path("/tmp/out"), workers=2, smoke=False)
    spec = parse_spec(mapping, base_dir=SPECS)
    shipped = load_spec(SPECS / "kl_annealing.yaml")
    assert spec.synth.seed == 1 and shipped.synth.seed == 0
    assert spec.data_root == "/tmp/out/data-seed1" and spec.output_dir == Path("/tmp/out/reports-kl-annealing-seed1")
    assert spec.grid() == shipped.grid() and spec.replicates == shipped.replicates == 5
    assert {k: v for k, v in spec.base.items() if k not in ("DR", "cache_dir")} == {
        k: v for k, v in shipped.base.items() if k not in ("DR", "cache_dir")}


# -- the per-run CSV -----------------------------------------------------------------------------------------------
def _fake_sweep(folder: Path, psnr: float, state: str = "complete") -> None:
    """A teacher-forcing sweep's output folder with two runs (TF1 and TF3, replicate 0), 2 epochs, a 8-frame
    validation clip (predicted frames 1-7)."""
    for i, schedule in enumerate(("TF1", "TF3")):
        run = folder / f"t{i:04d}"
        run.mkdir(parents=True, exist_ok=True)
        TrialRecord(study="s", trial_number=i, run_key=i, params={"tf_schedule": schedule, "kl_anneal_type": "none"},
                    replicate=0, state=state, value=psnr + i, duration_s=200.0).write(run / "trial.json")
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "tfr": 1.0 - i, "tfr_sde": 0, "tfr_d_step": 0.5,
                                                         "kl_anneal_type": "none", "N_dim": 12, "num_epoch": 2}))
        with (run / "metrics.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "val_psnr", "val_psnr_best_of_k", "val_psnr_copy_first", "val_kl"])
            w.writerow([0, psnr + i + 1, "", 22.0, 3.0])  # the best epoch
            w.writerow([1, psnr + i, psnr + i + 0.5, 22.0, 2.0])
        with (run / "psnr_per_frame.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "frame", "psnr", "psnr_best_of_k"])
            for epoch in (0, 1):
                for frame in range(1, 8):  # frames 1-3 the first half, 4-7 the second
                    w.writerow([epoch, frame, 30.0 if frame < 4 else 26.0, 31.0 if frame < 4 else 28.0])


def test_a_sweep_read_again_replaces_its_rows(tmp_path):
    folder, table = tmp_path / "sweep", tmp_path / "runs.csv"
    _fake_sweep(folder, 35.0, state="running")
    reports.update_csv(table, reports.read_runs("teacher_forcing", 0, folder))
    other = dict.fromkeys(reports.RUN_COLUMNS) | {"sweep": "ndim", "data_seed": 0, "config": "N_dim=32",
                                                   "replicate": 0, "state": "complete", "val_psnr": 30.0}
    reports.update_csv(table, [other])
    first = reports.read_csv(table)
    assert list(first.config) == ["TF1", "TF3", "N_dim=32"]
    assert set(first.state[first.sweep == "teacher_forcing"]) == {"running"}

    _fake_sweep(folder, 36.0)  # the sweep resumed and finished: its records are read again
    reports.update_csv(table, reports.read_runs("teacher_forcing", 0, folder))
    runs = reports.read_csv(table)
    assert list(runs.config) == ["TF1", "TF3", "N_dim=32"]  # replaced, not duplicated
    tf1 = runs[runs.config == "TF1"].iloc[0]
    assert tf1.state == "complete" and tf1.val_psnr == 36.0 and tf1.best_val_psnr == 37.0 and tf1.best_epoch == 0
    assert tf1.last_epoch == 1 and tf1.val_psnr_best_of_k == 36.5 and tf1.val_kl == 2.0 and tf1.wall_s == 200.0
    assert (tf1.seed, tf1.tfr, tf1.num_epoch, tf1.kl_anneal_type) == (1, 1.0, 2, "none")
    assert (tf1.frames_first_psnr, tf1.frames_second_psnr) == (30.0, 26.0)
    assert tf1.drop_val_psnr == 4.0 and tf1.drop_val_psnr_best_of_k == 3.0 and tf1.margin_val_psnr == 14.0
    assert runs[runs.sweep == "ndim"].val_psnr.tolist() == [30.0]  # another sweep's rows are kept


def test_the_tables_need_only_the_csv(tmp_path, capsys):
    table = tmp_path / "runs.csv"
    _write_runs(table)
    assert reports.main(["--table", "--csv", str(table), "--out", str(tmp_path / "no-runs")]) == 0
    out = capsys.readouterr().out
    assert "| Teacher forcing | 0 | TF3 | 5 | 35.00 ± 0.47 |" in out
    assert not (tmp_path / "no-runs").exists()


# -- the docs page -------------------------------------------------------------------------------------------------
NOISE = (0.5, -0.5, 0.2, -0.2, 0.0)


def _write_runs(path: Path) -> None:
    """Five seeds per configuration, values known: TF3 5 dB above TF1 and TF2 (equal); KL3 10 dB above the
    other KL schedules (equal); N_dim=32 2 dB below N_dim=12 (TF3's runs). The rollout's decline: 2 dB in TF1,
    none in TF2, -2 dB in TF3."""
    means = {("teacher_forcing", "TF1"): 30.0, ("teacher_forcing", "TF2"): 30.0, ("teacher_forcing", "TF3"): 35.0,
             ("ndim", "N_dim=32"): 33.0, **{("kl_annealing", k): 40.0 if k == "KL3" else 30.0
                                          for k in ("KL1", "KL2", "KL3", "KL4", "KL5", "KL1p", "KL2p")}}
    drop = {"TF1": 2.0, "TF3": -2.0}
    rows = []
    for (sweep, config), mean in means.items():
        for rep, noise in enumerate(NOISE):
            value = mean + noise
            d = drop.get(config, 0.0) + NOISE[(rep + 1) % 5] / 5
            rows.append(dict.fromkeys(reports.RUN_COLUMNS) | {
                "sweep": sweep, "data_seed": 0, "config": config, "replicate": rep, "seed": rep + 1,
                "state": "complete", "val_psnr": value, "val_psnr_best_of_k": value + 1, "best_val_psnr": value + 0.1,
                "val_psnr_copy_first": 22.1, "frames_first_psnr": value + d / 2, "frames_second_psnr": value - d / 2,
                "frames_first_best_of_k": value + 1 + d / 2, "frames_second_best_of_k": value + 1 - d / 2,
                "wall_s": 400.0})
    rows.append(rows[0] | {"replicate": 5, "seed": 6, "state": "failed"})
    pd.DataFrame(rows, columns=reports.RUN_COLUMNS).to_csv(path, index=False)


def test_the_docs_page_states_the_corrected_verdicts(tmp_path):
    table, page = tmp_path / "runs.csv", tmp_path / "reports.md"
    _write_runs(table)
    assert reports.main(["--docs", str(page), "--csv", str(table)]) == 0
    text = page.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("<!-- Generated by `.venv/bin/python benchmarks/reports.py --docs` from runs.csv")
    for metric in ("val PSNR", "best of K"):
        assert f"### Teacher forcing, data seed 0, {metric}: TF3 > TF1 holds after Holm's correction; 1 other not resolved" in lines
        assert (f"### KL annealing, data seed 0, {metric}: KL3 >= KL2, KL3 > KL5, KL3 > KL4, KL3 > KL1p and KL3 > KL2p "
                "hold after Holm's correction; KL2 > KL3 is contradicted after Holm's correction; 6 others not "
                "resolved") in lines
        assert f"### N_dim, data seed 0, {metric}: N_dim=32 >= N_dim=12 is contradicted after Holm's correction" in lines
        assert (f"### Every pair of KL annealing configurations (Tukey HSD), data seed 0, {metric}: KL3 > KL1, "
                "KL3 > KL2, KL3 > KL4, KL3 > KL5, KL3 > KL1p and KL3 > KL2p at Tukey's 5% family-wise level") in lines
        assert (f"### The rollout's decline (report 001), {metric}: PSNR falls along the rollout in TF1 (data seed 0) "
                "after Holm's correction; PSNR rises along the rollout in TF3 (data seed 0) after Holm's correction; "
                "9 others not resolved") in lines
    assert "  - report 001, cyclical best: KL1 > KL2 > KL3 > KL4: **contradicted**." in lines
    assert "  - report 000, no annealing at least as good as monotonic: KL3 >= KL2: **holds**." in lines
    assert ("  - Where the reports disagree: report 000's view (no annealing at least as good as monotonic: KL3 >= "
            "KL2 and hybrid worst of all: KL1, KL2, KL3, KL4 > KL5) is not shown either way; report 001's view "
            "(cyclical best: KL1 > KL2 > KL3 > KL4) is contradicted.") in lines
    assert "| N_dim | 0 | N_dim=12 | 5 (TF3's runs) | 35.00 ± 0.47 | +12.90 ± 0.47 | 36.00 ± 0.47 |" in text
    assert "Left out, not complete: teacher_forcing TF1 data seed 0 replicate 5 (failed)." in text
    assert "## What it shows" in lines and "## How to read it" in lines  # README and cli.md link #what-it-shows
    assert "| this benchmark: ending on beta 1 helps: KL1p > KL1, KL2p > KL2 | KL1p > KL1 | +0.00 |" in text
    assert "| Teacher forcing | 0 | TF1 | 5 | +2.00 | 98.33%: +1.87 to +2.13 | <0.001 | <0.001 | falls |" in text


def test_configurations_under_copy_first_are_named_and_their_contrasts_flagged(tmp_path):
    """Science first: a configuration whose runs do not beat copying the first frame learned nothing; the page
    counts the runs that do and marks every contrast that involves one that does not."""
    table, page = tmp_path / "runs.csv", tmp_path / "reports.md"
    _write_runs(table)
    runs = pd.read_csv(table)
    runs.loc[(runs.sweep == "teacher_forcing") & (runs.config == "TF2"), "val_psnr_copy_first"] = 45.0
    runs.to_csv(table, index=False)
    assert reports.main(["--docs", str(page), "--csv", str(table)]) == 0
    text = page.read_text()
    assert "of them beat it at their last epoch (val PSNR)" in text
    assert "Under copying the first frame on average, so learned nothing: TF2." in text
    assert "| TF1 > TF2 |" in text and "(under copy-first: compares nothing) |" in text
    assert "| TF3 > TF1 | +5.00 |" in text
    tf3_tf1 = next(line for line in text.splitlines() if "| TF3 > TF1 |" in line)
    assert "compares nothing" not in tf3_tf1
