"""The figures: applicability, what each draws (values, panels, twin axes, labels, legends), files, edge cases.

Sweeps are built in memory by ``make_data`` with the loaders' schema and known values, so every plotted line
can be checked against the records; one test renders the real ``runs/quickstart`` records when present.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cvae.analysis import figures as F
from cvae.analysis.load import RUN_COLUMNS, SweepData, load_local
from matplotlib.collections import PolyCollection
from PIL import Image

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
        "tfr": 0.0, "tfr_sde": 0, "tfr_d_step": 0.0, "N_dim": 12, "lr": 0.001, "batch_size": 4}
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


def make_data(grid: dict[str, list], *, replicates: int = 2, n_epochs: int = 5, n_frames: int = 20,
              states: dict[str, str] | None = None, epochs_done: dict[str, int] | None = None,
              with_frames: bool = True, spec: bool = True, baselines: bool = False) -> SweepData:
    """A sweep over ``grid`` (in order) x ``replicates``, schema as :mod:`analysis.load` gives it.

    Configuration ``c`` (grid order), replicate ``r``, epoch ``e``: val_psnr = 20 + c + 0.5 e + 0.2 r,
    train_loss = (c + 1) / (e + 1) + 0.01 r, β and tfr from the resolved schedule; the last epoch's frame f has
    PSNR 30 - 0.1 f + c + 0.2 r (earlier epochs 5 dB less). ``states`` / ``epochs_done`` override a run's state
    and how many epochs it recorded (0: none). ``baselines``: every run validated on one video whose copy-first
    frame scores 21 dB (per frame 25 - 0.2 f), mean frame 22 dB, copy-previous 37 dB.
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
                if with_frames:
                    for f in range(1, n_frames + 1):
                        frames.append({"run": run, "epoch": e, "frame": f,
                                       "psnr": frame_psnr(c, r, f, e == n_ep - 1),
                                       **(baseline_frame(f) if baselines else {})})
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


# -- figure inspection -------------------------------------------------------------------------------------------
def panels(fig):
    return [ax for ax in fig.axes if ax.get_label() == "panel"]


def twins(fig):
    return [ax for ax in fig.axes if ax.get_label() == "twin"]


def legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def lines(ax) -> dict[str, np.ndarray]:
    return {ln.get_label(): np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()
            if not ln.get_label().startswith("_")}


def bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def all_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text)))


@pytest.fixture(scope="module")
def kl_data():
    return make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]})


@pytest.fixture(scope="module")
def tf_data():
    return make_data({"tf_schedule": ["TF1", "TF2", "TF3"], "N_dim": [12, 32]})


# -- the registry and applicability -----------------------------------------------------------------------------
def test_registry_lists_every_figure_in_order():
    assert list(F.FIGURES) == ["tfr_loss", "tfr_psnr", "kl_beta_psnr", "kl_psnr", "kl_loss", "psnr_per_frame",
                               "ndim_psnr", "optimization_history", "param_importances", "parallel_coordinates"]
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
    runs = full.runs[[*RUN_COLUMNS, "kl_anneal_type"]]
    data = SweepData(runs=runs, epochs=full.epochs[["run", "epoch", "val_psnr"]],
                     frames=pd.DataFrame(columns=["run", "epoch", "frame", "psnr"]), params=["kl_anneal_type"])
    names = F.applicable_figures(data)
    assert "kl_psnr" in names
    assert not {"kl_beta_psnr", "kl_loss", "psnr_per_frame", "tfr_loss"} & set(names)
    # asked for anyway: a figure that says what is missing, no traceback
    result = F.render_kl_beta_psnr(data)
    assert "twin" not in {ax.get_label() for ax in result.fig.axes}
    result = F.render_kl_loss(data)
    assert "no training loss" in all_text(result.fig)


def test_named_choice_without_resolved_columns_is_recognised_by_name():
    full = make_data({"tf_schedule": ["TF1", "TF3"]}, spec=False)
    runs = full.runs[[*RUN_COLUMNS, "tf_schedule"]]
    data = SweepData(runs=runs, epochs=full.epochs, frames=full.frames, params=["tf_schedule"])
    assert "tfr_psnr" in F.applicable_figures(data)
    assert [ax.get_title() for ax in panels(F.render_tfr_psnr(data).fig)] == ["TF1", "TF3"]


