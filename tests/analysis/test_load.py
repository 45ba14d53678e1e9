"""The loaders: local records, the Optuna study and W&B offline folders agree on the same runs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from analysis.load import AnalysisError, load_local, load_optuna, load_wandb_offline


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
    last = local.frames[local.frames.epoch == 2].reset_index(drop=True)
    assert last[["run", "frame"]].equals(wandb.frames[["run", "frame"]].reset_index(drop=True))
    assert last.psnr.tolist() == pytest.approx(wandb.frames.psnr.tolist())
    assert study.frames.empty  # Optuna holds no per-frame PSNR


BASELINE_COLS = ["val_psnr_copy_first", "val_psnr_mean_frame", "val_psnr_copy_prev"]


def test_every_source_carries_the_baselines(three, sweep_records):
    """The trivial predictors ride with every PSNR: per epoch in all three sources, per frame where the
    source has frames; every run of the sweep validated on the same video, so they agree."""
    import yaml

    from core.baselines import video_baselines
    from core.data import load_split

    dataset = yaml.safe_load(sweep_records.spec.read_text())["base"]["DR"]
    expected = video_baselines(load_split(dataset, "val", (32, 64), workers=1), 24)
    local, study, wandb = three
    for data in three:
        ep = data.epochs
        for col, name in zip(BASELINE_COLS, ("copy_first", "mean_frame", "copy_prev"), strict=True):
            assert ep[col].tolist() == pytest.approx([expected.avg_psnr()[name]] * len(ep)), (data.source, col)
        assert ep.val_psnr_margin.tolist() == pytest.approx((ep.val_psnr - ep.val_psnr_copy_first).tolist())
    last = local.frames[local.frames.epoch == 2].reset_index(drop=True)
    for frames in (last, wandb.frames.reset_index(drop=True)):
        for name in ("copy_first", "mean_frame", "copy_prev"):
            per_run = frames.pivot(index="frame", columns="run", values=name)
            for run in per_run:
                assert per_run[run].tolist() == pytest.approx(getattr(expected, name).psnr_per_frame)



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
