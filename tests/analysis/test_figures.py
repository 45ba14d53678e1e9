"""The figures: each figure's data (the tidy frame :mod:`analysis.figdata` computes and :mod:`analysis.draw`
draws), its caption, the registry, the files, edge cases; a few rendering checks.

Sweeps are built in memory by ``make_data`` with the loaders' schema and known values, so every line of a
figure is checked against the records (as Optuna tests its ``_get_*_info`` helpers); one test renders the real
``runs/quickstart`` records when present.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cvae.analysis import figdata as D
from cvae.analysis import figures as F
from cvae.analysis.load import RUN_COLUMNS, SweepData, load_local
from cvae.analysis.stats import mean_ci, t_interval
from matplotlib.collections import PolyCollection
from PIL import Image
from scipy import stats

REPO = Path(__file__).resolve().parents[2]

KL_SETS = {
    "cyclical": {"kl_anneal_type": "cyclical", "kl_anneal_cycle": 2, "kl_anneal_ratio": 0.5},
    "monotonic": {"kl_anneal_type": "monotonic", "kl_anneal_cycle": 2, "kl_anneal_ratio": 0.5},
    "none": {"kl_anneal_type": "none", "kl_anneal_cycle": 2, "kl_anneal_ratio": 0.5},
}
TF_SETS = {
    "TF1": {"tfr": 1.0, "tfr_sde": 0, "tfr_d_step": 0.25},
    "TF2": {"tfr": 0.5, "tfr_sde": 2, "tfr_d_step": 0.25},
    "TF3": {"tfr": 0.0, "tfr_sde": 0, "tfr_d_step": 0.0},
}
BASE = {"kl_anneal_type": "none", "kl_anneal_cycle": 2, "kl_anneal_ratio": 0.5, "kl_hybrid_switch": 0.5,
        "tfr": 0.0, "tfr_sde": 0, "tfr_d_step": 0.0, "N_dim": 12, "lr": 0.001, "batch_size": 4, "val_samples": 5}
FLAT = set(BASE)  # training keys; other grid names are named choices (tf_schedule -> TF_SETS)


def beta_of(cfg: dict, epoch: int, n_epochs: int) -> float:
    kind = cfg["kl_anneal_type"]
    if kind == "none":
        return 1.0
    if kind == "monotonic":
        return min(1.0, epoch / (n_epochs - 1))
    return (epoch % 2) / 1.0  # cyclical: 0, 1, 0, 1, ...


def tfr_of(cfg: dict, epoch: int) -> float:
    steps = max(0, epoch - cfg["tfr_sde"] + 1) if epoch >= cfg["tfr_sde"] else 0
    return max(0.0, cfg["tfr"] - cfg["tfr_d_step"] * steps)


def val_psnr(c: int, r: int, e: int) -> float:
    return 20.0 + c + 0.5 * e + 0.2 * r


def train_loss(c: int, r: int, e: int) -> float:
    return (c + 1) / (e + 1) + 0.01 * r


def frame_psnr(c: int, r: int, f: int, last: bool) -> float:
    return 30.0 - 0.1 * f + c + 0.2 * r - (0.0 if last else 5.0)


BASELINE_EPOCH = {"val_psnr_copy_first": 21.0, "val_psnr_mean_frame": 22.0, "val_psnr_copy_prev": 37.0}


def baseline_frame(f: int) -> dict[str, float]:
    return {"copy_first": 25.0 - 0.2 * f, "mean_frame": 22.0, "copy_prev": 37.0}


def evaluation(c: int, r: int, e: int) -> dict[str, float]:
    """The evaluation's columns of configuration ``c``, replicate ``r``, epoch ``e`` (:func:`make_data`)."""
    psnr = val_psnr(c, r, e)
    return {"val_ssim": 0.5 + 0.01 * c + 0.02 * e + 0.005 * r, "val_ssim_copy_first": 0.7,
            "val_psnr_mean_of_k": psnr + 0.1, "val_psnr_best_of_k": psnr + 0.5 + 0.1 * c + 0.05 * r,
            "val_psnr_std_of_k": 0.2 + 0.05 * c + 0.01 * r + 0.001 * e, "val_ssim_mean_of_k": 0.5,
            "val_ssim_best_of_k": 0.55, "val_psnr_z0": psnr - 0.3 - 0.1 * r,
            "val_psnr_no_prev": psnr - (2.0 + 0.3 * r if c % 2 else 0.02 * r),
            "val_psnr_swapped_frame": psnr - 1.0 - 0.1 * r - 0.01 * e, "val_kl": 3.0,
            "val_active_units": 0.0 if c == 0 else 3.0 + r}


def make_data(grid: dict[str, list], *, replicates: int = 2, n_epochs: int = 5, n_frames: int = 20,
              states: dict[str, str] | None = None, epochs_done: dict[str, int] | None = None,
              with_frames: bool = True, spec: bool = True, baselines: bool = False, evaluated: bool = False,
              eval_every: int = 1) -> SweepData:
    """A sweep over ``grid`` (in order) x ``replicates``, schema as :mod:`analysis.load` gives it.

    Configuration ``c`` (grid order), replicate ``r``, epoch ``e``: val_psnr = 20 + c + 0.5 e + 0.2 r,
    train_loss = (c + 1) / (e + 1) + 0.01 r, β and tfr from the resolved schedule; the last epoch's frame f has
    PSNR 30 - 0.1 f + c + 0.2 r (earlier epochs 5 dB less). ``states`` / ``epochs_done`` override a run's state
    and how many epochs it recorded (0: none). ``baselines``: every run validated on one video whose copy-first
    frame scores 21 dB (per frame 25 - 0.2 f), mean frame 22 dB, copy-previous 37 dB. ``evaluated``: the
    evaluation of a stochastic predictor (:func:`evaluation`; per frame SSIM 0.8 - 0.01 f + 0.01 c + 0.005 r,
    the best of K 0.8 dB and 0.02 above, copy-first SSIM 0.9 - 0.01 f with ``baselines``), its K samples and
    diagnostics NaN except every ``eval_every`` epochs and at the last.
    """
    states, epochs_done = states or {}, epochs_done or {}
    names = list(grid)
    varying = [n for n in names if len(grid[n]) > 1]
    runs, epochs, frames = [], [], []
    i = 0
    for c, combo in enumerate(itertools.product(*grid.values())):
        params = dict(zip(names, combo, strict=True))
        cfg = dict(BASE, num_epoch=n_epochs)
        for k, v in params.items():
            if k == "tf_schedule":
                cfg.update(TF_SETS[v])
            elif k == "kl_schedule":
                cfg.update(KL_SETS[v])
            else:
                cfg[k] = v
        label = ", ".join(str(params[k]) if k not in FLAT else f"{k}={params[k]}" for k in varying) or "base"
        for r in range(replicates):
            run = f"t{i:04d}"
            n_ep = epochs_done.get(run, n_epochs)
            state = states.get(run, "complete" if n_ep == n_epochs else "pruned")
            values = [val_psnr(c, r, e) for e in range(n_ep)]
            runs.append({**cfg, **params, "run": run, "trial": i, "state": state,
                         "value": max(values) if values else None, "best_epoch": n_ep - 1 if values else None,
                         "epochs_done": n_ep, "duration_s": 10.0 * n_ep, "replicate": r, "config_id": f"cfg{c}",
                         "label": label, "reason": "", "run_dir": None})
            for e in range(n_ep):
                epochs.append({"run": run, "epoch": e, "train_loss": train_loss(c, r, e),
                               "train_mse": 0.9 * train_loss(c, r, e), "train_kl": 1.0, "val_psnr": val_psnr(c, r, e),
                               "val_loss": 0.1, "beta": beta_of(cfg, e, n_epochs), "tfr": tfr_of(cfg, e),
                               "tf_fraction": tfr_of(cfg, e), "lr": 0.001, "frames_per_s": 5.0,
                               **(BASELINE_EPOCH if baselines else {})})
                if baselines:
                    epochs[-1]["val_psnr_margin"] = val_psnr(c, r, e) - 21.0
                if evaluated:
                    full = (e + 1) % eval_every == 0 or e == n_epochs - 1
                    epochs[-1].update({k: v if full or k in ("val_ssim", "val_ssim_copy_first", "val_kl",
                                                             "val_active_units") else np.nan
                                       for k, v in evaluation(c, r, e).items()})
                if with_frames:
                    for f in range(1, n_frames + 1):
                        frames.append({"run": run, "epoch": e, "frame": f,
                                       "psnr": frame_psnr(c, r, f, e == n_ep - 1),
                                       **(baseline_frame(f) if baselines else {})})
                        if evaluated:
                            ssim = 0.8 - 0.01 * f + 0.01 * c + 0.005 * r
                            frames[-1].update(ssim=ssim, psnr_best_of_k=frames[-1]["psnr"] + 0.8,
                                              ssim_best_of_k=ssim + 0.02)
                        if evaluated and baselines:
                            frames[-1].update(ssim_copy_first=0.9 - 0.01 * f, ssim_mean_frame=0.75,
                                              ssim_copy_prev=0.98)
            i += 1
    runs_df = pd.DataFrame(runs)
    assert set(RUN_COLUMNS) <= set(runs_df.columns)
    sets = {"tf_schedule": TF_SETS, "kl_schedule": KL_SETS}
    spec_dict = {"name": "synthetic", "parameters": {
        k: ({"values": v, "sets": {n: sets[k][n] for n in v}} if k in sets else {"values": v})
        for k, v in grid.items()}} if spec else None
    return SweepData(runs=runs_df, epochs=pd.DataFrame(epochs, columns=None if epochs else ["run", "epoch"]),
                     frames=pd.DataFrame(frames, columns=None if frames else ["run", "epoch", "frame", "psnr"]),
                     params=varying, name="synthetic", source="memory", spec=spec_dict)