# -- teacher forcing -----------------------------------------------------------------------------------------------
def test_tfr_loss_one_panel_per_tf_configuration_with_twin_axes(tf_data):
    result = F.render_tfr_loss(tf_data)
    fig = result.fig
    assert result.name == "tfr_loss" and fig._suptitle.get_text() == result.title
    assert [ax.get_title() for ax in panels(fig)] == ["TF1", "TF2", "TF3"]
    assert len(twins(fig)) == 3 and len(fig.axes) == 6
    for c0, (ax, twin, tf) in enumerate(zip(panels(fig), twins(fig), ["TF1", "TF2", "TF3"], strict=True)):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "training loss"
        assert twin.get_ylabel() == "teacher-forcing ratio"
        got = lines(ax)
        assert set(got) == {"N_dim=12", "N_dim=32"}
        for k, nd in enumerate((12, 32)):
            c = 2 * c0 + k
            want = [np.mean([train_loss(c, r, e) for r in range(2)]) for e in range(5)]
            np.testing.assert_allclose(got[f"N_dim={nd}"], want)
        assert len(bands(ax)) == 2  # replicates: a 95% CI band per line
        (tfr_line,) = lines(twin).values()
        np.testing.assert_allclose(tfr_line, [tfr_of(TF_SETS[tf], e) for e in range(5)])
    # every panel has the same entries: one legend for the figure
    assert legend_texts(fig) == ["N_dim=12", "N_dim=32", "teacher-forcing ratio"]
    assert "TF1: tfr=1.0, sde=0, step=0.25" in result.caption and "Runs t0000-t0011." in result.caption
    assert result.runs == [f"t{i:04d}" for i in range(12)]


def test_tfr_psnr_titles_from_resolved_settings():
    data = make_data({"tfr": [1.0, 0.0]}, replicates=1)
    result = F.render_tfr_psnr(data)
    fig = result.fig
    assert [ax.get_title() for ax in panels(fig)] == ["tfr=1.0, sde=0, step=0.0", "tfr=0.0, sde=0, step=0.0"]
    assert len(twins(fig)) == 2
    for c, ax in enumerate(panels(fig)):
        assert ax.get_ylabel() == "validation PSNR (dB)"
        (psnr,) = lines(ax).values()
        np.testing.assert_allclose(psnr, [val_psnr(c, 0, e) for e in range(5)])
        assert bands(ax) == []  # a single replicate: just the line


# -- KL annealing ------------------------------------------------------------------------------------------------
def test_kl_beta_psnr_panels_show_beta_on_a_twin_axis(kl_data):
    fig = F.render_kl_beta_psnr(kl_data).fig
    assert [ax.get_title() for ax in panels(fig)] == ["cyclical", "monotonic", "none"]
    assert len(twins(fig)) == 3
    for c, (ax, twin, kind) in enumerate(zip(panels(fig), twins(fig), KL_SETS, strict=True)):
        (psnr,) = lines(ax).values()
        np.testing.assert_allclose(psnr, [val_psnr(c, 0, e) + 0.1 for e in range(5)])
        assert twin.get_ylabel() == "β (KL weight)"
        (beta,) = lines(twin).values()
        np.testing.assert_allclose(beta, [beta_of(KL_SETS[kind], e, 5) for e in range(5)])


def test_kl_psnr_lines_are_replicate_means_with_ci(kl_data):
    result = F.render_kl_psnr(kl_data)
    (ax,) = panels(result.fig)
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation PSNR (dB)"
    got = lines(ax)
    assert list(got) == ["cyclical", "monotonic", "none"]
    for c, kind in enumerate(got):
        np.testing.assert_allclose(got[kind], [val_psnr(c, 0, e) + 0.1 for e in range(5)])
    assert len(bands(ax)) == 3
    # the band is the t interval: mean ± t(0.975, 1) * sd / sqrt(2), sd of (x, x + 0.2) = 0.2 / sqrt(2)
    verts = bands(ax)[0].get_paths()[0].vertices
    half = 12.706204736 * (0.2 / np.sqrt(2)) / np.sqrt(2)
    assert verts[:, 1].max() == pytest.approx(val_psnr(0, 0, 4) + 0.1 + half, rel=1e-6)
    assert result.caption.startswith("Validation PSNR per epoch, one line per KL annealing configuration "
                                     "(3 configurations, 2 replicates each; shaded: 95% CI of the mean).")
    assert "Runs t0000-t0005." in result.caption
    single = F.render_kl_psnr(make_data({"kl_anneal_type": ["cyclical", "none"]}, replicates=1))
    assert bands(panels(single.fig)[0]) == []


def reference_lines(ax) -> dict[str, np.ndarray]:
    return {ln.get_gid(): np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()
            if str(ln.get_gid()).startswith("baseline:")}


