"""The loaders: local records, the Optuna study and W&B offline folders agree on the same runs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cvae.analysis.load import AnalysisError, load_local, load_optuna, load_wandb_offline
from cvae.core.records import METRIC_COLUMNS, CsvLog, write_config

from cvae.schema import EVAL_COLUMNS, FRAME_COLUMNS, TRIAL_COLUMNS


@pytest.fixture(scope="module")
def three(sweep_records):
    return (load_local(sweep_records.runs), load_optuna(sweep_records.storage, sweep_records.study),
            load_wandb_offline(sweep_records.wandb_dir))


def test_local_records_give_tidy_tables(sweep_records):
    data = load_local(sweep_records.runs)
    assert data.name == "fixture" and data.metric == "val/psnr" and data.goal == "maximize"
    assert data.params == ["tf", "kl_anneal_type"]
    runs = data.runs
    assert list(runs.run) == [f"t{i:04d}" for i in range(8)]
    assert set(runs.state) == {"complete"}
    assert sorted(runs.label.unique()) == ["TF1, kl_anneal_type=cyclical", "TF1, kl_anneal_type=none",
                                           "TF3, kl_anneal_type=cyclical", "TF3, kl_anneal_type=none"]
    assert runs.groupby("label").replicate.apply(sorted).tolist() == [[0, 1]] * 4
    assert (runs.groupby("label").config_id.nunique() == 1).all()
    tf1 = runs[runs.tf == "TF1"].iloc[0]
    assert (tf1.tfr, tf1.tfr_sde, tf1.tfr_d_step, tf1.N_dim) == (1.0, 0, 0.5, 4)  # resolved config columns
    assert len(data.epochs) == 8 * 3 and {"train_loss", "val_psnr", "beta", "tfr"} <= set(data.epochs.columns)
    assert len(data.frames) == 8 * 3 * 23
    for _, row in runs.iterrows():
        ep = data.epochs[data.epochs.run == row.run]
        assert row.value == pytest.approx(ep.val_psnr.max())


def test_the_three_sources_agree(three):
    local, study, wandb = three
    cols = ["run", "trial", "state", "value", "epochs_done", "replicate", "config_id", "label", "tf", "kl_anneal_type"]
    pd.testing.assert_frame_equal(local.runs[cols], study.runs[cols], check_dtype=False)
    pd.testing.assert_frame_equal(local.runs[cols], wandb.runs[cols], check_dtype=False)
    for other in (study, wandb):
        merged = local.epochs.merge(other.epochs, on=["run", "epoch"], suffixes=("", "_o"))
        assert len(merged) == len(local.epochs)
        assert merged.val_psnr.tolist() == pytest.approx(merged.val_psnr_o.tolist())
    merged = local.epochs.merge(wandb.epochs, on=["run", "epoch"], suffixes=("", "_o"))
    for col in ("train_loss", "beta", "tfr", "lr"):
        assert merged[col].tolist() == pytest.approx(merged[f"{col}_o"].tolist())
    # W&B logs the per-frame table every epoch, as psnr_per_frame.csv has it
    assert local.frames[["run", "epoch", "frame"]].equals(wandb.frames[["run", "epoch", "frame"]])
    assert local.frames.psnr.tolist() == pytest.approx(wandb.frames.psnr.tolist())
    assert study.frames.empty  # Optuna holds no per-frame PSNR


BASELINE_COLS = ["val_psnr_copy_first", "val_psnr_mean_frame", "val_psnr_copy_prev"]


def test_every_source_carries_the_baselines(three, sweep_records):
    """The trivial predictors ride with every PSNR: per epoch in all three sources, per frame where the
    source has frames; every run of the sweep validated on the same video, so they agree."""
    import yaml
    from cvae.core.baselines import video_baselines
    from cvae.core.data import load_split

    dataset = yaml.safe_load(sweep_records.spec.read_text())["base"]["DR"]
    expected = video_baselines(load_split(dataset, "val", (32, 64), workers=1), 24)
    local, study, wandb = three
    for data in three:
        ep = data.epochs
        for col, name in zip(BASELINE_COLS, ("copy_first", "mean_frame", "copy_prev"), strict=True):
            assert ep[col].tolist() == pytest.approx([expected.avg_psnr()[name]] * len(ep)), (data.source, col)
        assert ep.val_psnr_margin.tolist() == pytest.approx((ep.val_psnr - ep.val_psnr_copy_first).tolist())
    for frames in (local.frames, wandb.frames):
        frames = frames[frames.epoch == 2]
        for name in ("copy_first", "mean_frame", "copy_prev"):
            per_run = frames.pivot(index="frame", columns="run", values=name)
            for run in per_run:
                assert per_run[run].tolist() == pytest.approx(getattr(expected, name).psnr_per_frame)



def test_every_source_carries_the_evaluation(three, sweep_records):
    """SSIM, the K samples of z and the diagnostics: per epoch (local, W&B), per run at the epoch of its value
    (all three: trial.json, Optuna's attributes, W&B's history at the best epoch), per frame (local, W&B), per
    latent channel (local, W&B)."""
    local, study, wandb = three
    merged = local.epochs.merge(wandb.epochs, on=["run", "epoch"], suffixes=("", "_o"))
    assert len(merged) == len(local.epochs) == 8 * 3
    for col in EVAL_COLUMNS:
        assert merged[col].notna().all(), col
        assert merged[col].tolist() == pytest.approx(merged[f"{col}_o"].tolist()), col
    assert not set(EVAL_COLUMNS) & set(study.epochs.columns)  # Optuna: per trial only
    best = local.epochs.merge(local.runs[["run", "best_epoch"]], left_on=["run", "epoch"],
                              right_on=["run", "best_epoch"]).set_index("run")
    for data in three:
        runs = data.runs.set_index("run")
        for col in TRIAL_COLUMNS:
            assert runs[col].tolist() == pytest.approx(best.loc[runs.index, col].tolist()), (data.source, col)
    assert set(FRAME_COLUMNS) <= set(local.frames.columns) and set(FRAME_COLUMNS) <= set(wandb.frames.columns)
    for col in FRAME_COLUMNS:
        assert local.frames[col].tolist() == pytest.approx(wandb.frames[col].tolist(), nan_ok=True), col
    for run in local.runs.run:  # the SSIM baselines of baselines.csv ride with the frames
        refs = pd.read_csv(sweep_records.runs / run / "baselines.csv")
        frames = local.frames[(local.frames.run == run) & (local.frames.epoch == 0)]
        for col in ("ssim_copy_first", "ssim_mean_frame", "ssim_copy_prev"):
            assert frames[col].tolist() == pytest.approx(refs[col].tolist()), col
    assert list(local.latents.columns) == ["run", "epoch", "channel", "kl", "mean_var", "active"]
    assert len(local.latents) == 8 * 3 * 4  # runs x epochs x N_dim channels
    pd.testing.assert_frame_equal(local.latents, wandb.latents, check_dtype=False)
    per_epoch = local.latents.groupby(["run", "epoch"]).active.sum().reset_index()
    assert per_epoch.merge(local.epochs, on=["run", "epoch"]).pipe(
        lambda m: (m.active == m.val_active_units).all())
    assert study.latents.empty and list(study.latents.columns) == list(local.latents.columns)


def test_a_plain_train_folder_takes_the_trial_columns_from_its_best_epoch(sweep_records, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(sweep_records.runs / "t0001", folder)
    (folder / "trial.json").unlink()  # as `cvae train` leaves its save_root
    data = load_local(folder)
    (row,) = data.runs.to_dict("records")
    ep = data.epochs.set_index("epoch")
    assert row["best_epoch"] == ep.val_psnr.idxmax()
    for col in TRIAL_COLUMNS:
        assert row[col] == pytest.approx(ep.loc[row["best_epoch"], col]), col
    assert len(data.latents) == 3 * 4 and set(data.latents.run) == {"run"}


def test_wandb_trial_columns_are_those_of_the_best_epoch():
    """define_metric's max summaries are the best over the epochs: the history at the best epoch wins; the summary
    serves where the history lacks a column."""
    from cvae.analysis.load import _wandb_rows

    history = [{"epoch": e, "val/psnr": p, "val/ssim": s, "val/psnr_per_frame": {"path": f"media/t{e}.json"}}
               for e, p, s in ((0, 20.0, 0.3), (1, 22.0, 0.2), (2, 21.0, 0.25))]
    summary = {"best_epoch": 1, "val/psnr": {"max": 22.0}, "val/ssim": {"max": 0.3}, "val/active_units": 2.0,
               "val/psnr_best_of_k": {"max": 23.5}, "state": "complete"}
    tables = {f"media/t{e}.json": {"columns": ["frame", "psnr", "ssim", "psnr_copy_first"],
                                   "data": [[1, 20.0 + e, 0.5, 25.0], [2, 19.0 + e, None, 24.0]]} for e in range(3)}
    row, epochs, frames, latents, _, _ = _wandb_rows("id", {"trial": 3}, summary, history, tables.get)
    assert (row["val_psnr"], row["val_ssim"], row["val_active_units"], row["val_psnr_best_of_k"]) == (
        22.0, 0.2, 2.0, 23.5)
    assert [e["val_ssim"] for e in epochs] == [0.3, 0.2, 0.25]
    assert [(f["epoch"], f["frame"], f["psnr"], f["copy_first"]) for f in frames][-2:] == [(2, 1, 22.0, 25.0),
                                                                                           (2, 2, 21.0, 24.0)]
    assert math.isnan(frames[-1]["ssim"]) and latents == []


def test_older_records_load_without_the_new_columns(tmp_path, capsys):
    """Records written before the evaluation: no SSIM, K samples, diagnostics or latents.csv."""
    from cvae.analysis.figures import applicable_figures
    from cvae.analysis.table import EVAL_MEASURES, config_table

    old_columns = [c for c in METRIC_COLUMNS if c not in EVAL_COLUMNS]
    for i in range(2):
        folder = tmp_path / "runs" / f"t{i:04d}"
        folder.mkdir(parents=True)
        write_config({"num_epoch": 3, "N_dim": 4 + 4 * i}, folder / "config.yaml")
        CsvLog(folder / "metrics.csv", old_columns).append(
            [{c: (e if c == "epoch" else 20.0 + i + e) for c in old_columns} for e in range(3)])
        CsvLog(folder / "psnr_per_frame.csv", ("epoch", "frame", "psnr")).append(
            [{"epoch": e, "frame": f, "psnr": 20.0} for e in range(3) for f in (1, 2)])
        (folder / "trial.json").write_text(json.dumps({
            "trial_number": i, "state": "complete", "params": {"N_dim": 4 + 4 * i}, "value": 22.0 + i,
            "best_epoch": 2, "epochs_done": 3, "replicate": 0, "config_id": f"c{i}", "metric": "val/psnr",
            "goal": "maximize", "val_psnr": 22.0 + i, "val_psnr_copy_first": 22.0 + i}))
    data = load_local(tmp_path / "runs")
    assert capsys.readouterr().err == ""
    assert not set(EVAL_COLUMNS) & (set(data.epochs.columns) | set(data.runs.columns))
    assert list(data.frames.columns) == ["run", "epoch", "frame", "psnr"]
    assert data.latents.empty and list(data.latents.columns) == ["run", "epoch", "channel", "kl", "mean_var", "active"]
    assert not set(EVAL_MEASURES) & set(config_table(data).columns)
    assert "uses" not in applicable_figures(data) and "ndim_psnr" in applicable_figures(data)


def test_partial_runs_are_shown_not_dropped(sweep_records, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(sweep_records.runs, runs)
    # What a killed worker leaves: trial.json still "running", the epochs it finished.
    record = json.loads((runs / "t0005" / "trial.json").read_text())
    record.update(state="running", value=None, finished=None)
    (runs / "t0005" / "trial.json").write_text(json.dumps(record))
    lines = (runs / "t0005" / "metrics.csv").read_text().splitlines()
    (runs / "t0005" / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")
    pruned = json.loads((runs / "t0006" / "trial.json").read_text())
    (runs / "t0006" / "trial.json").write_text(json.dumps({**pruned, "state": "pruned"}))
    data = load_local(runs)
    assert len(data.runs) == 8
    states = dict(zip(data.runs.run, data.runs.state, strict=True))
    assert states["t0005"] == "running" and states["t0006"] == "pruned"
    assert (data.epochs.run == "t0005").sum() == 1


def test_a_plain_cvae_train_folder_is_one_run(sweep_records):
    data = load_local(sweep_records.runs / "t0000")
    assert len(data.runs) == 1 and data.runs.state[0] == "complete"


@pytest.mark.parametrize("make", [
    lambda tmp: load_local(tmp / "nothing"),
    lambda tmp: load_local(tmp),
    lambda tmp: load_optuna(f"sqlite:///{tmp / 'x.db'}", "nope"),
    lambda tmp: load_wandb_offline(tmp),
], ids=["missing-folder", "empty-folder", "missing-study", "no-wandb-runs"])
def test_empty_or_missing_sources_give_a_clear_error(tmp_path, make):
    with pytest.raises(AnalysisError) as info:
        make(tmp_path)
    assert str(tmp_path) in str(info.value) or "nope" in str(info.value)


# -- runs still being written, damaged files -------------------------------------------------------------


def _record_run(root, name: str, epochs: int, value: float) -> Path:
    """A run folder as a sweep trial leaves it: config.yaml, metrics.csv, psnr_per_frame.csv, trial.json."""
    folder = root / name
    folder.mkdir(parents=True)
    write_config({"num_epoch": epochs, "N_dim": 4}, folder / "config.yaml")
    CsvLog(folder / "metrics.csv", METRIC_COLUMNS).append(
        [{c: (e if c == "epoch" else value + e) for c in METRIC_COLUMNS} for e in range(epochs)])
    CsvLog(folder / "psnr_per_frame.csv", ("epoch", "frame", "psnr")).append(
        [{"epoch": e, "frame": f, "psnr": value} for e in range(epochs) for f in (1, 2)])
    record = {"trial_number": int(name[1:]), "state": "complete", "params": {"N_dim": 4}, "value": value + epochs - 1,
              "best_epoch": epochs - 1, "epochs_done": epochs, "duration_s": 1.5, "replicate": 0,
              "config_id": name, "reason": "", "metric": "val/psnr", "goal": "maximize"}
    (folder / "trial.json").write_text(json.dumps(record, indent=2))
    return folder


@pytest.fixture
def written_runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    for i in range(3):
        _record_run(runs, f"t{i:04d}", epochs=3, value=20.0 + i)
    return runs


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("cvae analysis: warning: ")]


def test_a_half_written_trial_json_is_skipped_with_one_warning(written_runs, capsys):
    path = written_runs / "t0001" / "trial.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a run caught writing its record
    data = load_local(written_runs)
    assert list(data.runs.run) == ["t0000", "t0002"]
    assert set(data.epochs.run) == {"t0000", "t0002"}
    err = capsys.readouterr().err
    assert len(_warnings(err)) == 1 and len(err.splitlines()) == 1
    assert re.fullmatch(rf"cvae analysis: warning: skipping {re.escape(str(path))}: not valid JSON \(line \d+ col \d+\): "
                        r"the run may still be writing it", err.strip()), err


@pytest.mark.parametrize("command", ["table", "figures", "report"])
def test_the_analysis_commands_go_on_past_a_half_written_trial_json(written_runs, tmp_path, capsys, command):
    from cvae.cli import main

    path = written_runs / "t0002" / "trial.json"
    path.write_text(path.read_text()[:40])
    out = {"table": [], "figures": ["--out", str(tmp_path / "figs")], "report": ["--out", str(tmp_path / "r.html")]}
    assert main(["analysis", command, "--runs", str(written_runs), *out[command]]) == 0
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1 and f"skipping {path}: not valid JSON (line " in warnings[0], warnings


def test_a_trial_json_that_is_not_an_object_is_skipped(written_runs, capsys):
    (written_runs / "t0000" / "trial.json").write_text("[1, 2]")
    assert list(load_local(written_runs).runs.run) == ["t0001", "t0002"]
    assert _warnings(capsys.readouterr().err) == [
        f"cvae analysis: warning: skipping {written_runs / 't0000' / 'trial.json'}: a list, not a JSON object of the "
        "trial's record"]


def test_when_no_run_can_be_read_the_error_says_so(written_runs, capsys):
    for folder in written_runs.iterdir():
        (folder / "trial.json").write_text("{")
    with pytest.raises(AnalysisError, match=rf"^{re.escape(str(written_runs))}: none of its 3 run\(s\) could be read"):
        load_local(written_runs)
    assert len(_warnings(capsys.readouterr().err)) == 3


WHOLE_ROW = "3," + ",".join(["1.5"] * (len(METRIC_COLUMNS) - 1))


@pytest.mark.parametrize("tail", ["3,20.5,0.1", "3,20.5,0.1\n", WHOLE_ROW, WHOLE_ROW[:-1] + "e"],
                         ids=["cut-mid-row", "short-row", "no-newline", "cut-number"])
def test_a_cut_off_last_metrics_row_is_dropped_with_a_warning_naming_file_and_line(written_runs, capsys, tail):
    path = written_runs / "t0001" / "metrics.csv"
    with path.open("a") as fh:
        fh.write(tail)
    data = load_local(written_runs)
    ep = data.epochs[data.epochs.run == "t0001"]
    assert ep.epoch.tolist() == [0, 1, 2] and ep.val_psnr.tolist() == [21.0, 22.0, 23.0]
    assert data.epochs.epoch.dtype.kind == "i" and data.epochs.val_psnr.dtype.kind == "f"
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"cvae analysis: warning: {path}: skipping line 5: ")
    assert warnings[0].endswith("(a run may still be writing it)")


def test_whole_records_read_exactly(written_runs, capsys):
    """Every value as written (repr of a float reads back bit for bit), ints as ints, an empty field as NaN."""
    CsvLog(written_runs / "t0000" / "metrics.csv", METRIC_COLUMNS).append(
        [{"epoch": 3, "train_loss": 0.1 + 0.2, "val_psnr": math.nan}])
    data = load_local(written_runs)
    ep = data.epochs[data.epochs.run == "t0000"].reset_index(drop=True)
    assert ep.epoch.tolist() == [0, 1, 2, 3] and ep.train_loss[3] == 0.1 + 0.2 and math.isnan(ep.val_psnr[3])
    assert len(data.frames) == 3 * 3 * 2 and data.frames.frame.dtype.kind == "i"
    assert capsys.readouterr().err == ""


def test_a_damaged_run_config_is_skipped_and_a_damaged_spec_is_an_error(written_runs, capsys):
    (written_runs / "t0002" / "config.yaml").write_text("num_epoch: [3\n")
    assert list(load_local(written_runs).runs.run) == ["t0000", "t0001"]
    assert _warnings(capsys.readouterr().err) == [
        f"cvae analysis: warning: skipping {written_runs / 't0002'}: {written_runs / 't0002' / 'config.yaml'}: "
        "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"]
    spec = written_runs / "spec.yaml"
    spec.write_text("a0: &a0 [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)))
    with pytest.raises(AnalysisError) as info:
        load_local(written_runs)
    assert str(info.value) == (f"{spec}: YAML aliases expand to more than 100000 values (an alias bomb?): write the "
                               "values out")


def test_a_damaged_wandb_table_is_an_error_naming_the_file(sweep_records, tmp_path):
    wandb_dir = tmp_path / "wandb"
    shutil.copytree(sweep_records.wandb_dir, wandb_dir, symlinks=True)
    tables = sorted(p for p in wandb_dir.glob("offline-run-*/files/media/table/**/psnr_per_frame*.table.json")
                    if "plot" not in p.name)
    tables[0].write_text(tables[0].read_text()[:30])
    with pytest.raises(AnalysisError) as info:
        load_wandb_offline(wandb_dir)
    assert re.fullmatch(rf"{re.escape(str(tables[0]))}: not valid JSON \(line \d+ col \d+\): .+", str(info.value))


def _plain_training_run(run_id: str, *, group: str | None) -> None:
    """A `cvae train --wandb` run (job_type train) of one epoch in the offline WANDB_DIR."""
    import types

    from cvae.schema import WANDB_KEYS
    from cvae.tracking import WandbRun

    run = WandbRun(project="fixture", entity=None, group=group, name=run_id, run_id=run_id,
                   config={"N_dim": 4, "lr": 0.001}, mode="offline", job_type="train")
    run.log_epoch(types.SimpleNamespace(**{col: 20.0 for col in WANDB_KEYS}, epoch=0, save_root="x",
                                        val_psnr_per_frame=[], val_video=None, is_best=False))
    run.finish(state="complete")


def test_wandb_runs_left_out_are_named_and_plain_trainings_load(sweep_records, wandb_dir, capsys):
    offline = wandb_dir / "wandb"
    shutil.copytree(sweep_records.wandb_dir, offline, symlinks=True)
    _plain_training_run("plain-1", group=None)
    data = load_wandb_offline(offline)  # the sweep's group, the only one: its 8 trials
    assert len(data.runs) == 8 and "plain-1" not in set(data.runs.run)
    warning = capsys.readouterr().err
    assert "1 W&B run(s) left out, not trainings of group fixture: plain-1 (no group, train)" in warning

    for run in offline.glob("offline-run-*"):
        if not run.name.endswith("plain-1"):
            shutil.rmtree(run)
    data = load_wandb_offline(offline)  # no group anywhere: the plain trainings are the runs
    assert list(data.runs.run) == ["plain-1"] and list(data.epochs.val_psnr) == [20.0]
