"""The sweep spec (``sweeps/spec.py``): W&B's syntax in, a validated :class:`SweepSpec` out, every problem
reported at once as a :class:`SpecError` naming the file and the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from cvae.core.config import ExperimentConfig
from cvae.sweeps.params import SUPPORTED_DISTRIBUTIONS, UNSUPPORTED_DISTRIBUTIONS
from cvae.sweeps.space import make_pruner, make_sampler, suggest_all
from cvae.sweeps.spec import (
    HeartbeatSpec,
    MetricSpec,
    NumEpoch,
    PrunerSpec,
    SamplerSpec,
    SpecError,
    SweepSpec,
    SynthSpec,
    WandbSpec,
    load_spec,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {"DR": "data", "num_epoch": 4, "tfr_sde": 1, "F_dim": 16, "L_dim": 8, "N_dim": 4, "D_out_dim": 16}
"""A small base config that ``cvae train`` accepts (tfr_sde < num_epoch)."""

DROP = object()
"""An override value that removes the key from the minimal spec."""

ISSUE_EXAMPLE: dict[str, Any] = {
    "name": "kl-annealing",
    "method": "grid",
    "metric": {"name": "val/psnr", "goal": "maximize"},
    "run_cap": 12,
    "parameters": {
        "kl_anneal_type": {"values": ["cyclical", "monotonic", "none"]},
        "N_dim": {"values": [12, 32]},
        "tfr": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        "kl_anneal_cycle": {"values": [4, 10], "when": {"kl_anneal_type": ["cyclical"]}},
    },
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
    "base": {"DR": "data/synth", "num_epoch": 10, "F_dim": 32},
    "replicates": 1,
    "workers": 2,
    "storage": "sqlite:///runs/kl-annealing/study.db",
    "wandb": {"project": "cvae-sweeps", "mode": "auto"},
    "output_dir": "runs/kl-annealing",
}
"""The example of the sweeps issue, verbatim (key order matters: a ``when`` must follow its parameter)."""

KL_GRID = {
    "kl_anneal_type": {"values": ["cyclical", "monotonic", "none"]},
    "N_dim": {"values": [12, 32]},
    "kl_anneal_cycle": {"values": [4, 10], "when": {"kl_anneal_type": ["cyclical"]}},
}


def write(tmp_path: Path, raw: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # keep the order: ``when`` depends on it
    return path


def minimal(**overrides: Any) -> dict[str, Any]:
    """A small valid random-search spec; ``key=DROP`` removes a key."""
    raw: dict[str, Any] = {"name": "mini", "method": "random", "run_cap": 4, "base": dict(BASE),
                           "parameters": {"N_dim": {"values": [4, 8]}}}
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not DROP}


def load(tmp_path: Path, **overrides: Any) -> SweepSpec:
    return load_spec(write(tmp_path, minimal(**overrides)))


def error(tmp_path: Path, **overrides: Any) -> str:
    """The SpecError message of the minimal spec with ``overrides``; it must start with the file's path."""
    path = write(tmp_path, minimal(**overrides))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# -- the issue's example and the defaults ---------------------------------------------------------------

def test_issue_example_loads(tmp_path: Path) -> None:
    """The issue's example, made consistent: random search (a grid cannot take a uniform range) and a
    tfr_sde below num_epoch (the default tfr_sde=10 with num_epoch=10 is a decay that never starts)."""
    raw = {**ISSUE_EXAMPLE, "method": "random", "base": {**ISSUE_EXAMPLE["base"], "tfr_sde": 2}}
    spec = load_spec(write(tmp_path, raw))
    assert (spec.name, spec.method, spec.metric.name, spec.metric.goal) == (
        "kl-annealing", "random", "val/psnr", "maximize")
    assert spec.metric.field == "val_psnr"
    assert spec.run_cap == 12
    assert [p.name for p in spec.params] == ["kl_anneal_type", "N_dim", "tfr", "kl_anneal_cycle"]
    kl_type, n_dim, tfr, cycle = spec.params
    assert (kl_type.distribution, kl_type.values) == ("categorical", ("cyclical", "monotonic", "none"))
    assert (n_dim.distribution, n_dim.values) == ("categorical", (12, 32))
    assert (tfr.distribution, tfr.low, tfr.high, tfr.q) == ("uniform", 0.0, 1.0, None)
    assert (cycle.values, dict(cycle.when)) == ((4, 10), {"kl_anneal_type": ("cyclical",)})
    assert spec.pruner == PrunerSpec(type="hyperband", min_resource=2, reduction_factor=3, max_resource="auto")
    assert dict(spec.pruner) == {"type": "hyperband", "min_resource": 2, "reduction_factor": 3, "max_resource": "auto"}
    assert dict(spec.base) == {"DR": "data/synth", "num_epoch": 10, "F_dim": 32, "tfr_sde": 2}
    assert (spec.replicates, spec.workers) == (1, 2)
    assert spec.storage == "sqlite:///runs/kl-annealing/study.db"
    assert spec.wandb == WandbSpec(project="cvae-sweeps", mode="auto")
    assert spec.output_dir == Path("runs/kl-annealing")
    assert spec.n_configs() == 12


def test_issue_example_verbatim_is_rejected_for_its_grid_over_a_uniform(tmp_path: Path) -> None:
    path = write(tmp_path, ISSUE_EXAMPLE)
    with pytest.raises(SpecError, match=r"parameters\.tfr: method grid needs values .* continuous uniform"):
        load_spec(path)


def test_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path)
    assert spec.storage == "sqlite:///runs/mini/study.db"
    assert spec.output_dir == Path("runs/mini")
    assert spec.wandb == WandbSpec(project="cvae-sweeps", entity=None, mode="auto", tags=())
    assert spec.metric == MetricSpec(name="val/psnr", goal="maximize", summary="best")
    assert (spec.metric.name, spec.metric.goal, spec.metric.summary) == ("val/psnr", "maximize", "best")
    assert (spec.replicates, spec.workers, spec.seed, spec.max_retry) == (1, 1, 0, 3)
    assert spec.heartbeat == HeartbeatSpec(interval=10, grace=60)
    assert (spec.heartbeat.interval, spec.heartbeat.grace) == (10, 60)
    assert spec.pruner == PrunerSpec(type="none") and dict(spec.pruner) == {"type": "none"}
    assert spec.sampler == SamplerSpec() and dict(spec.sampler) == {}
    assert spec.synth is None
    assert spec.num_epoch == NumEpoch(base=4) and not spec.num_epoch.is_swept
    assert spec.source == str(tmp_path / "spec.yaml")


def test_storage_default_is_under_output_dir(tmp_path: Path) -> None:
    assert load(tmp_path, output_dir="out/here").storage == "sqlite:///out/here/study.db"


