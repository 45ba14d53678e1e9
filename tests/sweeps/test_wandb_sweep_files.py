"""Stock W&B sweep files run unchanged (``tests/fixtures/wandb_sweeps``): files written in the structure and
syntax of W&B's documentation examples load, with the warnings they should give, the Optuna distributions,
sampler and pruner they mean, and a broken one reports each mistake on its own line."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.sweeps.space import (
    WeightedRandomSampler,
    first_pruning_step,
    make_pruner,
    make_sampler,
    suggest_all,
)
from cvae.sweeps.spec import SpecError, SweepSpec, load_spec
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

FIXTURES = Path(__file__).parents[1] / "fixtures" / "wandb_sweeps"
FILES = sorted(FIXTURES.glob("*.yaml"))

WANDB_TOP_KEYS = {"program", "entity", "project", "description", "name", "method", "metric", "parameters",
                  "early_terminate", "command", "run_cap"}
"""W&B's top-level sweep configuration keys (docs: "Sweep configuration options")."""
WANDB_PARAMETER_KEYS = {"values", "value", "distribution", "probabilities", "min", "max", "mu", "sigma", "q",
                        "parameters"}
"""W&B's search constraints of a parameter."""

PROGRAM_IGNORED = ("program='train.py' ignored: each trial runs `cvae train` with the swept values as its flags, "
                   "as `command: [cvae, train, ${args}]` does")
BAYES_IS_TPE = ("method: bayes runs Optuna's TPE sampler here (W&B's bayes is a Gaussian-process search): write "
                "method: gp for a Gaussian-process sampler, or method: tpe to keep TPE without this warning")
EXPECTED_WARNINGS = {
    "basic_bayes.yaml": (PROGRAM_IGNORED, BAYES_IS_TPE),
    "random_distributions.yaml": (PROGRAM_IGNORED,),
    "bayes_hyperband.yaml": (PROGRAM_IGNORED, BAYES_IS_TPE),
    "program_command.yaml": (PROGRAM_IGNORED,),
    "cvae_command.yaml": (),
}


def load(name: str) -> SweepSpec:
    return load_spec(FIXTURES / name)


def first_trial(spec: SweepSpec) -> optuna.trial.FrozenTrial:
    """The first trial of an in-memory study with the spec's sampler: its params and distributions."""
    study = optuna.create_study(sampler=make_sampler(spec), direction=spec.metric.goal)
    if spec.method == "grid":
        study.enqueue_trial(spec.grid()[0])
    trial = study.ask()
    suggest_all(trial, spec, study)
    return study.tell(trial, 0.0)