def empty_data() -> SweepData:
    return SweepData(runs=pd.DataFrame(columns=[*RUN_COLUMNS]), epochs=pd.DataFrame(columns=["run", "epoch"]),
                     frames=pd.DataFrame(columns=["run", "epoch", "frame", "psnr"]), params=[], name="empty")



# -- reading a figure's frame -------------------------------------------------------------------------------------
def metric(df: pd.DataFrame, panel: str = "") -> pd.DataFrame:
    return df[(df["kind"] == "metric") & (df["panel"] == panel)]


def curves(df: pd.DataFrame, panel: str = "") -> dict[str, pd.DataFrame]:
    """Each metric line of a panel as drawn: mean, lo, hi, n per x (indexed by x), in legend order."""
    s = D.summary(df)
    s = s[s["panel"] == panel]
    order = list(dict.fromkeys(metric(df, panel)["line"]))
    return {line: s[s["line"] == line].set_index(df.attrs["x"]) for line in order}


def means(df: pd.DataFrame, panel: str = "") -> dict[str, np.ndarray]:
    return {line: c["mean"].to_numpy() for line, c in curves(df, panel).items()}


def schedule(df: pd.DataFrame, panel: str) -> dict[str, np.ndarray]:
    rows = df[(df["kind"] == "schedule") & (df["panel"] == panel)]
    return {line: g.groupby("epoch")["value"].mean().to_numpy() for line, g in rows.groupby("line", sort=False)}


def baselines(df: pd.DataFrame, panel: str = "") -> dict[str, pd.DataFrame]:
    rows = df[(df["kind"] == "baseline") & (df["panel"] == panel)]
    return {name: g for name, g in rows.groupby("group")}


def t_half(values) -> float:
    values = np.asarray(values, dtype=float)
    return stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)


@pytest.fixture(scope="module")
def kl_data():
    return make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]})


@pytest.fixture(scope="module")
def tf_data():
    return make_data({"tf_schedule": ["TF1", "TF2", "TF3"], "N_dim": [12, 32]})


# -- the interval -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[1.0, 2.0], [20.0, 20.2, 19.7], [5.0, 9.0, 1.0, 3.5, 7.25]])
def test_t_interval_is_scipys_student_t_interval_of_the_mean(values):
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx((low, high), rel=1e-12)
    mean, half = mean_ci(values)
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-12)
    assert t_interval([*values, np.nan, None]) == pytest.approx((low, high), rel=1e-12)  # missing values left out


def test_one_value_has_no_interval():
    assert all(np.isnan(t_interval([3.0]))) and all(np.isnan(t_interval([])))
    assert mean_ci([3.0])[0] == 3.0 and np.isnan(mean_ci([3.0])[1])
    from cvae.analysis.table import mean_ci as table_mean_ci

    assert table_mean_ci is mean_ci  # the table and the figures share the one interval


DATA = {
    "tfr_loss": D.tfr_loss, "tfr_psnr": D.tfr_psnr, "kl_beta_psnr": D.kl_beta_psnr, "kl_psnr": D.kl_psnr,
    "kl_loss": D.kl_loss, "psnr_per_frame": D.psnr_per_frame, "ndim_psnr": D.ndim_psnr, "uses": D.uses,
    "optimization_history": D.optimization_history, "param_importances": D.param_importances_data,
    "parallel_coordinates": D.parallel_coordinates,
}
"""Each figure's tidy-frame function (analysis/figdata.py), by the figure's name."""


# -- the registry and applicability -----------------------------------------------------------------------------
def test_registry_lists_every_figure_in_order():
    assert list(F.FIGURES) == ["tfr_loss", "tfr_psnr", "kl_beta_psnr", "kl_psnr", "kl_loss", "psnr_per_frame",
                               "ndim_psnr", "uses", "optimization_history", "param_importances",
                               "parallel_coordinates"]
    assert list(DATA) == list(F.FIGURES)
    assert all(callable(ok) and callable(render) for ok, render in F.FIGURES.values())


def test_applicability_follows_what_varies(kl_data, tf_data):
    assert F.applicable_figures(kl_data) == ["kl_beta_psnr", "kl_psnr", "kl_loss", "psnr_per_frame",
                                             "optimization_history", "parallel_coordinates"]
    # one swept parameter: its importance would be 1 by definition
    assert F.param_importances(kl_data) == {} and "only kl_anneal_type varies" in F.param_importances(kl_data).reason
    assert F.applicable_figures(tf_data) == ["tfr_loss", "tfr_psnr", "psnr_per_frame", "ndim_psnr",
                                             "optimization_history", "param_importances", "parallel_coordinates"]
    no_frames = make_data({"N_dim": [12, 32]}, with_frames=False)
    assert "psnr_per_frame" not in F.applicable_figures(no_frames)
    assert "ndim_psnr" in F.applicable_figures(no_frames)
    assert "ndim_psnr" not in F.applicable_figures(kl_data)  # N_dim does not vary
    # resolved TF columns alone (no named choice) make a TF sweep
    assert "tfr_loss" in F.applicable_figures(make_data({"tfr": [1.0, 0.0]}))