def test_load_spec_overrides_storage_and_workers(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/db"
    spec = load_spec(write(tmp_path, minimal(workers=2, storage="sqlite:///x.db")), storage=url, workers=5)
    assert (spec.storage, spec.workers) == (url, 5)


@pytest.mark.parametrize(("metric", "goal"), [("val/psnr", "maximize"), ("train/psnr", "maximize"),
                                               ("val/loss", "minimize"), ("train/kl", "minimize"),
                                               ("val/ssim", "maximize"), ("val/psnr_best_of_k", "maximize"),
                                               ("val/active_units", "maximize"), ("val/kl", "minimize")])
def test_goal_defaults_from_the_metric(tmp_path: Path, metric: str, goal: str) -> None:
    spec = load(tmp_path, metric={"name": metric})
    assert spec.metric.goal == goal


def test_every_evaluation_column_can_be_the_metric(tmp_path: Path) -> None:
    from cvae.schema import EVAL_COLUMNS, WANDB_KEYS

    for column in EVAL_COLUMNS:
        if column == "val_ssim_copy_first":  # a baseline, the same for every trial
            continue
        spec = load(tmp_path, metric={"name": WANDB_KEYS[column], "goal": "maximize"})
        assert spec.metric.field == column


@pytest.mark.parametrize(("method", "expected"), [
    ("bayes", "tpe"), ("tpe", "tpe"), ("random", "random"), ("grid", "grid"), ("cmaes", "cmaes"), ("gp", "gp"),
    ("qmc", "qmc"),
])
def test_method(tmp_path: Path, method: str, expected: str) -> None:
    assert load(tmp_path, method=method).method == expected


# -- W&B distributions ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "raw", "expected"), [
    ("N_dim", {"value": 8}, dict(distribution="constant", values=(8,))),
    ("N_dim", {"distribution": "constant", "value": 8}, dict(distribution="constant", values=(8,))),
    ("N_dim", {"values": [4, 8]}, dict(distribution="categorical", values=(4, 8))),
    ("N_dim", {"distribution": "categorical", "values": [4, 8]}, dict(distribution="categorical", values=(4, 8))),
    ("N_dim", {"distribution": "int_uniform", "min": 4, "max": 32},
     dict(distribution="int_uniform", low=4, high=32, q=None)),
    ("N_dim", {"min": 4, "max": 32}, dict(distribution="int_uniform", low=4, high=32, q=None)),
    ("N_dim", {"distribution": "int_uniform", "min": 4, "max": 32, "q": 4},
     dict(distribution="int_uniform", low=4, high=32, q=4)),
    ("lr", {"distribution": "uniform", "min": 0.001, "max": 0.01},
     dict(distribution="uniform", low=0.001, high=0.01, q=None)),
    ("lr", {"min": 0.001, "max": 0.01}, dict(distribution="uniform", low=0.001, high=0.01)),
    ("tfr", {"min": 0, "max": 0.5}, dict(distribution="uniform", low=0.0, high=0.5)),
    ("tfr", {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
     dict(distribution="q_uniform", low=0.0, high=1.0, q=0.25)),
    ("lr", {"distribution": "log_uniform", "min": -9.2, "max": -4.6},
     dict(distribution="log_uniform", low=-9.2, high=-4.6)),
    ("lr", {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01},
     dict(distribution="log_uniform_values", low=0.0001, high=0.01)),
    # W&B's q defaults to 1; q_uniform is round(x / q) * q: min and max move to their nearest multiples of q
    ("tfr", {"distribution": "q_uniform", "min": 0, "max": 1}, dict(distribution="q_uniform", low=0.0, high=1.0, q=1.0)),
    ("tfr", {"distribution": "q_uniform", "min": 0.1, "max": 0.9, "q": 0.25},
     dict(distribution="q_uniform", low=0.0, high=1.0, q=0.25)),
    # an integer key's q_uniform is an int range with step q
    ("batch_size", {"distribution": "q_uniform", "min": 3, "max": 13, "q": 4},
     dict(distribution="int_uniform", low=4, high=12, q=4, declared="q_uniform")),
    # log(1/x) uniform in [log(1/max), log(1/min)]: x is log-uniform in [min, max]
    ("lr", {"distribution": "inv_log_uniform_values", "min": 0.0001, "max": 0.01},
     dict(distribution="log_uniform_values", low=0.0001, high=0.01, declared="inv_log_uniform_values")),
    # x = exp(-u), u uniform in [min, max]: log-uniform in [exp(-max), exp(-min)]
    ("lr", {"distribution": "inv_log_uniform", "min": 4.6, "max": 9.2},
     dict(distribution="log_uniform_values", low=math.exp(-9.2), high=math.exp(-4.6), declared="inv_log_uniform")),
    ("N_dim", {"values": [4, 8], "probabilities": [0.25, 0.75]},
     dict(distribution="categorical", values=(4, 8), probabilities=(0.25, 0.75))),
    ("N_dim", {"distribution": "categorical_w_probabilities", "values": [4, 8], "probabilities": [0.5, 0.5]},
     dict(distribution="categorical", values=(4, 8), probabilities=(0.5, 0.5))),
], ids=lambda v: v if isinstance(v, str) else None)
def test_distribution(tmp_path: Path, key: str, raw: dict, expected: dict) -> None:
    (param,) = load(tmp_path, parameters={key: raw}).params
    assert param.name == key
    for attr, value in expected.items():
        assert getattr(param, attr) == value, attr


def test_the_wandb_distributions_are_all_accepted_or_refused() -> None:
    """W&B's full list (docs: sweep-config-keys, "Distribution options"): none is left unhandled."""
    wandb = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
             "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
             "q_normal", "log_normal", "q_log_normal", "beta", "q_beta", "categorical_w_probabilities"}
    assert wandb == set(SUPPORTED_DISTRIBUTIONS) | set(UNSUPPORTED_DISTRIBUTIONS)
    assert not set(SUPPORTED_DISTRIBUTIONS) & set(UNSUPPORTED_DISTRIBUTIONS)


@pytest.mark.parametrize("dist", UNSUPPORTED_DISTRIBUTIONS)
def test_unsupported_wandb_distribution_is_rejected_by_name(tmp_path: Path, dist: str) -> None:
    raw = {"distribution": dist, "min": 0.001, "max": 0.01, "mu": 0.005, "sigma": 0.001}
    message = error(tmp_path, parameters={"lr": raw})
    assert f"parameters.lr.distribution={dist!r} has no Optuna equivalent ({UNSUPPORTED_DISTRIBUTIONS[dist]})" in message
    assert "supported: constant, categorical," in message
    assert "\n" not in message, "one problem: mu and sigma are W&B's options of the refused distribution"


def test_q_log_uniform_values_is_a_categorical_of_the_multiples_with_wandbs_probabilities(tmp_path: Path) -> None:
    """W&B's documentation example: batch_size q_log_uniform_values 32..256, q 8."""
    (param,) = load(tmp_path, parameters={"batch_size": {"distribution": "q_log_uniform_values", "min": 32,
                                                         "max": 256, "q": 8}}).params
    assert (param.distribution, param.declared) == ("categorical", "q_log_uniform_values")
    assert param.values == tuple(range(32, 257, 8)) and all(type(v) is int for v in param.values)
    assert math.isclose(sum(param.probabilities), 1.0)
    span = math.log(256 / 32)
    # 32 takes [32, 36) of the log range, 40 takes [36, 44), 256 takes [252, 256]
    assert math.isclose(param.probabilities[0], math.log(36 / 32) / span)
    assert math.isclose(param.probabilities[1], math.log(44 / 36) / span)
    assert math.isclose(param.probabilities[-1], math.log(256 / 252) / span)
    assert param.boundary_values() == [32, 256] and param.value_range() == (32, 256)


def test_q_log_uniform_takes_exponents(tmp_path: Path) -> None:
    (param,) = load(tmp_path, parameters={"lr": {"distribution": "q_log_uniform", "min": math.log(0.001),
                                                 "max": math.log(0.01), "q": 0.001}}).params
    assert param.values == tuple(round(0.001 * k, 12) for k in range(1, 11))
    assert param.probabilities[0] < param.probabilities[1]  # 0.001 takes only [0.001, 0.0015)


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"values": [4, 8], "probabilities": [1.0]}, "parameters.N_dim.probabilities has 1 number(s) for 2 value(s)"),
    ({"values": [4, 8], "probabilities": [0.5, 0.6]}, "parameters.N_dim.probabilities=[0.5, 0.6] sum to 1.1, not 1"),
    ({"values": [4, 8], "probabilities": [1.5, -0.5]}, "must not be negative"),
    ({"values": [4, 8], "probabilities": "0.5,0.5"}, "must be a list of numbers, one per value"),
    ({"distribution": "categorical_w_probabilities", "values": [4, 8]}, "categorical_w_probabilities needs probabilities"),
    ({"min": 4, "max": 8, "probabilities": [1.0]}, "probabilities weigh the values of a categorical, not a int_uniform"),
    ({"distribution": "q_log_uniform_values", "min": 1, "max": 5000, "q": 1}, "takes 5000 multiples of q=1: at most 1000"),
    ({"distribution": "q_log_uniform_values", "min": 4, "max": 8, "q": 0.5}, "N_dim is an integer; q_log_uniform_values"),
    ({"distribution": "inv_log_uniform_values", "min": 0, "max": 8}, "inv_log_uniform_values needs min > 0"),
    ({"distribution": "uniform", "min": 4.0, "max": 8.0, "q": 2}, "q quantizes int_uniform and the q_ distributions"),
    ({"parameters": {"a": {"value": 1}}}, "parameters.N_dim.parameters: W&B's nested parameters have no cvae train key"),
], ids=["length", "sum", "negative", "not-a-list", "w_probabilities-without", "on-a-range", "too-many-multiples",
        "non-integer-multiples", "inv-min-zero", "q-on-uniform", "nested"])
def test_wandb_parameter_errors(tmp_path: Path, raw: dict, fragment: str) -> None:
    assert fragment in error(tmp_path, parameters={"N_dim": raw})