def test_the_fixtures_are_found() -> None:
    assert {p.name for p in FILES} == set(EXPECTED_WARNINGS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_fixture_is_a_stock_wandb_file(path: Path) -> None:
    """Only W&B's keys, so the same file starts a W&B sweep (`wandb sweep FILE`) as well."""
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= WANDB_TOP_KEYS, set(raw) - WANDB_TOP_KEYS
    for name, param in raw["parameters"].items():
        assert set(param) <= WANDB_PARAMETER_KEYS, (name, set(param) - WANDB_PARAMETER_KEYS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_fixture_loads_with_its_expected_warnings(path: Path) -> None:
    spec = load_spec(path)
    assert spec.warnings == EXPECTED_WARNINGS[path.name]
    assert spec.data_root == "data/synth"  # the dataset, as W&B gives a fixed value
    # the trials it draws are configs `cvae train` accepts
    study = optuna.create_study(sampler=make_sampler(spec), direction=spec.metric.goal)
    draws = spec.grid() if spec.method == "grid" else [suggest_all(study.ask(), spec) for _ in range(10)]
    for params in draws:
        cfg = spec.trial_config(params, save_root="x")
        assert cfg.data.DR == "data/synth"


@pytest.mark.parametrize("name", ["basic_bayes.yaml", "bayes_hyperband.yaml"])
def test_bayes_is_tpe_with_constant_liar(name: str) -> None:
    spec = load(name)
    assert (spec.method, spec.workers) == ("tpe", 1)
    sampler = make_sampler(spec)
    assert type(sampler) is optuna.samplers.TPESampler
    assert sampler._constant_liar is True  # one-worker specs may still share the study (Slurm/SSH arrays)


def test_basic_bayes_distributions() -> None:
    spec = load("basic_bayes.yaml")
    assert spec.name == "sweepdemo" and spec.display_name == ""
    assert (spec.metric.name, spec.metric.goal, spec.run_cap) == ("val/loss", "minimize", 20)
    trial = first_trial(spec)
    assert trial.distributions == {
        "lr": FloatDistribution(0.0001, 0.1),  # float min/max: W&B's uniform
        "batch_size": CategoricalDistribution([16, 32, 64]),
        "num_epoch": CategoricalDistribution([15, 20, 30]),
        "optim": CategoricalDistribution(["Adam", "AdamW"]),
    }
    assert "DR" not in trial.params  # a constant is set, not sampled


def test_random_distributions_and_probabilities() -> None:
    spec = load("random_distributions.yaml")
    assert spec.name == "random_distributions"  # no name: the file's
    assert type(make_sampler(spec)) is WeightedRandomSampler
    trial = first_trial(spec)
    assert trial.distributions == {
        "batch_size": CategoricalDistribution(list(range(32, 257, 8))),  # q_log_uniform_values: the multiples of 8
        "kl_anneal_ratio": CategoricalDistribution([0.3, 0.4, 0.5]),
        "D_out_dim": CategoricalDistribution([128, 256, 512]),
        "lr": FloatDistribution(0.0001, 0.1, log=True),
        "tfr": FloatDistribution(0.0, 1.0, step=0.25),
        "optim": CategoricalDistribution(["Adam", "AdamW"]),
    }
    params = {p.name: p for p in spec.params}
    assert params["optim"].probabilities == (0.7, 0.3)
    batch = params["batch_size"]
    assert batch.declared == "q_log_uniform_values"
    assert math.isclose(batch.probabilities[0], math.log(36 / 32) / math.log(256 / 32))
    # method random draws optim with its probabilities
    study = optuna.create_study(sampler=make_sampler(spec))
    draws = [suggest_all(study.ask(), spec)["optim"] for _ in range(600)]
    assert 0.63 <= draws.count("Adam") / len(draws) <= 0.77


def test_bayes_hyperband_pruner_stops_at_wandbs_bands() -> None:
    spec = load("bayes_hyperband.yaml")
    pruner = make_pruner(spec)
    assert type(pruner) is optuna.pruners.HyperbandPruner
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (3, 27, 3)
    # W&B's bands for max_iter 27, s 2, eta 3 (sweeps' hyperband_stopping): 27/3, 27/9
    bands = sorted(int(27 / 3**k) for k in range(1, 3))
    rungs = [3 * 3**k for k in range(10) if 3 * 3**k < 27]  # Optuna's first bracket
    assert rungs == bands == [3, 9]
    assert first_pruning_step(spec.pruner) == 3


def test_bayes_hyperband_target() -> None:
    spec = load("bayes_hyperband.yaml")
    assert (spec.metric.target, spec.metric.goal) == (32.5, "maximize")
    assert spec.metric.reached(32.5) and spec.metric.reached(33.0)
    assert not spec.metric.reached(32.4)


def test_program_command_grid() -> None:
    spec = load("program_command.yaml")
    assert spec.program == "train.py"
    assert spec.command == ("${env}", "${interpreter}", "${program}", "${args}")
    assert spec.ignored == ("program='train.py'",)  # the command's form is what the workers do
    assert [p["kl_anneal_type"] for p in spec.grid()] == ["cyclical", "monotonic", "none"]
    trial = first_trial(spec)
    assert set(trial.params) == {"kl_anneal_type"}  # batch_size, lr, DR: constants
    cfg = spec.trial_config(spec.grid()[0], save_root="x")
    assert (cfg.optim.batch_size, cfg.optim.lr) == (8, 0.0001)


def test_cvae_command_names_project_and_target() -> None:
    spec = load("cvae_command.yaml")
    assert (spec.name, spec.display_name, spec.title) == ("my-kl-sweep-2", "My KL sweep #2", "My KL sweep #2")
    assert spec.output_dir == Path("runs/my-kl-sweep-2")
    assert spec.storage == "sqlite:///runs/my-kl-sweep-2/study.db"
    assert (spec.wandb.project, spec.wandb.entity) == ("cvae-wandb", "my-team")
    assert spec.description.startswith("KL annealing")
    assert spec.ignored == ()
    assert (spec.metric.goal, spec.metric.target) == ("minimize", 0.01)
    assert spec.metric.reached(0.01) and spec.metric.reached(0.005) and not spec.metric.reached(0.02)
    pruner = make_pruner(spec)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (3, spec.num_epoch.max, 3)
    trial = first_trial(spec)
    assert trial.distributions["kl_anneal_cycle"] == IntDistribution(2, 10)
    assert trial.distributions["lr"] == FloatDistribution(math.exp(-9.2), math.exp(-4.6), log=True)


def test_a_file_with_three_mistakes_reports_each_on_its_own_line(capsys: pytest.CaptureFixture) -> None:
    path = FIXTURES / "invalid" / "three_mistakes.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = str(info.value).split("\n")
    assert len(lines) == 3 == len(info.value.problems)
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    learning_rate, normal, max_iter = lines
    assert "parameters.learning_rate: 'learning_rate' is not a cvae train key" in learning_rate
    assert "did you mean 'lr'?" in learning_rate
    assert "parameters.kl_anneal_ratio.distribution='normal' has no Optuna equivalent" in normal
    assert "early_terminate.max_iter=27 needs s" in max_iter
    # the CLI prints each problem on a line of its own, each with the command's prefix
    from cvae.console import fail

    assert fail("sweep run", str(info.value)) == 2
    printed = capsys.readouterr().err.rstrip("\n").split("\n")
    assert printed == [f"cvae sweep run: error: {line}" for line in lines]