@pytest.mark.parametrize("render", [F.render_kl_psnr, F.render_kl_beta_psnr, F.render_optimization_history],
                         ids=["kl_psnr", "kl_beta_psnr", "optimization_history"])
def test_psnr_figures_draw_the_baselines_as_labelled_reference_lines(render):
    data = make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]}, baselines=True)
    result = render(data)
    for ax in panels(result.fig):
        refs = reference_lines(ax)
        assert set(refs) == {"baseline:copy_first", "baseline:mean_frame"}
        assert refs["baseline:copy_first"] == pytest.approx([21.0, 21.0])  # axhline: two ends
        assert refs["baseline:mean_frame"] == pytest.approx([22.0, 22.0])
        low, high = ax.get_ylim()
        assert low < 21.0 < 22.0 < high  # on the axes, not cut off
    assert "copy first frame: 21.00 dB" in legend_texts(result.fig)
    assert ("Grey reference lines: the trivial predictors on the same validation clips, copy first frame "
            "(21.00 dB) and mean frame (oracle) (22.00 dB); copying the previous ground-truth frame, an oracle a "
            "rollout cannot use, scores 37.00 dB.") in result.caption
    plain = render(make_data({"kl_anneal_type": ["cyclical", "none"]}))  # records without baselines
    assert not any(reference_lines(ax) for ax in panels(plain.fig)) and "reference" not in plain.caption


def test_psnr_per_frame_draws_the_baselines_per_frame():
    result = F.render_psnr_per_frame(make_data({"kl_anneal_type": ["cyclical", "none"]}, baselines=True))
    (ax,) = panels(result.fig)
    refs = reference_lines(ax)
    np.testing.assert_allclose(refs["baseline:copy_first"], [25.0 - 0.2 * f for f in range(1, 21)])
    np.testing.assert_allclose(refs["baseline:mean_frame"], [22.0] * 20)
    assert "copy first frame: 22.90 dB average PSNR" in legend_texts(result.fig)
    assert "copy first frame (22.90 dB)" in result.caption


def test_kl_loss_uses_a_log_scale_when_losses_span_decades():
    data = make_data({"kl_anneal_type": ["cyclical", "none"]})
    assert panels(F.render_kl_loss(data).fig)[0].get_yscale() == "linear"
    data.epochs.loc[data.epochs.run.isin(["t0000", "t0001"]), "train_loss"] *= 1000  # β·KL dwarfs the MSE
    result = F.render_kl_loss(data)
    (ax,) = panels(result.fig)
    assert ax.get_yscale() == "log" and "Log y-scale" in result.caption
    assert ax.get_ylabel() == "training loss"


def test_kl_named_choice_panels_use_the_label():
    data = make_data({"kl_schedule": ["cyclical", "none"]}, replicates=1)
    data.runs["kl_schedule"] = data.runs["kl_schedule"].map({"cyclical": "KL1", "none": "KL3"})
    data.runs["label"] = data.runs["kl_schedule"]
    data.spec = {"parameters": {"kl_schedule": {"values": ["KL1", "KL3"],
                                                "sets": {"KL1": KL_SETS["cyclical"], "KL3": KL_SETS["none"]}}}}
    assert [ax.get_title() for ax in panels(F.render_kl_beta_psnr(data).fig)] == ["KL1", "KL3"]
    assert list(lines(panels(F.render_kl_psnr(data).fig)[0])) == ["KL1", "KL3"]


# -- per frame, N_dim, compare ----------------------------------------------------------------------------------
def test_psnr_per_frame_uses_the_last_epoch_and_reports_averages(kl_data):
    result = F.render_psnr_per_frame(kl_data)
    (ax,) = panels(result.fig)
    assert ax.get_xlabel() == "frame" and ax.get_ylabel() == "PSNR (dB)"
    frames = np.arange(1, 21)
    expected = []
    for c, kind in enumerate(["cyclical", "monotonic", "none"]):
        curve = np.mean([[frame_psnr(c, r, f, True) for f in frames] for r in range(2)], axis=0)
        expected.append(f"kl_anneal_type={kind}: {curve.mean():.2f} dB average PSNR")
        np.testing.assert_allclose(lines(ax)[expected[-1]], curve)
    assert legend_texts(result.fig) == expected
    assert expected[0] == "kl_anneal_type=cyclical: 29.05 dB average PSNR"
    assert "20 predicted frames" in result.caption and "(epoch 4)" in result.caption