def test_probabilities_within_the_tolerance_are_accepted(tmp_path: Path) -> None:
    (param,) = load(tmp_path, parameters={"N_dim": {"values": [4, 8, 12], "probabilities": [0.3333333, 0.3333333,
                                                                                          0.3333333]}}).params
    assert len(param.probabilities) == 3


def test_unknown_distribution_is_rejected(tmp_path: Path) -> None:
    message = error(tmp_path, parameters={"lr": {"distribution": "gaussian", "min": 0.1, "max": 0.2}})
    assert "parameters.lr.distribution='gaussian' is unknown" in message


# -- validation: one behaviour per row ------------------------------------------------------------------

VALIDATION_ERRORS = [
    pytest.param(dict(replicate=2), ["unknown key(s) replicate; valid keys: name, description, method",
                                     "replicates"], id="unknown-top-level-key"),
    pytest.param(dict(parameters={"N_dim": {"values": [4], "vals": [8]}}),
                 ["parameters.N_dim: unknown key(s) vals; valid keys: value, values, distribution, min, max, q, when"],
                 id="unknown-parameter-key"),
    pytest.param(dict(parameters={"learning_rate": {"values": [0.1]}}),
                 ["parameters.learning_rate: 'learning_rate' is not a cvae train key", "valid keys:", "lr"],
                 id="not-a-training-key"),
    pytest.param(dict(parameters={"N_dim": {"values": []}}), ["parameters.N_dim.values is empty"], id="empty-values"),
    pytest.param(dict(parameters={"lr": {"min": 0.1, "max": 0.01}}), ["parameters.lr: min=0.1 > max=0.01"],
                 id="min-above-max"),
    pytest.param(dict(method="grid", parameters={"lr": {"distribution": "uniform", "min": 0.001, "max": 0.01}}),
                 ["parameters.lr: method grid needs values", "continuous uniform distribution"], id="grid-uniform"),
    pytest.param(dict(method="grid", parameters={"lr": {"distribution": "log_uniform_values", "min": 0.001,
                                                        "max": 0.01}}),
                 ["parameters.lr: method grid needs values", "continuous log_uniform_values"], id="grid-log-uniform"),
    pytest.param(dict(parameters={"kl_anneal_type": {"values": ["cyclical", "none"]},
                                  "kl_anneal_cycle": {"values": [2], "when": {"kl_anneal_typ": ["cyclical"]}}}),
                 ["parameters.kl_anneal_cycle.when names unknown parameter 'kl_anneal_typ'",
                  "parameters: kl_anneal_type, kl_anneal_cycle"], id="when-unknown-parameter"),
    pytest.param(dict(parameters={"kl_anneal_cycle": {"values": [2], "when": {"kl_anneal_type": ["cyclical"]}},
                                  "kl_anneal_type": {"values": ["cyclical", "none"]}}),
                 ["parameters.kl_anneal_cycle.when names 'kl_anneal_type', which must be declared above it"],
                 id="when-declared-below"),
    pytest.param(dict(parameters={"kl_anneal_type": {"values": ["cyclical", "none"]},
                                  "kl_anneal_cycle": {"values": [2], "when": {"kl_anneal_type": ["hybrid"]}}}),
                 ["parameters.kl_anneal_cycle.when: kl_anneal_type never takes ['hybrid']"], id="when-value-never-taken"),
    pytest.param(dict(run_cap=0), ["run_cap=0 must be an integer >= 1"], id="run-cap-zero"),
    pytest.param(dict(method="grid", grid_order="random"), ["grid_order='random' is not listed or shuffled"],
                 id="bad-grid-order"),
    pytest.param(dict(grid_order="shuffled"), ["grid_order applies to method grid only, not random"],
                 id="grid-order-without-grid"),
    pytest.param(dict(method="bohb"), ["method='bohb' is not one of grid, random, bayes"], id="unknown-method"),
    pytest.param(dict(storage="redis://localhost/0"), ["storage='redis://localhost/0' must be sqlite:///PATH"],
                 id="bad-storage-url"),
    pytest.param(dict(wandb={"mode": "cloud"}), ["wandb.mode='cloud' is not auto, online, offline or disabled"],
                 id="bad-wandb-mode"),
    pytest.param(dict(wandb={"project": "p", "team": "x"}), ["wandb: unknown key(s) team; valid keys: project"],
                 id="unknown-wandb-key"),
    pytest.param(dict(early_terminate={"type": "envelope", "min_iter": 2}),
                 ["early_terminate.type='envelope': W&B's only type is hyperband"], id="early-terminate-not-hyperband"),
    pytest.param(dict(early_terminate={"type": "hyperband"}), ["early_terminate needs min_iter or max_iter"],
                 id="early-terminate-without-iters"),
    pytest.param(dict(early_terminate={"type": "hyperband", "min_iter": 2}, pruner={"type": "median"}),
                 ["give early_terminate (W&B) or pruner (Optuna), not both"], id="early-terminate-and-pruner"),
    pytest.param(dict(pruner={"type": "asha"}), ["pruner.type='asha' is not one of none, median"], id="bad-pruner"),
    pytest.param(dict(pruner={"type": "percentile"}), ["pruner.type percentile needs percentile"],
                 id="percentile-without-percentile"),
    pytest.param(dict(base={**BASE, "wandb_project": "p"}),
                 ["base: wandb_project set by the sweep for every trial (a trial's W&B run follows the spec's "
                  "wandb section)"], id="wandb-key-in-base"),
    pytest.param(dict(base={**BASE, "save_root": "runs/x"}), ["base: save_root set by the sweep for every trial"],
                 id="save-root-in-base"),
    pytest.param(dict(parameters={"save_root": {"values": ["a", "b"]}}),
                 ["parameters.save_root: save_root is set by the sweep for every trial"], id="save-root-in-parameters"),
    pytest.param(dict(parameters={"resume": {"values": [True, False]}}),
                 ["parameters.resume: resume is set by the sweep"], id="resume-in-parameters"),
    pytest.param(dict(base={**BASE, "learning_rate": 0.1}), ["base: unknown key(s) learning_rate; valid keys:"],
                 id="unknown-base-key"),
    pytest.param(dict(parameters={"lr": {"distribution": "log_uniform_values", "min": 0, "max": 0.1}}),
                 ["parameters.lr: log_uniform_values needs min > 0"], id="log-uniform-values-min-zero"),
    pytest.param(dict(parameters={"tfr": {"distribution": "q_uniform", "min": 0.5, "max": 0.25, "q": 0.25}}),
                 ["parameters.tfr: min=0.5 > max=0.25"], id="q-uniform-min-above-max"),
    pytest.param(dict(parameters={"N_dim": {"distribution": "int_uniform", "min": 4, "max": 8.5}}),
                 ["parameters.N_dim: int_uniform needs integer min/max/q"], id="int-uniform-float-bound"),
    pytest.param(dict(parameters={"N_dim": {"distribution": "uniform"}}),
                 ["parameters.N_dim: distribution uniform needs min and max"], id="range-without-bounds"),
    pytest.param(dict(parameters={"N_dim": 8}), ["parameters.N_dim: expected a mapping"], id="bare-parameter-value"),
    pytest.param(dict(name="# ?!"), ["name='# ?!' has no letter or digit"], id="name-without-a-letter"),
    pytest.param(dict(name="x" * 101), ["makes a study name of 101 characters: at most 100"], id="name-too-long"),
    pytest.param(dict(name="Sweep " * 20), ["makes a study name of 119 characters"], id="slug-too-long"),
    pytest.param(dict(name=["a"]), ["name=['a'] must be text"], id="name-not-text"),
    pytest.param(dict(heartbeat={"interval": 30, "grace": 30}),
                 ["heartbeat.grace=30 must be greater than heartbeat.interval=30"], id="grace-not-above-interval"),
]


@pytest.mark.parametrize(("overrides", "expected"), VALIDATION_ERRORS)
def test_validation_error(tmp_path: Path, overrides: dict, expected: list[str]) -> None:
    message = error(tmp_path, **overrides)
    for text in expected:
        assert text in message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        colour="blue",
        parameters={"N_dim": {"values": []}, "lr": {"min": 0.1, "max": 0.01}, "learning_rate": {"value": 1}},
        wandb={"mode": "cloud"},
        storage="redis://x",
        run_cap=0,
    )
    expected = ["unknown key(s) colour", "parameters.N_dim.values is empty", "parameters.lr: min=0.1 > max=0.01",
                "'learning_rate' is not a cvae train key", "wandb.mode='cloud'", "storage='redis://x'",
                "run_cap=0 must be an integer >= 1"]
    lines = message.split("\n")
    assert len(lines) == len(expected), "one line per problem"
    for text in expected:
        (line,) = [line for line in lines if text in line]
        assert line.startswith(f"{tmp_path / 'spec.yaml'}: "), "each line names the file"