def test_optuna_like_source_lacks_the_schedules():
    """Optuna gives the swept params and the metric per epoch only: no β, no loss, no frames."""
    full = make_data({"kl_anneal_type": ["cyclical", "none"]})
    data = SweepData(runs=full.runs[[*RUN_COLUMNS, "kl_anneal_type"]], epochs=full.epochs[["run", "epoch", "val_psnr"]],
                     frames=pd.DataFrame(columns=["run", "epoch", "frame", "psnr"]), params=["kl_anneal_type"])
    names = F.applicable_figures(data)
    assert "kl_psnr" in names
    assert not {"kl_beta_psnr", "kl_loss", "psnr_per_frame", "tfr_loss"} & set(names)
    # asked for anyway: the PSNR without its schedule, or a figure that says what is missing; no traceback
    df = D.kl_beta_psnr(data)
    assert set(df["kind"]) == {"metric"} and "No per-epoch beta in this source" in df.attrs["caption"]
    for frame in (D.kl_loss(data), D.psnr_per_frame(data)):
        assert frame.empty and frame.attrs["layout"] == "message"
    assert D.kl_loss(data).attrs["message"] == "no training loss per epoch in this source"
    assert "records no per-epoch train_loss" in D.kl_loss(data).attrs["caption"]
    assert F.render_kl_loss(data).fig.axes[0].texts[0].get_text() == "no training loss per epoch in this source"


def test_named_choice_without_resolved_columns_is_recognised_by_name():
    full = make_data({"tf_schedule": ["TF1", "TF3"]}, spec=False)
    data = SweepData(runs=full.runs[[*RUN_COLUMNS, "tf_schedule"]], epochs=full.epochs, frames=full.frames,
                     params=["tf_schedule"])
    assert "tfr_psnr" in F.applicable_figures(data)
    df = D.tfr_psnr(data)
    assert df.attrs["panels"] == ["TF1", "TF3"] and list(dict.fromkeys(metric(df, "TF1")["run"])) == ["t0000", "t0001"]


# -- teacher forcing -----------------------------------------------------------------------------------------------
def test_tfr_loss_one_panel_per_tf_configuration_with_its_schedule(tf_data):
    df = D.tfr_loss(tf_data)
    assert df.attrs["name"] == "tfr_loss" and df.attrs["layout"] == "panels"
    assert df.attrs["panels"] == ["TF1", "TF2", "TF3"]
    assert (df.attrs["xlabel"], df.attrs["ylabel"], df.attrs["twin_label"]) == ("epoch", "training loss",
                                                                                 "teacher-forcing ratio")
    for c0, tf in enumerate(["TF1", "TF2", "TF3"]):
        got = curves(df, tf)
        assert list(got) == ["N_dim=12", "N_dim=32"]
        for k, nd in enumerate((12, 32)):
            c = 2 * c0 + k
            per_epoch = [[train_loss(c, r, e) for r in range(2)] for e in range(5)]
            line = got[f"N_dim={nd}"]
            np.testing.assert_allclose(line["mean"], np.mean(per_epoch, axis=1))
            np.testing.assert_allclose(line["hi"] - line["mean"], [t_half(v) for v in per_epoch])
            assert (line["n"] == 2).all()
        # the runs share the schedule: one grey line per panel
        (line,) = schedule(df, tf).items()
        assert line[0] == "teacher-forcing ratio"
        np.testing.assert_allclose(line[1], [tfr_of(TF_SETS[tf], e) for e in range(5)])
    assert not df["dashed"].any() and set(df["state"]) == {"complete"}
    caption = df.attrs["caption"]
    assert caption.startswith("Training loss (left axis) and teacher-forcing ratio (right axis, grey) per epoch, "
                              "one panel per teacher-forcing configuration (3 configurations).")
    assert "TF1: tfr=1.0, sde=0, step=0.25" in caption and "Runs t0000-t0011." in caption
    assert df.attrs["runs"] == [f"t{i:04d}" for i in range(12)]


def test_tfr_psnr_titles_from_resolved_settings():
    df = D.tfr_psnr(make_data({"tfr": [1.0, 0.0]}, replicates=1))
    assert df.attrs["panels"] == ["tfr=1.0, sde=0, step=0.0", "tfr=0.0, sde=0, step=0.0"]
    assert df.attrs["ylabel"] == "validation PSNR (dB)"
    for c, panel in enumerate(df.attrs["panels"]):
        (line,) = curves(df, panel).values()
        np.testing.assert_allclose(line["mean"], [val_psnr(c, 0, e) for e in range(5)])
        assert (line["n"] == 1).all() and line[["lo", "hi"]].isna().all().all()  # one replicate: no band
        assert list(schedule(df, panel)) == ["teacher-forcing ratio"]


def test_panels_with_different_schedules_draw_one_each():
    """N_dim within a panel changes nothing about the schedule; a panel pooling two schedules shows both."""
    data = make_data({"tfr": [1.0, 0.0], "N_dim": [12, 32]}, replicates=1)
    data.epochs.loc[data.epochs.run == "t0001", "tfr"] = 0.5  # tfr=1.0, N_dim=32 follows another schedule
    df = D.tfr_loss(data)
    assert list(schedule(df, "tfr=1.0, sde=0, step=0.0")) == ["teacher-forcing ratio (N_dim=12)",
                                                                "teacher-forcing ratio (N_dim=32)"]
    assert list(schedule(df, "tfr=0.0, sde=0, step=0.0")) == ["teacher-forcing ratio"]
    assert "one dash-dotted curve each" in df.attrs["caption"]


# -- KL annealing ------------------------------------------------------------------------------------------------
def test_kl_beta_psnr_panels_show_beta_on_a_twin_axis(kl_data):
    df = D.kl_beta_psnr(kl_data)
    assert df.attrs["panels"] == ["cyclical", "monotonic", "none"] and df.attrs["twin_label"] == "β (KL weight)"
    for c, kind in enumerate(KL_SETS):
        (psnr,) = means(df, kind).values()
        np.testing.assert_allclose(psnr, [val_psnr(c, 0, e) + 0.1 for e in range(5)])
        (beta,) = schedule(df, kind).items()
        assert beta[0] == "β (KL weight)"
        np.testing.assert_allclose(beta[1], [beta_of(KL_SETS[kind], e, 5) for e in range(5)])