def test_ndim_psnr_one_line_per_value_in_numeric_order():
    data = make_data({"N_dim": [32, 12]})  # grid order 32 first: lines still go 12, 32
    result = F.render_ndim_psnr(data)
    got = lines(panels(result.fig)[0])
    assert list(got) == ["N_dim=12", "N_dim=32"]
    np.testing.assert_allclose(got["N_dim=32"], [val_psnr(0, 0, e) + 0.1 for e in range(5)])
    np.testing.assert_allclose(got["N_dim=12"], [val_psnr(1, 0, e) + 0.1 for e in range(5)])


def test_compare_pools_runs_sharing_a_value(tf_data):
    result = F.render_compare(tf_data, "N_dim", "train_loss")
    assert result.name == "compare_N_dim_train_loss"
    got = lines(panels(result.fig)[0])
    want = [np.mean([train_loss(c, r, e) for c in (0, 2, 4) for r in range(2)]) for e in range(5)]
    np.testing.assert_allclose(got["N_dim=12"], want)
    assert "6 runs each, pooled over tf_schedule" in result.caption
    with pytest.raises(ValueError, match=r"unknown parameter 'nope'.*swept parameters: tf_schedule, N_dim"):
        F.render_compare(tf_data, "nope", "val_psnr")
    with pytest.raises(ValueError, match=r"unknown metric 'psnr'.*valid metrics: .*val_psnr"):
        F.render_compare(tf_data, "N_dim", "psnr")


# -- partial runs -------------------------------------------------------------------------------------------------
def test_partial_runs_are_dashed_and_named_in_the_legend():
    # t0001 (cyclical, replicate 1) pruned after 2 epochs; both monotonic runs pruned; t0005 waiting, no epochs
    data = make_data({"kl_anneal_type": ["cyclical", "monotonic", "none"]},
                     epochs_done={"t0001": 2, "t0002": 3, "t0003": 3, "t0005": 0},
                     states={"t0005": "waiting"})
    result = F.render_kl_psnr(data)
    ax = panels(result.fig)[0]
    by_label = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(by_label) == {"cyclical (1 of 2 pruned)", "monotonic (pruned)", "none"}
    assert by_label["monotonic (pruned)"].get_linestyle() == "--"
    assert by_label["none"].get_linestyle() == "-"
    # the mean uses the runs that reached each epoch
    np.testing.assert_allclose(by_label["cyclical (1 of 2 pruned)"].get_ydata(),
                               [val_psnr(0, 0, 0) + 0.1, val_psnr(0, 0, 1) + 0.1, *(val_psnr(0, 0, e) for e in (2, 3, 4))])
    assert "t0005 (waiting)" in result.caption and "t0005" not in result.runs
    frames = F.render_psnr_per_frame(data)
    assert any(t.startswith("kl_anneal_type=monotonic (pruned): ") for t in legend_texts(frames.fig))
    history = F.render_optimization_history(data)
    assert "pruned run" in legend_texts(history.fig)


# -- sweep-level ------------------------------------------------------------------------------------------------
def test_optimization_history_and_best_so_far(tf_data):
    result = F.render_optimization_history(tf_data)
    ax = panels(result.fig)[0]
    assert ax.get_xlabel() == "trial number" and ax.get_ylabel() == "validation PSNR (dB)"
    got = lines(ax)
    values = tf_data.runs.value.to_numpy()
    np.testing.assert_allclose(got["complete run"], values)
    np.testing.assert_allclose(got["best so far"], np.maximum.accumulate(values))