def test_the_trials_own_checks_come_in_the_same_pass_as_the_specs_other_problems(tmp_path: Path) -> None:
    # What cvae train would refuse in a trial (batch_size -4) and a pruner that cannot be built came only once
    # every other problem was fixed; now all in one message, one line each.
    message = error(
        tmp_path,
        colour="blue",
        method="grid",
        run_cap=DROP,
        parameters={"batch_size": {"values": [-4, 8]}, "learning_rate": {"value": 1}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 1},
    )
    expected = ["unknown key(s) colour", "'learning_rate' is not a cvae train key",
                "early_terminate.eta=1 must be an integer >= 2",
                "trials would be rejected by cvae train: batch_size must be >= 1 (got -4)"]
    lines = message.split("\n")
    assert len(lines) == len(expected), message
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, message)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\nmethod: random\nparameters:\n  N_dim: {values: [4, 8}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: invalid YAML at line 4, column 24")


@pytest.mark.parametrize(("text", "expected"), [
    ("- a\n- b\n", "a sweep spec must be a mapping"),
    ("", "a sweep spec must be a mapping"),
])
def test_spec_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read sweep spec"):
        load_spec(tmp_path / "nope.yaml")


# -- trial configs cvae train would reject --------------------------------------------------------------

def test_tfr_sde_not_below_num_epoch_is_accepted_with_one_warning(tmp_path: Path) -> None:
    spec = load(tmp_path, base={**BASE, "tfr_sde": 4})
    (message,) = [w for w in spec.warnings if "tfr_sde" in w]
    assert message.startswith("tfr_sde=4 >= num_epoch=4: the teacher-forcing ratio stays at tfr=1.0")


@pytest.mark.parametrize("fix", [{"tfr": 0.0}, {"tfr_d_step": 0}], ids=["tfr-zero", "no-decay"])
def test_tfr_sde_not_below_num_epoch_is_fine_without_a_decay(tmp_path: Path, fix: dict) -> None:
    spec = load(tmp_path, base={**BASE, "tfr_sde": 4, **fix})
    assert spec.base["tfr_sde"] == 4


def test_a_swept_num_epoch_below_tfr_sde_is_warned_about_with_its_share(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", base={**BASE, "tfr_sde": 3}, parameters={"num_epoch": {"values": [2, 8]}})
    (message,) = [w for w in spec.warnings if "tfr_sde" in w]
    assert message.startswith("tfr_sde=3 >= num_epoch=2")
    assert message.endswith("(1 of 2 trial configs, e.g. {'num_epoch': 2})")


def test_a_grid_value_out_of_range_is_rejected(tmp_path: Path) -> None:
    message = error(tmp_path, method="grid", parameters={"tfr": {"values": [0.5, 1.5]}})
    assert "trials would be rejected by cvae train" in message
    assert "tfr must be in [0, 1] (got 1.5)" in message


def test_a_random_range_beyond_the_valid_one_is_rejected(tmp_path: Path) -> None:
    message = error(tmp_path, parameters={"tfr": {"distribution": "uniform", "min": 0.5, "max": 1.2}})
    assert "tfr must be in [0, 1] (got 1.2)" in message


def test_a_log_uniform_range_is_checked_at_its_values_not_its_exponents(tmp_path: Path) -> None:
    # exp(-1) and exp(0) = 1 are valid tfr values, although the exponent -1 is not.
    spec = load(tmp_path, parameters={"tfr": {"distribution": "log_uniform", "min": -1, "max": 0}})
    assert spec.params[0].boundary_values() == pytest.approx([math.exp(-1), 1.0])
    message = error(tmp_path, parameters={"tfr": {"distribution": "log_uniform", "min": -1, "max": 0.5}})
    assert "tfr must be in [0, 1]" in message


def test_a_conditional_value_is_checked_only_where_it_applies(tmp_path: Path) -> None:
    # tfr=1 with tfr_sde=6 >= num_epoch=4 is a decay that never starts (a warning), but it only applies with
    # tfr_d_step 0 (no decay) in the first spec.
    params = {"tfr_d_step": {"values": [0, 0.1]}, "tfr_sde": {"values": [6], "when": {"tfr_d_step": [0]}}}
    spec = load(tmp_path, method="grid", parameters=params)
    assert spec.grid() == [{"tfr_d_step": 0, "tfr_sde": 6}, {"tfr_d_step": 0.1}]
    assert not [w for w in spec.warnings if "tfr_sde" in w]
    params["tfr_sde"]["when"] = {"tfr_d_step": [0.1]}
    spec = load(tmp_path, method="grid", parameters=params)
    (message,) = [w for w in spec.warnings if "tfr_sde" in w]
    assert message.startswith("tfr_sde=6 >= num_epoch=4") and "(1 of 2 trial configs" in message


# -- grid -----------------------------------------------------------------------------------------------

def test_grid_expands_conditional_branches(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", run_cap=DROP, parameters=KL_GRID)
    expected = [
        {"kl_anneal_type": t, "N_dim": n, **({"kl_anneal_cycle": c} if t == "cyclical" else {})}
        for t in ["cyclical", "monotonic", "none"] for n in [12, 32] for c in ([4, 10] if t == "cyclical" else [None])
    ]
    grid = spec.grid()
    assert len(grid) == 2 * 2 + 2 * 1 + 2 * 1 == 8
    assert grid == expected
    assert all(("kl_anneal_cycle" in point) == (point["kl_anneal_type"] == "cyclical") for point in grid)
    assert spec.n_configs() == 8


@pytest.mark.parametrize(("run_cap", "n"), [(DROP, 8), (5, 5), (8, 8), (20, 8)])
def test_n_configs_of_a_grid_honours_run_cap(tmp_path: Path, run_cap: Any, n: int) -> None:
    assert load(tmp_path, method="grid", run_cap=run_cap, parameters=KL_GRID).n_configs() == n


def test_a_listed_grid_runs_in_its_listed_order(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", run_cap=5, parameters=KL_GRID)
    assert spec.grid_order == "listed"
    assert spec.grid_points() == list(enumerate(spec.grid()))[:5]


def test_a_shuffled_grid_is_a_seeded_permutation_cut_by_run_cap(tmp_path: Path) -> None:
    grid = load(tmp_path, method="grid", run_cap=DROP, parameters=KL_GRID).grid()
    order = load(tmp_path, method="grid", run_cap=DROP, parameters=KL_GRID, grid_order="shuffled", seed=3).grid_points()
    assert sorted(i for i, _ in order) == list(range(8))            # every point once, with its listed index
    assert all(grid[i] == point for i, point in order)
    assert [i for i, _ in order] != list(range(8))                    # seed 3 moves them (8! orders)
    again = load(tmp_path, method="grid", run_cap=DROP, parameters=KL_GRID, grid_order="shuffled", seed=3)
    assert again.grid_points() == order                               # the same seed, the same order
    other = load(tmp_path, method="grid", run_cap=DROP, parameters=KL_GRID, grid_order="shuffled", seed=4)
    assert other.grid_points() != order
    capped = load(tmp_path, method="grid", run_cap=5, parameters=KL_GRID, grid_order="shuffled", seed=3)
    assert capped.grid_points() == order[:5] and capped.n_configs() == 5   # a random subset; a raised cap extends it


@pytest.mark.parametrize("method", ["random", "tpe", "qmc"])
def test_n_configs_of_a_search_is_run_cap(tmp_path: Path, method: str) -> None:
    assert load(tmp_path, method=method, run_cap=7, parameters=KL_GRID).n_configs() == 7


@pytest.mark.parametrize(("raw", "values"), [
    ({"distribution": "int_uniform", "min": 4, "max": 16, "q": 4}, [4, 8, 12, 16]),
    ({"min": 4, "max": 7}, [4, 5, 6, 7]),
    ({"value": 12}, [12]),
    ({"values": [12, 12, 32]}, [12, 32]),
])
def test_grid_values_of_finite_distributions(tmp_path: Path, raw: dict, values: list) -> None:
    spec = load(tmp_path, method="grid", parameters={"N_dim": raw})
    assert spec.grid() == [{"N_dim": v} for v in values]


def test_grid_of_a_q_uniform_is_its_q_steps(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", parameters={"tfr": {"distribution": "q_uniform", "min": 0, "max": 1,
                                                             "q": 0.25}})
    assert [p["tfr"] for p in spec.grid()] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_grid_is_a_product_in_spec_order(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", parameters={"N_dim": {"values": [4, 8]}, "lr": {"values": [0.1, 0.01]},
                                                     "F_dim": {"value": 16}})
    assert spec.grid() == [{"N_dim": n, "lr": lr, "F_dim": 16} for n in [4, 8] for lr in [0.1, 0.01]]


# -- trial configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("base_seed", "replicate", "seed"), [(None, 0, 1), (None, 2, 3), (7, 0, 7), (7, 3, 10)])
def test_trial_config(tmp_path: Path, base_seed: int | None, replicate: int, seed: int) -> None:
    base = {**BASE, "lr": 0.002} if base_seed is None else {**BASE, "lr": 0.002, "seed": base_seed}
    spec = load(tmp_path, base=base, parameters={"N_dim": {"values": [4, 8]}, "lr": {"values": [0.01]}})
    cfg = spec.trial_config({"N_dim": 8, "lr": 0.01}, save_root=tmp_path / "t1", replicate=replicate)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.N_dim == 8 and cfg.optim.lr == 0.01  # params win over base
    assert cfg.model.F_dim == 16 and cfg.run.num_epoch == 4 and cfg.data.DR == "data"  # base kept
    assert cfg.run.seed == seed
    assert cfg.run.save_root == str(tmp_path / "t1")
    assert cfg.run.resume is True
    assert cfg.run.progress is False
    assert cfg.run.num_threads is None


@pytest.mark.parametrize(("metric", "base", "params", "at"), [
    ({"name": "val/psnr", "summary": "last"}, {}, {}, "last"),
    ({"name": "val/psnr"}, {}, {}, "best"),  # summary best, the default
    ({"name": "val/psnr", "summary": "last"}, {"val_eval_at": "none"}, {}, "none"),  # the spec's own choice wins
    ({"name": "val/psnr"}, {}, {"val_eval_at": {"values": ["last"]}}, "last"),
])
def test_a_trial_is_evaluated_in_full_at_the_epoch_its_metric_judges(tmp_path: Path, metric: dict, base: dict,
                                                                     params: dict, at: str) -> None:
    spec = load(tmp_path, metric=metric, base={**BASE, **base}, parameters={"N_dim": {"values": [4]}, **params})
    chosen = {"N_dim": 4, **{k: v["values"][0] for k, v in params.items()}}
    cfg = spec.trial_config(chosen, save_root="x")
    assert cfg.run.val_eval_at == at and cfg.run.val_eval_every == "auto"


def test_trial_config_num_threads(tmp_path: Path) -> None:
    cfg = load(tmp_path).trial_config({"N_dim": 4}, save_root="x", num_threads=2)
    assert cfg.run.num_threads == 2


def test_every_grid_point_is_a_valid_trial_config(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", parameters=KL_GRID)
    configs = [spec.trial_config(p, save_root=tmp_path / str(i)) for i, p in enumerate(spec.grid())]
    assert [c.schedule.kl_anneal_type for c in configs].count("cyclical") == 4
    assert {(c.schedule.kl_anneal_cycle, c.model.N_dim) for c in configs
            if c.schedule.kl_anneal_type == "cyclical"} == {(4, 12), (10, 12), (4, 32), (10, 32)}


# -- base as a file -------------------------------------------------------------------------------------

def test_base_path_is_relative_to_the_spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs" / "configs").mkdir(parents=True)
    (tmp_path / "specs" / "configs" / "base.yaml").write_text(yaml.safe_dump({**BASE, "lr": 0.003}))
    path = write(tmp_path / "specs", minimal(base="configs/base.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(path)
    assert dict(spec.base) == {**BASE, "lr": 0.003}
    assert spec.trial_config({"N_dim": 8}, save_root="x").optim.lr == 0.003


def test_base_path_absolute(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    (tmp_path / "specs").mkdir()
    assert dict(load_spec(write(tmp_path / "specs", minimal(base=str(base)))).base) == BASE


def test_missing_base_file_is_reported(tmp_path: Path) -> None:
    message = error(tmp_path, base="configs/none.yaml")
    assert f"base: {tmp_path / 'configs' / 'none.yaml'}: cannot read config file" in message


def test_base_file_setting_save_root_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "save_root": "runs/small"}))
    assert "base: save_root set by the sweep" in error(tmp_path, base="base.yaml")


# -- bugs: a spec that loads must run ---------------------------------------------------------------------

@pytest.mark.parametrize("key, raw", [
    ("N_dim", {"distribution": "uniform", "min": 4, "max": 32}),
    ("N_dim", {"min": 4.0, "max": 32.0}),
    ("batch_size", {"distribution": "log_uniform_values", "min": 1, "max": 8}),
])
def test_a_continuous_range_over_an_integer_key_is_rejected_or_yields_valid_trials(
        tmp_path: Path, key: str, raw: dict) -> None:
    try:
        spec = load(tmp_path, parameters={key: raw})
    except SpecError as err:
        assert f"parameters.{key}" in str(err)
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        spec.trial_config(suggest_all(study.ask(), spec), save_root=tmp_path / "t")


def test_a_bad_base_seed_is_a_spec_error(tmp_path: Path) -> None:
    message = error(tmp_path, base={**BASE, "seed": "abc"})
    assert "seed" in message


def test_a_categorical_over_a_list_valued_key(tmp_path: Path) -> None:
    # Optuna's categorical choices are scalars: lists are refused clearly, strings are the way.
    message = error(tmp_path, method="grid", parameters={"lr_milestones": {"values": [[2, 5], [3]]}})
    assert "parameters.lr_milestones.values must be scalars" in message and "'2,5'" in message
    spec = load(tmp_path, method="grid", parameters={"lr_milestones": {"values": ["2,5", "3"]}})
    assert len(spec.grid()) == 2
    assert spec.trial_config(spec.grid()[0], save_root="x").optim.lr_milestones == (2, 5)


def test_a_conditional_on_a_middle_value_of_a_long_categorical_is_checked(tmp_path: Path) -> None:
    params = {"N_dim": {"values": list(range(4, 24))}, "tfr": {"values": [1.5], "when": {"N_dim": [10]}}}
    assert "tfr must be in [0, 1] (got 1.5)" in error(tmp_path, parameters=params)


@pytest.mark.parametrize("overrides", [
    dict(pruner={"type": "median", "reduction_factor": 3}),
    dict(pruner={"type": "successive_halving", "percentile": 25}),
    dict(method="tpe", sampler={"scramble": True}),
    dict(method="gp", sampler={"constant_liar": True}),
], ids=["median-reduction_factor", "successive_halving-percentile", "tpe-scramble", "gp-constant_liar"])
def test_pruner_and_sampler_options_are_checked_for_their_type(tmp_path: Path, overrides: dict) -> None:
    try:
        spec = load(tmp_path, **overrides)
    except SpecError as err:
        assert ("pruner" if "pruner" in overrides else "sampler") in str(err)
        return
    make_pruner(spec, num_epoch=4)
    make_sampler(spec)


# -- named choices (sets:): one value sets several training keys, as the reports' TF1/TF2/KL4 do ----------
TF_SETS = {"TF1": {"tfr": 1.0, "tfr_sde": 0, "tfr_d_step": 0.1}, "TF2": {"tfr": 0.5, "tfr_sde": 2, "tfr_d_step": 0.05},
           "TF3": {"tfr": 0.0}}


def test_named_choice_sets_its_keys_in_the_trial_config(tmp_path: Path) -> None:
    spec = load(tmp_path, method="grid", parameters={
        "tf": {"values": ["TF1", "TF2", "TF3"], "sets": TF_SETS}, "N_dim": {"values": [4, 8]}})
    assert len(spec.grid()) == 6 and spec.grid()[0] == {"tf": "TF1", "N_dim": 4}
    cfg = spec.trial_config({"tf": "TF2", "N_dim": 8}, save_root="x")
    assert (cfg.schedule.tfr, cfg.schedule.tfr_sde, cfg.schedule.tfr_d_step, cfg.model.N_dim) == (0.5, 2, 0.05, 8)


@pytest.mark.parametrize(("param", "fragment"), [
    ({"values": ["TF1", "TF9"], "sets": TF_SETS}, "parameters.tf.sets has no entry for value 'TF9'"),
    ({"values": ["TF1"], "sets": {"TF1": {"learning_rate": 1}}}, "parameters.tf.sets.TF1: unknown training key(s) learning_rate"),
    ({"values": ["TF1"], "sets": {"TF1": {"save_root": "x"}}}, "parameters.tf.sets.TF1: save_root set by the sweep"),
    ({"values": ["TF1"], "sets": {"TF1": {"tfr": 1.5}}}, "tfr must be in [0, 1] (got 1.5)"),
])
def test_named_choice_errors(tmp_path: Path, param: dict, fragment: str) -> None:
    assert fragment in error(tmp_path, method="grid", parameters={"tf": param})


def test_a_named_choice_may_not_reuse_a_training_key(tmp_path: Path) -> None:
    assert "needs a name that is not a training key" in error(
        tmp_path, method="grid", parameters={"tfr": {"values": ["TF1"], "sets": TF_SETS}})


def test_a_password_in_the_spec_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, storage="postgresql+psycopg2://cvae:hunter2@db/sweeps")
    assert "must not hold a password" in message and "CVAE_DB_PASSWORD" in message
    assert "hunter2" not in message
    assert load(tmp_path, storage="postgresql+psycopg2://cvae@db/sweeps").storage.endswith("cvae@db/sweeps")


# -- the typed sections: each section parses into its dataclass, its problems named by file and key ---------

def test_sections_are_typed(tmp_path: Path) -> None:
    spec = load(tmp_path, metric={"name": "val/loss", "summary": "last", "target": 0.1},
                wandb={"project": "p", "entity": "lab", "mode": "offline", "tags": ["a", 2]},
                heartbeat={"interval": 5, "grace": 20}, method="tpe",
                sampler={"n_startup_trials": 3, "multivariate": True},
                pruner={"type": "median", "n_warmup_steps": 2},
                synth={"train_frames": 64, "size": "32x48", "dancers": 1, "backgrounds": 4, "spotlight": True})
    assert spec.metric == MetricSpec(name="val/loss", goal="minimize", summary="last", target=0.1)  # the goal follows a loss
    assert (spec.metric.field, spec.metric.goal) == ("val_loss", "minimize")
    assert spec.wandb == WandbSpec(project="p", entity="lab", mode="offline", tags=("a", "2"))
    assert spec.heartbeat == HeartbeatSpec(interval=5, grace=20) and (spec.heartbeat.interval, spec.heartbeat.grace) == (5, 20)
    assert spec.sampler == SamplerSpec(n_startup_trials=3, multivariate=True)
    assert spec.pruner == PrunerSpec(type="median", n_warmup_steps=2) and spec.pruner.options == {"n_warmup_steps": 2}
    assert spec.synth == SynthSpec(train_frames=64, size=(32, 48), dancers=1, backgrounds=4, spotlight=True)
    # a synth section reads as the keyword arguments of generate_dataset, only those given
    assert dict(spec.synth) == {"train_frames": 64, "size": (32, 48), "dancers": 1, "backgrounds": 4,
                                "spotlight": True}
    assert (spec.synth.frames("train"), spec.synth.frames("val")) == (64, None)


@pytest.mark.parametrize(("size", "expected"), [("64x128", (64, 128)), ("16X16", (16, 16)), ([32, 64], (32, 64))])
def test_synth_size_forms(tmp_path: Path, size: Any, expected: tuple[int, int]) -> None:
    assert load(tmp_path, synth={"size": size}).synth.size == expected


def test_an_empty_synth_is_none(tmp_path: Path) -> None:
    assert load(tmp_path, synth={}).synth is None


SECTION_ERRORS = [
    pytest.param(dict(metric={"name": ["val/psnr"]}), "metric.name=['val/psnr'] is not one of val/psnr",
                 id="metric-name-not-a-string"),
    pytest.param(dict(metric={"name": "val/psnr", "goal": "up"}), "metric.goal='up' is not maximize or minimize",
                 id="metric-goal"),
    pytest.param(dict(metric={"summary": "mean"}), "metric.summary='mean' is not best or last", id="metric-summary"),
    pytest.param(dict(metric="val/psnr"), "metric must be a mapping, got 'val/psnr'", id="metric-not-a-mapping"),
    pytest.param(dict(wandb={"tags": "a,b"}), "wandb.tags='a,b' must be a list of strings", id="wandb-tags"),
    pytest.param(dict(wandb={"project": ""}), "wandb.project='' must be a non-empty string", id="wandb-project"),
    pytest.param(dict(wandb={"entity": 3}), "wandb.entity=3 must be a non-empty string", id="wandb-entity"),
    pytest.param(dict(heartbeat={"interval": 0}), "heartbeat.interval=0 must be an integer >= 1", id="heartbeat"),
    pytest.param(dict(sampler={"temperature": 1}), "sampler: unknown key(s) temperature; valid keys: seed",
                 id="sampler-key"),
    pytest.param(dict(pruner="median"), "pruner must be a mapping, got 'median'", id="pruner-not-a-mapping"),
    pytest.param(dict(synth={"frames": 8}), "synth: unknown key(s) frames; valid keys: train_frames",
                 id="synth-key"),
    pytest.param(dict(synth={"train_frames": 0}), "synth.train_frames=0 must be an integer >= 1", id="synth-frames"),
    pytest.param(dict(synth={"test_frames": 1}), "synth.test_frames=1 must be an integer >= 2", id="synth-test-frames"),
    pytest.param(dict(synth={"size": "64 by 128"}), "synth.size='64 by 128': must be HxW (e.g. 64x128) or [H, W]",
                 id="synth-size"),
    pytest.param(dict(synth={"size": [8, 64]}), "synth.size=[8, 64]: each side must be >= 16", id="synth-size-small"),
    pytest.param(dict(synth={"progress": "yes"}), "synth.progress='yes' must be true or false", id="synth-progress"),
    pytest.param(dict(synth={"spotlight": 1}), "synth.spotlight=1 must be true or false", id="synth-spotlight"),
    pytest.param(dict(synth={"backgrounds": 0}), "synth.backgrounds", id="synth-backgrounds"),
    pytest.param(dict(synth={"lighting": "on"}), "synth.lighting='on' must be true or false", id="synth-lighting"),
    pytest.param(dict(synth=[1]), "synth must be a mapping of `cvae data synth` options, got [1]", id="synth-list"),
]


@pytest.mark.parametrize(("overrides", "expected"), SECTION_ERRORS)
def test_section_error(tmp_path: Path, overrides: dict, expected: str) -> None:
    assert expected in error(tmp_path, **overrides)


def test_a_pruner_section_given_as_a_mapping_is_read_as_a_spec_reads_it() -> None:
    assert PrunerSpec.of({"type": "hyperband", "min_resource": 2}) == PrunerSpec(type="hyperband", min_resource=2)
    with pytest.raises(ValueError, match=r"pruner.type='asha' is not one of none"):
        PrunerSpec.of({"type": "asha"})


def test_a_synth_section_feeds_the_generator(tmp_path: Path) -> None:
    from cvae.core.synth import generate_dataset

    spec = load(tmp_path, synth={"train_frames": 4, "train_video_len": 4, "val_frames": 2, "test_sequences": 1,
                                 "test_frames": 2, "size": "16x16"})
    summary = generate_dataset(tmp_path / "data", **spec.synth)
    assert summary["size"] in ((16, 16), [16, 16]) and summary["train_frames"] == 4


def test_the_synth_section_and_the_generator_have_the_same_options() -> None:
    import inspect

    from cvae.core.synth import MINIMUMS, generate_dataset
    from cvae.sweeps.spec_types import SynthSpec

    keywords = [p for p in inspect.signature(generate_dataset).parameters if p != "out"]
    assert sorted(SynthSpec.option_names()) == sorted(keywords)  # one option added to one must reach the other
    assert set(MINIMUMS) <= set(keywords)
    # ... and `cvae data synth`'s flags are made from the same signature, with its defaults
    from cvae.cli import build_parser

    parser = build_parser()
    data = next(a for a in parser._subparsers._group_actions[0].choices["data"]._actions if a.dest == "data_command")
    flags = {a.dest: a.default for a in data.choices["synth"]._actions if a.dest not in ("help", "out")}
    defaults = {k: p.default for k, p in inspect.signature(generate_dataset).parameters.items() if k != "out"}
    assert set(flags) == set(keywords) - {"progress"}
    assert {k: v for k, v in flags.items() if k != "size"} == {k: defaults[k] for k in flags if k != "size"}
    assert flags["size"] == "x".join(map(str, defaults["size"]))


# -- num_epoch knows when it is swept ------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "expected"), [
    pytest.param({}, NumEpoch(4), id="base"),
    pytest.param(dict(base={k: v for k, v in BASE.items() if k != "num_epoch"} | {"tfr_sde": 1}), NumEpoch(70),
                 id="cvae-train-default"),
    pytest.param(dict(parameters={"num_epoch": {"values": [6, 12, 3]}}), NumEpoch(4, (3, 12), False), id="values"),
    pytest.param(dict(parameters={"num_epoch": {"min": 2, "max": 11, "q": 3}}), NumEpoch(4, (2, 11), False),
                 id="int_uniform-q"),
    pytest.param(dict(parameters={"num_epoch": {"min": 2, "max": 12, "q": 3}}), NumEpoch(4, (2, 11), False),
                 id="int_uniform-q-last-step-below-max"),
    pytest.param(dict(parameters={"num_epoch": {"distribution": "log_uniform_values", "min": 2, "max": 40}}),
                 NumEpoch(4, (2, 40), False), id="log_uniform_values"),
    pytest.param(dict(parameters={"N_dim": {"values": [4, 8]}, "num_epoch": {"values": [9], "when": {"N_dim": [8]}}}),
                 NumEpoch(4, (9, 9), True), id="conditional"),
    pytest.param(dict(parameters={"run": {"values": ["short", "long"], "sets": {"short": {"num_epoch": 2},
                                                                             "long": {"num_epoch": 20}}}}),
                 NumEpoch(4, (2, 20), False), id="named-choice"),
    pytest.param(dict(parameters={"run": {"values": ["short", "base"], "sets": {"short": {"num_epoch": 2},
                                                                             "base": {"lr": 0.001}}}}),
                 NumEpoch(4, (2, 2), True), id="named-choice-partly"),
])
def test_num_epoch(tmp_path: Path, overrides: dict, expected: NumEpoch) -> None:
    num_epoch = load(tmp_path, **overrides).num_epoch
    assert num_epoch == expected
    assert num_epoch.is_swept == (expected.swept is not None)