def test_kl_psnr_lines_are_replicate_means_with_t_intervals(kl_data):
    df = D.kl_psnr(kl_data)
    assert df.attrs["layout"] == "lines" and df.attrs["ylabel"] == "validation PSNR (dB)"
    got = curves(df)
    assert list(got) == ["cyclical", "monotonic", "none"]
    for c, line in enumerate(got.values()):
        for e in range(5):
            replicates = [val_psnr(c, r, e) for r in range(2)]
            low, high = stats.t.interval(0.95, 1, loc=np.mean(replicates), scale=stats.sem(replicates))
            assert (line.loc[e, "mean"], line.loc[e, "lo"], line.loc[e, "hi"]) == pytest.approx(
                (np.mean(replicates), low, high), rel=1e-9)
    # sd of (x, x + 0.2) is 0.2 / sqrt(2): half-width t(0.975, 1) * 0.1
    assert got["cyclical"].loc[4, "hi"] == pytest.approx(val_psnr(0, 0, 4) + 0.1 + 12.706204736 * 0.1)
    assert df.attrs["caption"].startswith("Validation PSNR per epoch, one line per KL annealing configuration "
                                          "(3 configurations, 2 replicates each; shaded: 95% CI of the mean).")
    assert "Runs t0000-t0005." in df.attrs["caption"]
    single = D.kl_psnr(make_data({"kl_anneal_type": ["cyclical", "none"]}, replicates=1))
    assert D.summary(single)[["lo", "hi"]].isna().all().all()
    assert "1 run each)." in single.attrs["caption"] and "shaded" not in single.attrs["caption"]


@pytest.mark.parametrize("compute", [D.kl_psnr, D.kl_beta_psnr, D.optimization_history],
                         ids=["kl_psnr", "kl_beta_psnr", "optimization_history"])
def test_psnr_figures_carry_the_baselines_as_reference_lines(compute):
    df = compute(make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]}, baselines=True))
    for panel in df.attrs["panels"]:
        refs = baselines(df, panel)
        assert set(refs) == {"copy_first", "mean_frame"}  # copy_prev (an oracle) only in the caption
        assert refs["copy_first"]["value"].tolist() == [21.0] and refs["mean_frame"]["value"].tolist() == [22.0]
        assert refs["copy_first"][df.attrs["x"]].isna().all()  # a horizontal line
        assert refs["copy_first"]["line"].tolist() == ["copy first frame: 21.00 dB"]
        if df.attrs["ylim"]:
            low, high = df.attrs["ylim"]
            assert low < 21.0 < 22.0 < high  # on the axes, not cut off
    assert ("Grey reference lines: the trivial predictors on the same validation clips, copy first frame "
            "(21.00 dB) and mean frame (oracle) (22.00 dB); copying the previous ground-truth frame, an oracle a "
            "rollout cannot use, scores 37.00 dB.") in df.attrs["caption"]
    plain = compute(make_data({"kl_anneal_type": ["cyclical", "none"]}))  # records without baselines
    assert "baseline" not in set(plain["kind"]) and "reference" not in plain.attrs["caption"]


def test_psnr_per_frame_carries_the_baselines_per_frame():
    df = D.psnr_per_frame(make_data({"kl_anneal_type": ["cyclical", "none"]}, baselines=True))
    refs = baselines(df)
    np.testing.assert_allclose(refs["copy_first"]["value"], [25.0 - 0.2 * f for f in range(1, 21)])
    np.testing.assert_allclose(refs["mean_frame"]["value"], [22.0] * 20)
    assert set(refs["copy_first"]["line"]) == {"copy first frame: 22.90 dB average PSNR"}
    assert "copy first frame (22.90 dB)" in df.attrs["caption"]


def test_kl_loss_uses_a_log_scale_when_losses_span_decades():
    data = make_data({"kl_anneal_type": ["cyclical", "none"]})
    assert D.kl_loss(data).attrs["log"] is False
    data.epochs.loc[data.epochs.run.isin(["t0000", "t0001"]), "train_loss"] *= 1000  # β·KL dwarfs the MSE
    df = D.kl_loss(data)
    assert df.attrs["log"] is True and "Log y-scale" in df.attrs["caption"]
    assert df.attrs["ylabel"] == "training loss"
    assert F.render_kl_loss(data).fig.axes[0].get_yscale() == "log"


def test_kl_named_choice_panels_use_the_label():
    data = make_data({"kl_schedule": ["cyclical", "none"]}, replicates=1)
    data.runs["kl_schedule"] = data.runs["kl_schedule"].map({"cyclical": "KL1", "none": "KL3"})
    data.runs["label"] = data.runs["kl_schedule"]
    data.spec = {"parameters": {"kl_schedule": {"values": ["KL1", "KL3"],
                                                "sets": {"KL1": KL_SETS["cyclical"], "KL3": KL_SETS["none"]}}}}
    assert D.kl_beta_psnr(data).attrs["panels"] == ["KL1", "KL3"]
    assert list(means(D.kl_psnr(data))) == ["KL1", "KL3"]
    assert "Configurations: KL1: cyclical; KL3: none." in D.kl_beta_psnr(data).attrs["caption"]


# -- per frame, N_dim, compare ----------------------------------------------------------------------------------
def test_psnr_per_frame_uses_the_last_epoch_and_reports_averages(kl_data):
    df = D.psnr_per_frame(kl_data)
    assert (df.attrs["x"], df.attrs["xlabel"], df.attrs["ylabel"]) == ("frame", "frame", "PSNR (dB)")
    frames = np.arange(1, 21)
    expected = []
    got = means(df)
    for c, kind in enumerate(["cyclical", "monotonic", "none"]):
        curve = np.mean([[frame_psnr(c, r, f, True) for f in frames] for r in range(2)], axis=0)
        expected.append(f"kl_anneal_type={kind}: {curve.mean():.2f} dB average PSNR")
        np.testing.assert_allclose(got[expected[-1]], curve)
    assert list(got) == expected and expected[0] == "kl_anneal_type=cyclical: 29.05 dB average PSNR"
    assert "20 predicted frames" in df.attrs["caption"] and "(epoch 4)" in df.attrs["caption"]


def test_ndim_psnr_one_line_per_value_in_numeric_order():
    df = D.ndim_psnr(make_data({"N_dim": [32, 12]}))  # grid order 32 first: lines still go 12, 32
    got = means(df)
    assert list(got) == ["N_dim=12", "N_dim=32"]
    np.testing.assert_allclose(got["N_dim=32"], [val_psnr(0, 0, e) + 0.1 for e in range(5)])
    np.testing.assert_allclose(got["N_dim=12"], [val_psnr(1, 0, e) + 0.1 for e in range(5)])


def test_compare_pools_runs_sharing_a_value(tf_data):
    df = D.compare(tf_data, "N_dim", "train_loss")
    assert df.attrs["name"] == "compare_N_dim_train_loss" and df.attrs["title"] == "Training loss per epoch by N_dim"
    line = curves(df)["N_dim=12"]
    pooled = [[train_loss(c, r, e) for c in (0, 2, 4) for r in range(2)] for e in range(5)]
    np.testing.assert_allclose(line["mean"], np.mean(pooled, axis=1))
    np.testing.assert_allclose(line["hi"] - line["mean"], [t_half(v) for v in pooled])
    assert (line["n"] == 6).all() and "6 runs each, pooled over tf_schedule" in df.attrs["caption"]
    assert F.render_compare(tf_data, "N_dim", "train_loss").name == "compare_N_dim_train_loss"
    with pytest.raises(ValueError, match=r"unknown parameter 'nope'.*swept parameters: tf_schedule, N_dim"):
        F.render_compare(tf_data, "nope", "val_psnr")
    with pytest.raises(ValueError, match=r"unknown metric 'psnr'.*valid metrics: .*val_psnr"):
        F.render_compare(tf_data, "N_dim", "psnr")