def test_param_importances_from_an_in_memory_study(tf_data):
    imp = F.param_importances(tf_data)
    assert set(imp) == {"tf_schedule", "N_dim"} and sum(imp.values()) == pytest.approx(1.0)
    assert list(imp.values()) == sorted(imp.values(), reverse=True) and imp.n_runs == 12 and imp.method
    result = F.FIGURES["param_importances"][1](tf_data)
    (ax,) = panels(result.fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(reversed(imp))
    assert ax.get_xlabel().startswith("importance")
    few = make_data({"tf_schedule": ["TF1", "TF2"], "N_dim": [12]}, replicates=1)
    assert F.param_importances(few) == {} and "need at least" in F.param_importances(few).reason
    shown = F.render_param_importances(F.Importances(reason="only N_dim varies"), metric="val/psnr")
    assert "only N_dim varies" in all_text(shown.fig)


def test_parallel_coordinates_one_line_per_run_with_a_colorbar(tf_data):
    result = F.render_parallel_coordinates(tf_data)
    (ax,) = panels(result.fig)
    run_lines = [ln for ln in ax.get_lines() if ln.get_gid()]
    assert sorted(ln.get_gid() for ln in run_lines) == list(tf_data.runs.run)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tf_schedule", "N_dim", "val/psnr"]
    assert any(a.get_label() == "<colorbar>" for a in result.fig.axes)
    # categorical axis: TF1, TF2, TF3 at 0, 0.5, 1; the metric axis spans min..max
    first = next(ln for ln in run_lines if ln.get_gid() == "t0000")
    assert first.get_ydata()[0] == 0.0 and first.get_ydata()[2] == 0.0
    assert {"TF1", "TF2", "TF3"} <= set(all_text(result.fig).split("\n"))


# -- files, selection, empty sweeps -------------------------------------------------------------------------------
def test_render_all_writes_png_and_svg(tf_data, tmp_path):
    written = F.render_all(tf_data, tmp_path / "figs")
    assert [r.name for r, _, _ in written] == F.applicable_figures(tf_data)
    for result, png, svg in written:
        assert png == tmp_path / "figs" / f"{result.name}.png" and svg.suffix == ".svg"
        with Image.open(png) as img:
            assert img.format == "PNG" and 900 <= img.size[0] <= 1600
        head = svg.read_text()[:300]
        assert head.startswith("<?xml") or "<svg" in head
        assert result.title and result.caption and result.runs


def test_only_renders_exactly_those_named_even_inapplicable(kl_data, tmp_path):
    written = F.render_all(kl_data, tmp_path, only=["ndim_psnr", "kl_psnr"])
    assert [r.name for r, _, _ in written] == ["ndim_psnr", "kl_psnr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kl_psnr.png", "kl_psnr.svg", "ndim_psnr.png",
                                                          "ndim_psnr.svg"]
    with pytest.raises(ValueError, match=r"unknown figure\(s\): bogus; valid figures: tfr_loss, tfr_psnr"):
        F.render_all(kl_data, tmp_path, only=["kl_psnr", "bogus"])


def test_empty_sweep_gives_a_no_runs_figure(tmp_path):
    data = empty_data()
    assert F.applicable_figures(data) == []
    with pytest.warns(UserWarning, match="no runs"):
        written = F.render_all(data, tmp_path)
    ((result, png, _),) = written
    assert result.name == "no_runs" and "no runs" in all_text(result.fig) and png.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (_, render) in F.FIGURES.items():
            assert "no runs" in all_text(render(data).fig), name


def test_colors_are_stable_per_configuration(kl_data):
    psnr = {ln.get_label(): ln.get_color() for ln in panels(F.render_kl_psnr(kl_data).fig)[0].get_lines()}
    frames = {ln.get_label().split(":")[0].removeprefix("kl_anneal_type="): ln.get_color()
              for ln in panels(F.render_psnr_per_frame(kl_data).fig)[0].get_lines()}
    assert psnr == frames and len(set(psnr.values())) == 3
    assert F.palette(["N_dim=12", "N_dim=4"]) == F.palette(["N_dim=4", "N_dim=12"])


@pytest.mark.skipif(not (REPO / "runs" / "quickstart" / "spec.yaml").is_file(),
                    reason="no runs/quickstart records (make demo writes them)")
def test_quickstart_records_render(tmp_path):
    data = load_local(REPO / "runs" / "quickstart")
    names = F.applicable_figures(data)
    assert {"tfr_loss", "kl_beta_psnr", "psnr_per_frame", "ndim_psnr"} <= set(names)
    for result, png, svg in F.render_all(data, tmp_path):
        with Image.open(png) as img:
            assert img.format == "PNG"
        assert svg.stat().st_size > 1000 and result.runs, result.name


def test_wide_intervals_are_cut_at_the_runs_range():
    """Two diverging seeds: t(0.975, 1) = 12.7 would flatten every line; the axes keep the runs' range."""
    data = make_data({"kl_anneal_type": ["cyclical", "none"]})
    data.epochs.loc[data.epochs.run == "t0001", "val_psnr"] -= 10.0
    result = F.render_kl_psnr(data)
    (ax,) = panels(result.fig)
    low, high = ax.get_ylim()
    values = data.epochs.val_psnr
    assert low >= values.min() - 0.1 * np.ptp(values) and high <= values.max() + 0.1 * np.ptp(values)
    assert "cut at the axes" in result.caption
    single = make_data({"kl_anneal_type": ["cyclical", "none"]}, replicates=1)
    assert "cut at the axes" not in F.render_kl_psnr(single).caption