def test_num_epoch_min_and_max() -> None:
    assert (NumEpoch(4).min, NumEpoch(4).max) == (4, 4)
    assert (NumEpoch(4, (6, 12), False).min, NumEpoch(4, (6, 12), False).max) == (6, 12)
    assert (NumEpoch(4, (6, 12), True).min, NumEpoch(4, (2, 3), True).max) == (4, 4)


# -- W&B's keys: a stock sweep file runs unchanged --------------------------------------------------------------

@pytest.mark.parametrize(("name", "slug"), [
    ("My KL sweep #2", "my-kl-sweep-2"),
    ("  Ablation: N_dim (12 vs 32)  ", "ablation-n_dim-12-vs-32"),
    ("Émile's sweep", "emile-s-sweep"),
    (2024, "2024"),
])
def test_a_free_text_name_is_slugged_for_the_study_and_the_folders(tmp_path: Path, name: Any, slug: str) -> None:
    spec = load(tmp_path, name=name)
    assert spec.name == slug
    assert spec.title == str(name).strip()
    assert spec.display_name == ("" if slug == str(name) else str(name).strip())
    assert spec.output_dir == Path(f"runs/{slug}")
    assert spec.storage == f"sqlite:///runs/{slug}/study.db"


@pytest.mark.parametrize("name", ["kl-annealing", "KL_test.v2"])
def test_a_name_that_is_its_own_slug_is_kept_as_it_is(tmp_path: Path, name: str) -> None:
    """Studies created before names were slugged keep their name (upper case included)."""
    spec = load(tmp_path, name=name)
    assert (spec.name, spec.display_name, spec.title) == (name, "", name)