# -- partial runs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def partial_data():
    # t0001 (cyclical, replicate 1) pruned after 2 epochs; both monotonic runs pruned; t0005 waiting, no epochs
    return make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]},
                     epochs_done={"t0001": 2, "t0002": 3, "t0003": 3, "t0005": 0}, states={"t0005": "waiting"})


def test_partial_runs_are_dashed_and_named_in_the_legend(partial_data):
    df = D.kl_psnr(partial_data)
    dashed = metric(df).groupby("line", sort=False)["dashed"].agg(lambda d: set(d))
    assert dashed.to_dict() == {"cyclical (1 of 2 pruned)": {True}, "monotonic (pruned)": {True}, "none": {False}}
    assert metric(df).groupby("run")["state"].first().to_dict() == {
        "t0000": "complete", "t0001": "pruned", "t0002": "pruned", "t0003": "pruned", "t0004": "complete"}
    # the mean uses the runs that reached each epoch; the band only where two did
    line = curves(df)["cyclical (1 of 2 pruned)"]
    np.testing.assert_allclose(line["mean"], [val_psnr(0, 0, 0) + 0.1, val_psnr(0, 0, 1) + 0.1,
                                              *(val_psnr(0, 0, e) for e in (2, 3, 4))])
    assert line["n"].tolist() == [2, 2, 1, 1, 1] and line["hi"].isna().tolist() == [False, False, True, True, True]
    assert "t0005 (waiting)" in df.attrs["caption"] and "t0005" not in df.attrs["runs"]
    per_frame = D.psnr_per_frame(partial_data)
    assert any(t.startswith("kl_anneal_type=monotonic (pruned): ") for t in set(per_frame["line"]))


# -- sweep-level ------------------------------------------------------------------------------------------------
def test_optimization_history_and_best_so_far(tf_data, partial_data):
    df = D.optimization_history(tf_data)
    assert (df.attrs["xlabel"], df.attrs["ylabel"]) == ("trial number", "validation PSNR (dB)")
    values = tf_data.runs.value.to_numpy()
    points = df[df["line"] == "complete run"]
    np.testing.assert_allclose(points["value"], values)
    np.testing.assert_allclose(points["trial"], range(12))
    np.testing.assert_allclose(df.loc[df["kind"] == "best", "value"], np.maximum.accumulate(values))
    assert "Best: 27.2 (t0011, TF3, N_dim=32)." in df.attrs["caption"]
    partial = D.optimization_history(partial_data)
    crosses = partial[partial["line"] == "pruned run"]
    assert crosses["run"].tolist() == ["t0001", "t0002", "t0003"] and crosses["dashed"].all()
    assert "crosses: runs that did not complete" in partial.attrs["caption"]
    assert partial.loc[partial["kind"] == "best", "trial"].tolist() == [0.0, 4.0]  # complete runs only


def test_param_importances_from_an_in_memory_study(tf_data):
    imp = F.param_importances(tf_data)
    assert set(imp) == {"tf_schedule", "N_dim"} and sum(imp.values()) == pytest.approx(1.0)
    assert list(imp.values()) == sorted(imp.values(), reverse=True) and imp.n_runs == 12
    assert imp.method.startswith("PED-ANOVA") or imp.method.startswith("fANOVA")
    df = D.param_importances_data(tf_data)
    assert df["param"].tolist() == list(imp) and df["importance"].tolist() == pytest.approx(list(imp.values()))
    assert df.attrs["xlabel"].startswith("importance (") and "from 12 complete runs" in df.attrs["caption"]
    few = make_data({"tf_schedule": ["TF1", "TF2"], "N_dim": [12]}, replicates=1)
    assert F.param_importances(few) == {} and "need at least" in F.param_importances(few).reason
    shown = D.importances_frame(F.Importances(reason="only N_dim varies"), metric="val/psnr")
    assert shown.attrs["message"] == "no importances: only N_dim varies"
    fig = F.render_param_importances(imp, metric="val/psnr").fig
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(imp)  # most important on top