def test_a_spec_without_a_name_is_named_after_its_file(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, minimal(name=DROP), name="My Sweep.yaml"))
    assert (spec.name, spec.output_dir) == ("my-sweep", Path("runs/my-sweep"))


@pytest.mark.parametrize(("top", "section", "expected"), [
    ({"project": "p", "entity": "lab"}, None, WandbSpec(project="p", entity="lab")),
    ({"project": "p"}, {"mode": "offline"}, WandbSpec(project="p", mode="offline")),
    ({"project": "p", "entity": "lab"}, {"project": "p", "entity": "lab"}, WandbSpec(project="p", entity="lab")),
    ({"entity": "lab"}, {"project": "q"}, WandbSpec(project="q", entity="lab")),
])
def test_top_level_project_and_entity_fill_the_wandb_section(tmp_path: Path, top: dict, section: dict | None,
                                                             expected: WandbSpec) -> None:
    assert load(tmp_path, **top, **({"wandb": section} if section else {})).wandb == expected


def test_top_level_project_and_entity_that_disagree_with_the_wandb_section_are_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, project="a", entity="x", wandb={"project": "b", "entity": "y"})
    lines = message.split("\n")
    assert any("project='a' and wandb.project='b' disagree" in line for line in lines)
    assert any("entity='x' and wandb.entity='y' disagree" in line for line in lines)
    assert "project=3 must be a non-empty string" in error(tmp_path, project=3)


EARLY_TERMINATE_ERRORS = [
    pytest.param({"type": "hyperband", "max_iter": 27}, "early_terminate.max_iter=27 needs s", id="max_iter-without-s"),
    pytest.param({"type": "hyperband", "max_iter": 10, "s": 2}, "max_iter=10 is not a multiple of eta**s=9, so "
                 "W&B's bands [1, 3]", id="max_iter-not-a-multiple"),
    pytest.param({"type": "hyperband", "min_iter": 2, "max_iter": 27, "s": 2}, "min_iter=2 is not max_iter / eta**s",
                 id="inconsistent"),
    pytest.param({"type": "hyperband", "min_iter": 2, "eta": 2.5}, "early_terminate.eta=2.5 must be an integer >= 2 "
                 "(Optuna's reduction_factor is an integer)", id="eta-float"),
    pytest.param({"type": "hyperband", "min_iter": 0}, "early_terminate.min_iter=0 must be an integer >= 1",
                 id="min_iter-zero"),
    pytest.param({"type": "hyperband", "min_iter": 2, "strict": False}, "early_terminate.strict=False: Optuna "
                 "compares the value a trial reports at each band", id="strict-false"),
    pytest.param({"type": "hyperband", "min_iter": 9, "max_iter": 3}, "min_iter=9 > max_iter=3", id="min-above-max"),
    pytest.param({"type": "hyperband", "min_iter": 2, "bands": [2]}, "early_terminate: unknown key(s) bands; valid "
                 "keys: type, min_iter, max_iter, eta, s, strict", id="unknown-key"),
]


@pytest.mark.parametrize(("section", "fragment"), EARLY_TERMINATE_ERRORS)
def test_early_terminate_keys_are_honoured_or_refused_by_name(tmp_path: Path, section: dict, fragment: str) -> None:
    assert fragment in error(tmp_path, early_terminate=section)


@pytest.mark.parametrize(("section", "expected"), [
    ({"type": "hyperband", "min_iter": 3}, PrunerSpec(type="hyperband", min_resource=3, reduction_factor=3,
                                                      max_resource="auto")),
    ({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}, PrunerSpec(type="hyperband", min_resource=3,
                                                                         reduction_factor=3, max_resource=27)),
    ({"type": "hyperband", "min_iter": 1, "s": 3, "eta": 2, "strict": True},
     PrunerSpec(type="hyperband", min_resource=1, reduction_factor=2, max_resource=8)),
    ({"type": "hyperband", "max_iter": 9.0, "s": 2}, PrunerSpec(type="hyperband", min_resource=1, reduction_factor=3,
                                                                max_resource=9)),
])
def test_early_terminate_maps_to_hyperband(tmp_path: Path, section: dict, expected: PrunerSpec) -> None:
    assert load(tmp_path, early_terminate=section).pruner == expected


@pytest.mark.parametrize(("goal", "target", "value", "reached"), [
    ("maximize", 30.0, 30.0, True), ("maximize", 30.0, 30.5, True), ("maximize", 30.0, 29.9, False),
    ("minimize", 0.1, 0.1, True), ("minimize", 0.1, 0.05, True), ("minimize", 0.1, 0.2, False),
    ("maximize", 30.0, float("nan"), False), ("maximize", 30.0, None, False), ("maximize", None, 99.0, False),
])
def test_metric_target_is_goal_aware(tmp_path: Path, goal: str, target: float | None, value: float | None,
                                     reached: bool) -> None:
    metric = {"name": "val/psnr", "goal": goal, **({"target": target} if target is not None else {})}
    assert load(tmp_path, metric=metric).metric.reached(value) is reached