def test_parallel_coordinates_one_line_per_run(tf_data):
    df = D.parallel_coordinates(tf_data)
    runs = df[df["kind"] == "run"]
    assert df.attrs["axes"] == ["tf_schedule", "N_dim", "val/psnr"]
    assert sorted(set(runs["run"])) == list(tf_data.runs.run) and runs.groupby("run").size().eq(3).all()
    pos = runs.pivot(index="run", columns="axis", values="position")
    # categorical axis: TF1, TF2, TF3 at 0, 0.5, 1; N_dim 12 and 32 at its ends (a tick at each value); the
    # metric (22 to 27.2 dB) on a linear axis between the round ticks around it, 22 and 28 dB
    assert pos.loc[["t0000", "t0004", "t0008"], "tf_schedule"].tolist() == [0.0, 0.5, 1.0]
    assert pos.loc[["t0000", "t0002"], "N_dim"].tolist() == [0.0, 1.0]
    assert pos["val/psnr"].min() == 0.0 and pos["val/psnr"].max() == pytest.approx(5.2 / 6)
    ticks = df[df["kind"] == "tick"]
    assert ticks[ticks["axis"] == "tf_schedule"]["text"].tolist() == ["TF1", "TF2", "TF3"]
    assert ticks[ticks["axis"] == "N_dim"]["text"].tolist() == ["12", "32"]
    metric_ticks = ticks[ticks["axis"] == "val/psnr"]
    assert metric_ticks["text"].tolist() == ["22", "24", "26", "28"]
    assert metric_ticks["position"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert df.attrs["scales"] == {"tf_schedule": "categorical", "N_dim": "linear", "val/psnr": "linear"}
    assert df.attrs["norm"] == ("linear", 22.0, pytest.approx(27.2))
    assert not runs["dashed"].any() and "12 complete runs" in df.attrs["caption"]


# -- edge cases ------------------------------------------------------------------------------------------------
def test_empty_sweep_gives_no_runs_frames_and_figures(tmp_path):
    data = empty_data()
    assert F.applicable_figures(data) == []
    for name, compute in DATA.items():
        df = compute(data)
        assert df.empty and df.attrs["message"] == "no runs" and df.attrs["name"] == name, name
    with pytest.warns(UserWarning, match="no runs"):
        ((result, png, _),) = F.render_all(data, tmp_path)
    assert result.name == "no_runs" and result.data.attrs["message"] == "no runs" and png.is_file()


def test_one_run_draws_lines_without_bands():
    data = make_data({"kl_anneal_type": ["cyclical"]}, replicates=1)
    for compute in (D.kl_psnr, D.kl_loss, D.psnr_per_frame, D.ndim_psnr):
        df = compute(data)
        if df.attrs["layout"] == "message":
            continue
        s = D.summary(df)
        assert len(s) and (s["n"] == 1).all() and s[["lo", "hi"]].isna().all().all()
    assert D.optimization_history(data).attrs["runs"] == ["t0000"]
    assert D.parallel_coordinates(data).attrs["message"] == "no swept parameter varies"


def test_missing_columns_give_a_message_not_a_traceback():
    data = make_data({"kl_anneal_type": ["cyclical", "none"]}, with_frames=False)
    data.epochs = data.epochs.drop(columns=["val_psnr", "beta"])
    assert D.kl_psnr(data).attrs["message"] == "no validation PSNR (dB) per epoch in this source"
    assert D.psnr_per_frame(data).attrs["message"] == "no per-frame PSNR in this source"
    no_ndim = make_data({"kl_anneal_type": ["cyclical", "none"]})
    no_ndim.runs = no_ndim.runs.drop(columns=["N_dim"])
    assert D.ndim_psnr(no_ndim).attrs["message"] == "N_dim is not known for these runs"
    no_values = make_data({"kl_anneal_type": ["cyclical", "none"]})
    no_values.runs["value"] = np.nan
    assert D.parallel_coordinates(no_values).attrs["message"] == "no run has a metric value"


def test_wide_intervals_are_cut_at_the_runs_range():
    """Two diverging seeds: t(0.975, 1) = 12.7 would flatten every line; the axes keep the runs' range."""
    data = make_data({"kl_anneal_type": ["cyclical", "none"]})
    data.epochs.loc[data.epochs.run == "t0001", "val_psnr"] -= 10.0
    df = D.kl_psnr(data)
    low, high = df.attrs["ylim"]
    values = data.epochs.val_psnr
    assert low >= values.min() - 0.1 * np.ptp(values) and high <= values.max() + 0.1 * np.ptp(values)
    assert D.summary(df)["lo"].min() < low  # the band reaches beyond: cut at the axes
    assert "cut at the axes" in df.attrs["caption"]
    single = make_data({"kl_anneal_type": ["cyclical", "none"]}, replicates=1)
    assert "cut at the axes" not in D.kl_psnr(single).attrs["caption"]


def test_colors_are_stable_per_configuration(kl_data):
    def colors(df):
        return metric(df).groupby("group", sort=False)["color"].agg(set).to_dict()

    psnr = colors(D.kl_psnr(kl_data))
    frames = {k.removeprefix("kl_anneal_type="): v for k, v in colors(D.psnr_per_frame(kl_data)).items()}
    assert psnr == frames and all(len(v) == 1 for v in psnr.values()) and len(set.union(*psnr.values())) == 3
    assert F.palette(["N_dim=12", "N_dim=4"]) == F.palette(["N_dim=4", "N_dim=12"])
    assert list(F.palette(["N_dim=12", "N_dim=4"])) == ["N_dim=4", "N_dim=12"]


# -- the evaluation of a stochastic predictor: table, "uses", SSIM per frame, best of K ---------------------------
EVAL_GRID = {"kl_anneal_type": ["cyclical", "none"], "N_dim": [4, 12]}
EVAL_LABELS = ["kl_anneal_type=cyclical, N_dim=4", "kl_anneal_type=cyclical, N_dim=12",
               "kl_anneal_type=none, N_dim=4", "kl_anneal_type=none, N_dim=12"]


@pytest.fixture
def evaluated():
    """4 configurations x 2 replicates, 5 epochs; the K samples and diagnostics every second epoch and at the
    last (epochs 1, 3, 4), and the best validation PSNR at epoch 2, an epoch that skipped them."""
    data = make_data(EVAL_GRID, baselines=True, evaluated=True, eval_every=2)
    at2 = data.epochs.epoch == 2
    data.epochs.loc[at2, "val_psnr"] += 20.0
    return data


def test_table_has_the_evaluation_of_one_epoch_per_run(evaluated):
    """Every measure of a run from one epoch: its best among the epochs that ran the full evaluation (4), even
    SSIM and active units, measured every epoch and best at epoch 2 (one row mixing epochs could put a best of
    K under the mean of another epoch); each change against the normal rollout of that same epoch."""
    from cvae.analysis.table import config_table

    table = config_table(evaluated).set_index("configuration")
    assert table.columns.get_loc("margin_ci95") < table.columns.get_loc("ssim") < table.columns.get_loc("complete")
    expected = {
        "ssim": lambda c, r: evaluation(c, r, 4)["val_ssim"],
        "active_units": lambda c, r: evaluation(c, r, 4)["val_active_units"],
        "psnr_best_of_k": lambda c, r: evaluation(c, r, 4)["val_psnr_best_of_k"],
        "psnr_mean_of_k": lambda c, r: evaluation(c, r, 4)["val_psnr_mean_of_k"],
        "psnr_std_of_k": lambda c, r: 0.2 + 0.05 * c + 0.01 * r + 0.004,
        "no_prev_change": lambda c, r: -(2.0 + 0.3 * r) if c % 2 else -0.02 * r,
        "swapped_frame_change": lambda c, r: -1.04 - 0.1 * r,
        "z0_change": lambda c, r: -0.3 - 0.1 * r,
    }
    for name, value in expected.items():
        for c, label in enumerate(EVAL_LABELS):
            replicates = [value(c, r) for r in range(2)]
            assert table.loc[label, name] == pytest.approx(np.mean(replicates)), (name, label)
            assert table.loc[label, f"{name}_ci95"] == pytest.approx(t_half(replicates), abs=1e-12), (name, label)
    assert table.loc[EVAL_LABELS[0], "active_units"] == 0 and table.loc[EVAL_LABELS[0], "active_units_ci95"] == 0


def test_table_of_older_records_has_no_evaluation_columns():
    from cvae.analysis.table import EVAL_MEASURES, config_table, eval_cells

    table = config_table(make_data(EVAL_GRID, baselines=True))
    assert not {c for name in EVAL_MEASURES for c in (name, f"{name}_ci95")} & set(table.columns)
    assert eval_cells(table, table.iloc[0]) == []


def test_the_evaluation_follows_the_epoch_of_the_value(evaluated):
    """With metric.summary: last a run's evaluation is its last full epoch's (4), with best its best full epoch
    (here 3, the best of 1, 3, 4): the epoch a sweep's trial records it at."""
    from cvae.analysis.table import at_value_epoch

    evaluated.epochs.loc[evaluated.epochs.epoch == 3, "val_psnr"] += 10.0
    assert set(at_value_epoch(evaluated)["epoch"]) == {3}
    evaluated.spec = {**evaluated.spec, "metric": {"name": "val/psnr", "summary": "last"}}
    picked = at_value_epoch(evaluated)
    assert set(picked["epoch"]) == {4}
    assert picked["val_ssim"].tolist() == pytest.approx([evaluation(c, r, 4)["val_ssim"] for c in range(4)
                                                          for r in range(2)])


def test_table_cells_of_the_evaluation(evaluated):
    from cvae.analysis.table import config_table, eval_cells

    table = config_table(evaluated)
    row = table[table.configuration == EVAL_LABELS[1]].iloc[0]
    cells = dict(eval_cells(table, row))
    assert list(cells) == ["SSIM", "PSNR best of K (dB)", "PSNR mean of K (dB)", "PSNR spread over z (dB)",
                           "Δ without prev. frame (dB)", "Δ other video's frame (dB)", "Δ z = 0 (dB)", "active units"]
    assert cells["Δ without prev. frame (dB)"] == f"-2.15 ± {t_half([-2.0, -2.3]):.2f}"
    assert cells["SSIM"] == f"{np.mean([0.59, 0.595]):.3f} ± {t_half([0.59, 0.595]):.3f}"  # epoch 4's


def _uses_expected(c: int, r: int) -> dict[tuple[str, str], float]:
    """What :func:`figdata.uses` shows of configuration ``c``, replicate ``r`` of ``evaluated``: every panel at
    epoch 4, the best that ran the full evaluation (active units too, though measured at epoch 2, the best)."""
    ev4, psnr4 = evaluation(c, r, 4), val_psnr(c, r, 4)
    return {("Frame input", "normal rollout"): psnr4,
            ("Frame input", "without its previous frame"): ev4["val_psnr_no_prev"],
            ("Frame input", "with another video's frame"): ev4["val_psnr_swapped_frame"],
            ("Samples of z", "std over K samples"): ev4["val_psnr_std_of_k"],
            ("Samples of z", "best of K − mean of K"): ev4["val_psnr_best_of_k"] - ev4["val_psnr_mean_of_k"],
            ("Latent channels", "active units"): ev4["val_active_units"]}


def test_uses_shows_each_configurations_means_with_t_intervals(evaluated):
    df = D.uses(evaluated)
    assert df.attrs["name"] == "uses" and df.attrs["layout"] == "uses" and df.attrs["x"] == "configuration"
    assert df.attrs["panels"] == ["Frame input", "Samples of z", "Latent channels"]
    assert df.attrs["configurations"] == EVAL_LABELS
    got = D.summary(df).set_index(["panel", "line", "configuration"])
    assert len(got) == 6 * 4 and (got["n"] == 2).all()
    for c, label in enumerate(EVAL_LABELS):
        per_run = [_uses_expected(c, r) for r in range(2)]
        for (panel, line), _ in per_run[0].items():
            values = [p[(panel, line)] for p in per_run]
            row = got.loc[(panel, line, label)]
            assert row["mean"] == pytest.approx(np.mean(values)), (panel, line, label)
            if np.ptp(values) > 0:
                low, high = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
                assert (row["lo"], row["hi"]) == pytest.approx((low, high)), (panel, line, label)
    refs = df[df["kind"] == "reference"].set_index("configuration")["value"]
    assert refs.to_dict() == dict(zip(EVAL_LABELS, [4.0, 12.0, 4.0, 12.0], strict=True))
    (copy_first,) = df.loc[(df["kind"] == "baseline") & (df["group"] == "copy_first"), "value"]
    assert copy_first == 21.0
    caption = df.attrs["caption"]
    assert caption.startswith("What each configuration uses, all at one epoch of each run: the epoch of its value "
                              "(its best, or its last with metric.summary: last) among those that ran the full "
                              "evaluation; one row per configuration (4 configurations, 2 replicates each; bars: 95% "
                              "CI of the mean)")
    for text in ("No drop without the previous frame (within 0.1 dB, or above): the model does not use its previous "
                 "frame", "over K = 5 samples of z", "0 active units is posterior collapse, z ignored",
                 "beside N_dim, the channels available", "copy first frame (21.00 dB)", "Runs t0000-t0007."):
        assert text in caption, text
    low, high = df.attrs["xlims"]["Latent channels"]
    assert low < 0 and high > 12  # 0 active units and N_dim on the axes


def test_uses_names_partial_and_missing_runs():
    data = make_data(EVAL_GRID, evaluated=True, states={"t0007": "waiting", "t0005": "pruned"},
                     epochs_done={"t0007": 0})
    df = D.uses(data)
    assert df.attrs["configurations"] == [*EVAL_LABELS[:2], f"{EVAL_LABELS[2]} (1 of 2 pruned)", EVAL_LABELS[3]]
    last = D.summary(df).query("configuration == @EVAL_LABELS[3]")
    assert (last["n"] == 1).all() and last[["lo", "hi"]].isna().all().all()  # one run: no interval
    assert "No diagnostics recorded for t0007 (waiting)." in df.attrs["caption"]
    assert "t0007" not in df.attrs["runs"] and "grey reference" not in df.attrs["caption"].lower()


def test_uses_reads_the_trial_records_of_a_source_without_per_epoch_evaluation():
    """An Optuna study holds the evaluation only as the trial's attributes (at the epoch of its value)."""
    full = make_data(EVAL_GRID, evaluated=True)
    runs = full.runs.copy()
    for i, run in runs.iterrows():
        c, r = divmod(int(run["trial"]), 2)
        for col, value in evaluation(c, r, 4).items():
            runs.loc[i, col] = value
        runs.loc[i, "val_psnr"] = val_psnr(c, r, 4)
    data = SweepData(runs=runs, epochs=full.epochs[["run", "epoch", "val_psnr"]],
                     frames=pd.DataFrame(columns=["run", "epoch", "frame", "psnr"]), params=full.params, spec=full.spec)
    assert "uses" in F.applicable_figures(data)
    got = D.summary(D.uses(data)).set_index(["panel", "line", "configuration"])["mean"]
    for c, label in enumerate(EVAL_LABELS):
        assert got[("Frame input", "without its previous frame", label)] == pytest.approx(
            np.mean([evaluation(c, r, 4)["val_psnr_no_prev"] for r in range(2)]))
        assert got[("Latent channels", "active units", label)] == (0.0 if c == 0 else 3.5)


def test_uses_draws_only_the_panels_recorded():
    data = make_data(EVAL_GRID, evaluated=True)
    data.epochs = data.epochs.drop(columns=["val_psnr_no_prev", "val_psnr_swapped_frame", "val_active_units"])
    df = D.uses(data)  # val_diagnostics: false keeps the K samples only
    assert df.attrs["panels"] == ["Samples of z"] and "Frame input" not in df.attrs["caption"]
    older = make_data(EVAL_GRID, baselines=True)
    assert "uses" not in F.applicable_figures(older)
    assert D.uses(older).attrs["message"] == "no diagnostics in these records"


def test_psnr_per_frame_has_an_ssim_panel_where_recorded():
    data = make_data({"kl_anneal_type": ["cyclical", "none"]}, baselines=True, evaluated=True)
    df = D.psnr_per_frame(data)
    assert df.attrs["layout"] == "panels" and df.attrs["panels"] == ["PSNR", "SSIM"]
    assert df.attrs["ylabels"] == {"PSNR": "PSNR (dB)", "SSIM": "SSIM"}
    frames = np.arange(1, 21)
    for c, kind in enumerate(["cyclical", "none"]):
        psnr = np.mean([[frame_psnr(c, r, f, True) for f in frames] for r in range(2)], axis=0)
        ssim = np.mean([[0.8 - 0.01 * f + 0.01 * c + 0.005 * r for f in frames] for r in range(2)], axis=0)
        line = f"kl_anneal_type={kind}: {psnr.mean():.2f} dB average PSNR, {ssim.mean():.3f} SSIM"
        np.testing.assert_allclose(curves(df, "PSNR")[line]["mean"], psnr)
        np.testing.assert_allclose(curves(df, "SSIM")[line]["mean"], ssim)
        best = D.summary(df, "best_of_k").set_index(["panel", "line", "frame"])["mean"]
        np.testing.assert_allclose(best.loc[("PSNR", line)], psnr + 0.8)
        np.testing.assert_allclose(best.loc[("SSIM", line)], ssim + 0.02)
        low, high = df.attrs["ylims"]["SSIM"]
        assert low <= ssim.min() and high >= ssim.max()
    refs = baselines(df, "SSIM")
    np.testing.assert_allclose(refs["copy_first"]["value"], 0.9 - 0.01 * frames)
    assert set(refs["copy_first"]["line"]) == {"copy first frame: 22.90 dB average PSNR, 0.795 SSIM"}
    assert set(baselines(df, "PSNR")["copy_first"]["line"]) == set(refs["copy_first"]["line"])  # one legend
    assert "right: SSIM (structural similarity, 1 = identical)" in df.attrs["caption"]
    assert "Dash-dotted, in each line's colour: the PSNR and SSIM of the best of K = 5 samples" in df.attrs["caption"]


def test_psnr_per_frame_of_older_records_is_one_panel(kl_data):
    df = D.psnr_per_frame(make_data({"kl_anneal_type": ["cyclical", "none"]}, baselines=True))
    assert df.attrs["layout"] == "lines" and df.attrs["panels"] == [""] and "ylims" not in df.attrs
    assert set(df["kind"]) == {"metric", "baseline"} and "SSIM" not in df.attrs["caption"]


@pytest.mark.parametrize(("compute", "grid"), [
    (D.kl_psnr, {"kl_anneal_type": ["cyclical", "none"]}),
    (D.tfr_psnr, {"tfr": [1.0, 0.0]}),
    (D.kl_beta_psnr, {"kl_anneal_type": ["cyclical", "none"]}),
    (D.ndim_psnr, {"N_dim": [4, 12]}),
    (lambda d: D.compare(d, "N_dim", "val_psnr"), {"N_dim": [4, 12]}),
], ids=["kl_psnr", "tfr_psnr", "kl_beta_psnr", "ndim_psnr", "compare"])
def test_psnr_figures_draw_the_best_of_k_beside_the_single_sample(compute, grid):
    df = compute(make_data(grid, evaluated=True, eval_every=2))
    best = D.summary(df, "best_of_k")
    single = D.summary(df)
    lines = set(map(tuple, best[["panel", "line"]].to_numpy()))
    assert lines == set(map(tuple, single[["panel", "line"]].to_numpy())) and len(lines) == 2
    for (panel, line), rows in best.groupby(["panel", "line"]):
        assert rows["epoch"].tolist() == [1, 3, 4]  # the epochs that ran the K samples
        rows_of_line = metric(df, panel)[metric(df, panel)["line"] == line]
        c = int(rows_of_line["run"].iloc[0][1:]) // 2  # two replicates per configuration
        np.testing.assert_allclose(rows["mean"], [np.mean([evaluation(c, r, e)["val_psnr_best_of_k"] for r in range(2)])
                                                  for e in (1, 3, 4)])
        color = set(df.loc[(df["panel"] == panel) & (df["line"] == line), "color"])
        assert len(color) == 1  # in the colour of its single-sample line
    assert ("Dash-dotted, in each line's colour: the PSNR of the best of K = 5 samples of z per validation video"
            in df.attrs["caption"])
    older = compute(make_data(grid))
    assert "best_of_k" not in set(older["kind"]) and "Dash-dotted" not in older.attrs["caption"]


def test_the_evaluation_figures_render(evaluated, tmp_path):
    result = F.render_uses(evaluated)
    axes = result.fig.axes
    assert [ax.get_title() for ax in axes] == ["Frame input", "Samples of z", "Latent channels"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [
        "kl_anneal_type=cyclical,\nN_dim=4", "kl_anneal_type=cyclical,\nN_dim=12", "kl_anneal_type=none,\nN_dim=4",
        "kl_anneal_type=none,\nN_dim=12"]
    assert axes[2].get_xlim()[1] > 12
    frames = F.render_psnr_per_frame(evaluated).fig.axes
    assert [ax.get_title() for ax in frames] == ["PSNR", "SSIM"] and frames[1].get_ylabel() == "SSIM"
    png, _ = F.save_figure(result, tmp_path)
    with Image.open(png) as img:
        assert np.asarray(img.convert("L")).std() > 10


# -- rendering ----------------------------------------------------------------------------------------------------
def test_rendered_figures_have_their_axes(tf_data, kl_data):
    assert len(F.render_tfr_loss(tf_data).fig.axes) == 6  # three panels, three twin axes for the schedule
    assert len(F.render_kl_psnr(kl_data).fig.axes) == 1
    assert len(F.render_parallel_coordinates(tf_data).fig.axes) == 2  # + the colour bar
    optuna_like = SweepData(runs=kl_data.runs, epochs=kl_data.epochs[["run", "epoch", "val_psnr"]],
                            frames=kl_data.frames, params=kl_data.params)
    assert len(F.render_kl_beta_psnr(optuna_like).fig.axes) == 3  # no schedule: no twin axes


def test_seaborn_draws_the_t_band(kl_data):
    """The shaded bands are the t-interval of :func:`figdata.summary` (not seaborn's bootstrap)."""
    result = F.render_kl_psnr(kl_data)
    (ax,) = result.fig.axes
    tops = sorted(max(p.vertices[:, 1].max() for p in c.get_paths()) for c in ax.collections
                  if isinstance(c, PolyCollection))
    s = D.summary(result.data)
    assert tops == pytest.approx(sorted(s.groupby("line")["hi"].max()), rel=1e-9)


def test_render_all_writes_png_and_svg(tf_data, tmp_path):
    import matplotlib.pyplot as plt

    written = F.render_all(tf_data, tmp_path / "figs")
    assert [r.name for r, _, _ in written] == F.applicable_figures(tf_data)
    for result, png, svg in written:
        assert png == tmp_path / "figs" / f"{result.name}.png" and svg.suffix == ".svg"
        with Image.open(png) as img:
            assert img.format == "PNG" and 900 <= img.size[0] <= 1600
            assert np.asarray(img.convert("L")).std() > 10  # not blank
        head = svg.read_text()[:300]
        assert head.startswith("<?xml") or "<svg" in head
        assert result.title and result.caption and result.runs
        assert result.data.attrs["name"] == result.name
    assert plt.get_fignums() == []  # no pyplot state


def test_only_renders_exactly_those_named_even_inapplicable(kl_data, tmp_path):
    written = F.render_all(kl_data, tmp_path, only=["ndim_psnr", "kl_psnr"])
    assert [r.name for r, _, _ in written] == ["ndim_psnr", "kl_psnr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kl_psnr.png", "kl_psnr.svg", "ndim_psnr.png",
                                                          "ndim_psnr.svg"]
    with pytest.raises(ValueError, match=r"unknown figure\(s\): bogus; valid figures: tfr_loss, tfr_psnr"):
        F.render_all(kl_data, tmp_path, only=["kl_psnr", "bogus"])


def test_importing_the_figures_does_not_import_torch():
    code = "import sys, cvae.analysis.figures; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_a_real_sweeps_records_render(sweep_records, tmp_path):
    """Every figure the records of a real sweep (trained by the worker loop: teacher forcing x KL annealing,
    two replicates) support is drawn, as PNG and SVG."""
    data = load_local(sweep_records.runs)
    names = F.applicable_figures(data)
    assert {"tfr_loss", "tfr_psnr", "kl_beta_psnr", "kl_psnr", "psnr_per_frame"} <= set(names), names
    for result, png, svg in F.render_all(data, tmp_path):
        with Image.open(png) as img:
            assert img.format == "PNG"
        assert svg.stat().st_size > 1000 and result.runs, result.name