def _trial(number: int, state: str, value: float | None, epochs: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.FrozenTrial(number=number, state=getattr(optuna.trial.TrialState, state), value=value,
                                    datetime_start=None, datetime_complete=None, params={}, distributions={},
                                    user_attrs={}, system_attrs={}, intermediate_values=dict(enumerate(epochs)),
                                    trial_id=number)


def test_target_reached_in_the_study(tmp_path: Path) -> None:
    best = load(tmp_path, metric={"name": "val/psnr", "target": 30.0})
    last = load(tmp_path, metric={"name": "val/psnr", "target": 30.0, "summary": "last"})
    running = _trial(1, "RUNNING", None, [20.0, 31.0])
    done = _trial(0, "COMPLETE", 25.0, [25.0])
    assert best.metric.reached_by([done]) is None and last.metric.reached_by([done]) is None
    # summary best: an epoch that reached it is enough (the trial's value will be at least that); last: not
    assert best.metric.reached_by([done, running]) == 1
    assert last.metric.reached_by([done, running]) is None
    finished = _trial(2, "COMPLETE", 30.5, [29.0, 30.5])
    assert last.metric.reached_by([done, running, finished]) == 2
    assert load(tmp_path).metric.reached_by([finished]) is None  # no target


def test_metric_target_must_be_a_number(tmp_path: Path) -> None:
    assert "metric.target='high' must be a number" in error(tmp_path, metric={"target": "high"})


def test_method_bayes_warns_that_it_is_tpe(tmp_path: Path) -> None:
    spec = load(tmp_path, method="bayes")
    assert spec.method == "tpe"
    (warning,) = [w for w in spec.warnings if "bayes" in w]
    assert "Optuna's TPE" in warning and "method: gp for a Gaussian-process sampler" in warning
    for method in ("tpe", "gp", "random"):
        assert not any("bayes" in w for w in load(tmp_path, method=method).warnings)


COMMANDS = [
    pytest.param(None, None, None, id="neither"),
    pytest.param(None, ["cvae", "train", "${args}"], None, id="cvae-train"),
    pytest.param(None, ["${env}", "cvae", "train", "${args}"], None, id="env-cvae-train"),
    pytest.param(None, ["${env}", "${interpreter}", "-m", "cvae", "train", "${args}"], None, id="python-m-cvae"),
    pytest.param(None, ["cvae", "train", "--config", "${args_json_file}"], None, id="args-json-file"),
    pytest.param("Trainer.py", None, None, id="the-labs-trainer-default-command"),
    pytest.param("lab/Trainer.py", ["${env}", "${interpreter}", "${program}", "${args}"], None, id="the-labs-trainer"),
    pytest.param("train.py", None, "program='train.py' ignored", id="another-program"),
    pytest.param("train.py", ["${env}", "${interpreter}", "${program}", "${args}"], "program='train.py' ignored",
                 id="wandb-default-command"),
    pytest.param("train.py", ["cvae", "train", "${args}"], None, id="program-unused"),
    pytest.param("train.py", ["${env}", "python", "${program}", "-b", "your-training-config", "${args}"],
                 "program='train.py', command items '-b', 'your-training-config' ignored", id="wandb-docs-custom"),
    pytest.param("run.py", ["${env}", "${interpreter}", "${program}", "--batch_size=${batch_size}", "--test=True"],
                 "program='run.py', command items '--batch_size=${batch_size}', '--test=True' ignored",
                 id="wandb-docs-macros"),
    pytest.param(None, ["cvae", "train", "${args_no_hyphens}"], "command items '${args_no_hyphens}' ignored",
                 id="args-no-hyphens"),
    pytest.param(None, ["cvae", "train", "${args_json}"], "command items '${args_json}' ignored", id="args-json"),
    pytest.param(None, ["python", "other.py", "${args}"], "command items 'python', 'other.py' ignored",
                 id="other-script"),
    pytest.param("Trainer.py", ["${env}", "${interpreter}", "${program}"], "a command without ${args} ignored",
                 id="no-args"),
]


@pytest.mark.parametrize(("program", "command", "fragment"), COMMANDS)
def test_program_and_command(tmp_path: Path, program: str | None, command: list | None, fragment: str | None) -> None:
    spec = load(tmp_path, **({"program": program} if program else {}), **({"command": command} if command else {}))
    assert (spec.program, spec.command) == (program, tuple(command) if command else None)
    warnings = [w for w in spec.warnings if "each trial runs `cvae train`" in w]
    if fragment is None:
        assert warnings == [] and spec.ignored == ()
    else:
        (warning,) = warnings  # one warning names everything ignored
        assert warning.startswith(fragment), warning


@pytest.mark.parametrize(("overrides", "fragment"), [
    (dict(program=""), "program='' must be a non-empty string"),
    (dict(command="cvae train ${args}"), "command='cvae train ${args}' must be a non-empty list of strings"),
    (dict(command=[]), "command=[] must be a non-empty list"),
])
def test_program_and_command_errors(tmp_path: Path, overrides: dict, fragment: str) -> None:
    assert fragment in error(tmp_path, **overrides)


@pytest.mark.parametrize(("overrides", "root"), [
    ({}, "data"),
    (dict(base={k: v for k, v in BASE.items() if k != "DR"}, parameters={"DR": {"value": "data/w"},
                                                                          "N_dim": {"values": [4, 8]}}), "data/w"),
    (dict(parameters={"DR": {"value": "data/w"}}), "data/w"),
    (dict(base={k: v for k, v in BASE.items() if k != "DR"}), None),
])
def test_the_data_root_is_the_base_or_a_constant_parameter(tmp_path: Path, overrides: dict, root: str | None) -> None:
    """A stock W&B file has no base: it gives the dataset as W&B gives a fixed value, a constant parameter."""
    assert load(tmp_path, **overrides).data_root == root


def test_a_constant_save_root_parameter_is_where_the_runs_folders_go(tmp_path: Path) -> None:
    # What a W&B file gives `wandb agent` (its runs make their folders in it): here, the output_dir.
    parameters = {**minimal()["parameters"], "save_root": {"value": str(tmp_path / "agent-runs")}}
    spec = load(tmp_path, parameters=parameters)
    assert spec.output_dir == tmp_path / "agent-runs" and "save_root" not in {p.name for p in spec.params}
    assert spec.storage == f"sqlite:///{tmp_path / 'agent-runs' / 'study.db'}"
    assert load(tmp_path, parameters=parameters, output_dir=str(tmp_path / "agent-runs")).output_dir == spec.output_dir
    assert "output_dir='elsewhere' and parameters.save_root=" in error(tmp_path, parameters=parameters,
                                                                      output_dir="elsewhere")
    swept = {**parameters, "save_root": {"values": ["a", "b"]}}
    assert "a constant (value: PATH) is the folder the runs' folders go in" in error(tmp_path, parameters=swept)


@pytest.mark.parametrize(("log_model", "read"), [(True, True), (False, False), ("all", "all")])
def test_wandb_log_model_is_true_false_or_all(tmp_path: Path, log_model: Any, read: Any) -> None:
    assert load(tmp_path, wandb={"log_model": log_model}).wandb.log_model == read


def test_wandb_log_model_refuses_other_values(tmp_path: Path) -> None:
    assert "wandb.log_model='best' must be true, false or all" in error(tmp_path, wandb={"log_model": "best"})


@pytest.mark.parametrize("method", ["random", "bayes", "tpe"])
def test_a_search_without_run_cap_runs_until_stopped_and_says_so(tmp_path: Path, method: str) -> None:
    # W&B runs such a sweep until it is stopped: so does cvae sweep run, with a warning (a grid is bounded).
    spec = load(tmp_path, method=method, run_cap=DROP)
    assert spec.until_stopped and spec.n_configs() == 0
    (warning,) = [w for w in spec.warnings if "run_cap" in w]
    assert f"no run_cap: method {method} draws parameter sets until the sweep is stopped" in warning
    assert not load(tmp_path, run_cap=5).until_stopped
    assert not load(tmp_path, method="grid", run_cap=DROP).until_stopped
