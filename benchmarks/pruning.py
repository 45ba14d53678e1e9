"""Benchmark: does a pruned sweep find the full grid's best validation PSNR for half the training epochs?

The goal measured: on a search over the KL annealing type, the teacher-forcing schedule and N_dim, the
pruned sweep reaches within 0.3 dB of the full grid's best validation PSNR using <= 50% of its training
epochs. Usage:

    .venv/bin/python benchmarks/pruning.py --threads 2 --seed 6   # the measurement (about 1 h on 2 cores)
    .venv/bin/python benchmarks/pruning.py --smoke       # a check of the machinery (tiny data, 3 epochs): ~1.5 min
    .venv/bin/python benchmarks/pruning.py --report-only # the report again, from the records of a finished run
        [--out runs/bench-pruning] [--epochs 8] [--threads 1] [--seed N] [--overwrite]
        [--pruner successive_halving|hyperband|median|percentile] [--spec benchmarks/configs/pruning.yaml]

Two real sweeps of the same 12-point grid (benchmarks/configs/pruning.yaml: kl_anneal_type x tfr x N_dim,
the quickstart's reduced model and data, 8 epochs), each through our own machinery: the spec is
written to ``OUT/specs/<arm>.yaml`` and validated by ``sweeps.spec.load_spec``, ``cvae sweep init``
generates the dataset, creates the SQLite study ``OUT/<arm>/study.db`` and queues the grid, and one
``cvae sweep worker --threads N`` runs it. W&B is disabled. Arm ``full``: no pruner, every trial runs every
epoch. Arm ``pruned``: the same grid with a pruner. Both arms train the same configs with the same seeds in
the same order, so a pruned trial's curve equals its full-grid twin's up to where it stopped (checked).

Counted from the run records (``OUT/<arm>/tNNNN/trial.json`` and ``metrics.csv``, one row per epoch run):
trials by final state, epochs run, and the sweep's answer: each trial's ``val/psnr`` summarised over its
epochs as the spec says (``metric.summary: best``, by ``sweeps.runner.metric_value``), then the best
completed trial (what ``cvae sweep best`` reports: Optuna's best trial, cross-checked against the study).
The wall time of an arm is its worker process's. Prints a table and a PASS/FAIL line per criterion (exit
status 1 when one fails), replays every supported pruner on the full grid's curves (a simulation, no
training: which pruner would have met the goal), and writes ``OUT/results.json`` and ``OUT/val_psnr.png``
(val PSNR per epoch of every trial of both arms, pruned trials dashed).

The grid runs shuffled (``grid_order: shuffled``, seeded by the spec's ``seed`` or ``--seed``), in the
same order in both arms: a pruner judges each trial against the ones before it, and in the grid's listed
order (annealing type first) it would see the configs sorted. The report also replays every pruner on the
full grid's curves in 200 random orders and prints how often it meets each criterion (one run's order is
one draw), and how early each epoch's ranking of the trials predicts the final one (Spearman's rho).

The pruner is successive halving with min_resource 1 and reduction_factor 4 (Optuna's defaults; "auto"
gives 1 here): after a trial's 2nd and 5th epochs (steps 1 and 4) it goes on only if its val PSNR is in
the top quarter of the trials that reached that epoch before it. It was chosen on earlier runs of this
benchmark whose models never beat copying the first frame (2-channel widths, per-video looks); what it
does on models that learn is in the README, measured with the command above.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from cvae.sweeps.report import fmt_duration
from cvae.sweeps.spec import SpecError, SweepSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "benchmarks" / "configs" / "pruning.yaml"
GAP_DB = 0.3
"""Criterion: the pruned sweep's best is at most this far below the full grid's best."""
EPOCH_SHARE = 0.5
"""Criterion: the pruned sweep runs at most this share of the full grid's epochs."""
ARMS = ("full", "pruned")

PRUNERS: dict[str, dict[str, Any]] = {
    "successive_halving": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 4},
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    "median": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
    "percentile": {"type": "percentile", "percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 1},
}
"""The pruner block of the pruned arm's spec, per --pruner (steps are 0-based epochs)."""
REPLAYED: dict[str, dict[str, Any]] = {
    **PRUNERS,
    "successive_halving rf3": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3},
    "successive_halving rf2": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2},
    "successive_halving min2": {"type": "successive_halving", "min_resource": 2, "reduction_factor": 3},
    "median warmup3": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 3},
}
"""Pruners replayed on the full grid's curves after the run."""
REPLAY_GRID: dict[str, dict[str, Any]] = {
    **{f"successive_halving min{m} rf{rf}": {"type": "successive_halving", "min_resource": m, "reduction_factor": rf}
       for m in (1, 2, 3, 4, 6, 8, 10, 12) for rf in (2, 3, 4)},
    **{f"percentile {int(pc)} warmup{w}": {"type": "percentile", "percentile": pc, "n_startup_trials": 2,
                                             "n_warmup_steps": w} for pc in (25.0, 50.0) for w in (1, 2, 3)},
}
"""--replay-grid: more pruner settings, replayed in random orders only (is there one that meets both?).
min_resource 4 and up look after teacher forcing has ended (tfr 0 from epoch 4 of 8) and the monotonic beta
has reached 1 (epoch 4); the cyclical beta starts its second cycle there."""
ORDERS = 200
"""Random trial orders each pruner is replayed in: how much its result owes to the order the grid ran in."""

SMOKE: dict[str, Any] = {
    "epochs": 3, "val_vi_len": 12,
    "synth": {"train_frames": 48, "train_video_len": 48, "val_frames": 16, "test_sequences": 1, "test_frames": 4,
              "seed": 0},
}
"""--smoke: tiny data, 3 epochs, a 12-frame validation rollout: checks the machinery, measures nothing."""


# -- the two specs -------------------------------------------------------------------------------------------
def arm_spec(raw: Mapping[str, Any], arm: str, out: Path, *, epochs: int | None, pruner: Mapping[str, Any],
             smoke: bool, seed: int | None = None) -> dict[str, Any]:
    """The spec mapping of one arm: the benchmark's grid with its outputs, data and pruner under ``out``.

    ``seed``, when given, replaces the seeds of the grid's order, the generated data and training.
    """
    spec = json.loads(json.dumps(dict(raw)))  # a deep copy of plain YAML data
    base = spec.setdefault("base", {})
    if smoke:
        spec["synth"] = dict(SMOKE["synth"])
        base["num_epoch"] = SMOKE["epochs"]
        base["val_vi_len"] = SMOKE["val_vi_len"]
    if seed is not None:
        spec["seed"] = base["seed"] = seed
        spec["synth"] = {**(spec.get("synth") or {}), "seed": seed}
    if epochs is not None:
        base["num_epoch"] = epochs
    synth_key = hashlib.sha1(json.dumps(spec.get("synth"), sort_keys=True).encode()).hexdigest()[:8]
    base["DR"] = str(out / f"data-{synth_key}")  # one folder per dataset: the generator refuses to mix two
    base["cache_dir"] = str(out / "cache")
    spec.update(
        name=f"{raw.get('name', 'bench-pruning')}-{arm}", output_dir=str(out / arm),
        storage=f"sqlite:///{out / arm / 'study.db'}", workers=1,
        wandb={**(spec.get("wandb") or {}), "mode": "disabled"},
    )
    spec.pop("early_terminate", None)
    spec.pop("pruner", None)
    if arm == "pruned":
        spec["pruner"] = dict(pruner)
    return spec


def write_specs(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Write ``out/specs/<arm>.yaml`` for both arms (validated by loading them); returns their paths."""
    raw = yaml.safe_load(Path(args.spec).read_text())
    paths = {}
    for arm in ARMS:
        path = out / "specs" / f"{arm}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        mapping = arm_spec(raw, arm, out, epochs=args.epochs, pruner=PRUNERS[args.pruner], smoke=args.smoke,
                           seed=args.seed)
        path.write_text(f"# written by benchmarks/pruning.py from {args.spec}\n"
                        + yaml.safe_dump(mapping, sort_keys=False))
        try:
            load_spec(path)
        except SpecError as err:
            raise SystemExit(f"invalid spec: {err}") from None
        paths[arm] = path
    return paths


# -- running an arm ------------------------------------------------------------------------------------------
def cvae(argv: Sequence[str], log: Path, env: Mapping[str, str], *,
         progress: Callable[[float], None] | None = None) -> float:
    """Run ``python -m cvae ARGV`` with its output appended to ``log``; returns its wall-clock seconds.

    ``progress``, when given, is called every 30 s while the command runs.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ cvae {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "cvae", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(env), cwd=ROOT)
        last = t0
        while proc.poll() is None:
            time.sleep(1)
            if progress is not None and time.perf_counter() - last >= 30:
                last = time.perf_counter()
                progress(last - t0)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"cvae {' '.join(argv)} failed (exit {proc.returncode}); {log} ends with:\n{tail}")
    return wall


def sweep_main(doc: str, spec_path: Path, generate: Callable[[dict], None], report: Callable[[dict], str],
               argv: Sequence[str] | None = None) -> int:
    """The ``main`` of a benchmark that is one shipped sweep: unless ``--report-only``, ``generate(spec)``
    (its datasets) and ``cvae sweep run SPEC``, logged to the output folder's ``sweep.log``; then
    ``report(spec)`` printed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="the table again, from the records of a run")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(spec_path.read_text())
    if not args.report_only:
        t0 = time.perf_counter()
        generate(spec)
        cvae(["sweep", "run", str(spec_path), "--no-live"], ROOT / spec["output_dir"] / "sweep.log", os.environ)
        print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min")
    print(report(spec))
    return 0


def run_arm(arm: str, spec_path: Path, out: Path, threads: int, env: Mapping[str, str]) -> float:
    """Create the arm's study and queue (``cvae sweep init``), then run one worker; returns the worker's wall time."""
    spec = load_spec(spec_path)
    log = out / "logs" / f"{arm}.log"
    cvae(["sweep", "init", str(spec_path)], log, env)

    def progress(elapsed: float) -> None:
        trials = read_trials(spec)
        done = sum(t.state in ("complete", "pruned", "failed") for t in trials)
        print(f"  {arm}: {done}/{spec.n_configs()} trials done, {sum(t.epochs for t in trials)} epochs, "
              f"{elapsed / 60:.1f} min", flush=True)

    wall = cvae(["sweep", "worker", str(spec_path), "--threads", str(threads)], log, env, progress=progress)
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    (spec.output_dir / "wall.json").write_text(json.dumps({"wall_s": wall, "threads": threads, "command": command}))
    return wall


# -- reading an arm back -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One trial of an arm, from its run folder."""

    number: int
    run: str
    params: dict[str, Any]
    state: str
    epochs: int
    """Epochs run: rows of metrics.csv."""
    value: float
    """The sweep metric's summary over the trial's epochs (its best epoch, or its last: the spec says)."""
    best_epoch: int
    curve: list[float]
    """The metric of every epoch run."""
    copy_first: float = math.nan
    """Copying the first frame of each validation clip: the baseline the trial's val PSNR must beat."""

    @property
    def key(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    @property
    def label(self) -> str:
        return ", ".join(f"{v}" for v in self.params.values())


def read_trials(spec: SweepSpec) -> list[Trial]:
    """Every trial of a sweep from its run records (one folder per trial chain)."""
    from cvae.core.records import read_csv
    from cvae.sweeps.runner import metric_value

    trials = []
    for folder in sorted(spec.output_dir.glob("t[0-9][0-9][0-9][0-9]")):
        record_path = folder / "trial.json"
        if not record_path.exists():
            continue
        record = json.loads(record_path.read_text())
        rows = read_csv(folder / "metrics.csv") if (folder / "metrics.csv").exists() else []
        value, epoch = metric_value(rows, spec.metric.field, spec.metric.goal, spec.metric.summary)
        curve = [float(r[spec.metric.field]) if r.get(spec.metric.field) else math.nan for r in rows]
        copies = [float(r["val_psnr_copy_first"]) for r in rows if r.get("val_psnr_copy_first")]
        trials.append(Trial(number=int(record["trial_number"]), run=folder.name, params=dict(record["params"]),
                            state=str(record["state"]), epochs=len(rows), value=value, best_epoch=epoch,
                            curve=curve, copy_first=copies[0] if copies else math.nan))
    return trials


@dataclass(frozen=True)
class ArmResult:
    name: str
    spec: SweepSpec
    trials: list[Trial]
    wall_s: float | None
    threads: int | None
    command: str | None

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    @property
    def copy_first(self) -> float:
        """Copying the first frame of each validation clip (the same video for every trial; NaN if unrecorded)."""
        return next((t.copy_first for t in self.trials if not math.isnan(t.copy_first)), math.nan)

    @property
    def best(self) -> Trial | None:
        """The sweep's best trial: the best metric summary among the completed trials (Optuna's best_trial)."""
        done = [t for t in self.trials if t.state == "complete" and not math.isnan(t.value)]
        if not done:
            return None
        return (max if self.spec.metric.goal == "maximize" else min)(done, key=lambda t: t.value)


def study_best(spec: SweepSpec) -> float | None:
    """The study's own best value (Optuna's best trial), to cross-check the records."""
    import optuna
    from cvae.sweeps.storage import open_storage

    try:
        return optuna.load_study(study_name=spec.name, storage=open_storage(spec)).best_value
    except (KeyError, ValueError):
        return None


def load_arm(arm: str, spec_path: Path) -> ArmResult:
    spec = load_spec(spec_path)
    wall_file = spec.output_dir / "wall.json"
    timing = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    return ArmResult(arm, spec, read_trials(spec), timing.get("wall_s"), timing.get("threads"),
                     timing.get("command"))


# -- replay: other pruners on the full grid's curves ---------------------------------------------------------
def replay(spec: SweepSpec, pruner: Mapping[str, Any], curves: Sequence[Sequence[float]]) -> list[int]:
    """Epochs each trial would run if ``pruner`` had watched these curves (a full arm's, in trial order).

    An in-memory study with the pruner ``sweeps.space.make_pruner`` builds, fed as the runner feeds it
    (one report per epoch, pruned trials told PRUNED), under the pruned arm's study name, which Hyperband
    hashes to assign brackets. With a deterministic trainer this predicts the pruned arm exactly.
    """
    import optuna
    from cvae.sweeps.space import make_pruner
    from cvae.sweeps.spec_types import PrunerSpec
    from optuna.trial import TrialState

    pruner_obj = make_pruner(spec.model_copy(update={"pruner": PrunerSpec.of(pruner)}))
    study = optuna.create_study(study_name=spec.name, direction=spec.metric.goal, pruner=pruner_obj)
    epochs = []
    for curve in curves:
        trial = study.ask()
        ran, pruned = len(curve), False
        for epoch, value in enumerate(curve):
            if math.isnan(value):
                continue
            trial.report(value, epoch)
            if trial.should_prune():
                ran, pruned = epoch + 1, True
                break
        finite = [v for v in curve[:ran] if not math.isnan(v)]
        if pruned or not finite:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, best_of(finite, spec.metric.goal))
        epochs.append(ran)
    return epochs


def best_of(values, goal: str) -> float:
    """The best of ``values`` for the metric's goal (NaN when there are none)."""
    return (max if goal == "maximize" else min)(values, default=math.nan)


def replay_summary(full: ArmResult, spec: SweepSpec, pruner: Mapping[str, Any],
                   trials: Sequence[Trial] | None = None) -> dict[str, Any]:
    """What ``pruner`` would have cost and found on the full arm's curves, in ``trials``' order (default: the run's)."""
    trials = full.trials if trials is None else trials
    epochs = replay(spec, pruner, [t.curve for t in trials])
    kept = [t for t, e in zip(trials, epochs, strict=True) if e == len(t.curve) and not math.isnan(t.value)]
    best = best_of((t.value for t in kept), spec.metric.goal)
    return {"pruner": dict(pruner), "epochs_per_trial": epochs, "epochs": sum(epochs),
            "share": sum(epochs) / max(1, full.epochs), "pruned": len(trials) - len(kept), "best": best,
            "gap_db": gap(full.best.value, best, spec.metric.goal) if full.best else math.nan,
            "gap_last_db": gap(last_best(full.trials, spec.metric.goal), last_best(kept, spec.metric.goal), spec.metric.goal)}


def last_best(trials: Sequence[Trial], goal: str) -> float:
    """The best last-epoch value of ``trials`` (what a ``metric.summary: last`` sweep would call its best)."""
    return best_of((t.curve[-1] for t in trials if t.curve and not math.isnan(t.curve[-1])), goal)


def order_summary(full: ArmResult, spec: SweepSpec, pruner: Mapping[str, Any], orders: int = ORDERS) -> dict[str, Any]:
    """``pruner`` replayed on the full arm's curves in ``orders`` seeded random trial orders.

    A pruner compares each trial with those before it, so one run's result depends on the order the grid
    happened to run in; this is its distribution over orders: the share of the grid's epochs and the gap to
    the full grid's best, per order, summarised.
    """
    import random

    shares, gaps, gaps_last = [], [], []
    for seed in range(orders):
        trials = list(full.trials)
        random.Random(seed).shuffle(trials)
        r = replay_summary(full, spec, pruner, trials)
        shares.append(r["share"])
        gaps.append(r["gap_db"])
        gaps_last.append(r["gap_last_db"])
    ranked = sorted(shares)

    def meeting_both(gaps_: Sequence[float]) -> float:
        return sum(g <= GAP_DB and s <= EPOCH_SHARE for g, s in zip(gaps_, shares, strict=True)) / orders

    return {"orders": orders, "share_median": ranked[len(ranked) // 2], "share_p90": ranked[int(0.9 * len(ranked))],
            "within_gap": sum(g <= GAP_DB for g in gaps) / orders,
            "within_share": sum(s <= EPOCH_SHARE for s in shares) / orders,
            "both": meeting_both(gaps), "both_by_last_epoch": meeting_both(gaps_last)}


def replay_grid(full: ArmResult, spec: SweepSpec) -> dict[str, Any]:
    """Print and return :func:`order_summary` of every pruner setting in REPLAY_GRID."""
    print(f"\nmore pruner settings, each replayed in {ORDERS} random trial orders of the full grid's curves")
    rows, out = [], {}
    for name, pruner in REPLAY_GRID.items():
        o = out[name] = {"pruner": pruner, **order_summary(full, spec, pruner)}
        rows.append((name, fmt(100 * o["share_median"], ".1f"), fmt(100 * o["within_gap"], ".0f"),
                     fmt(100 * o["both"], ".0f"), fmt(100 * o["both_by_last_epoch"], ".0f")))
    print(table(rows, ("pruner", "% of epochs: median", f"orders within {GAP_DB} dB (%)", "orders meeting both (%)",
                       "by the last epoch (%)")))
    return out


def rank_agreement(full: ArmResult) -> list[dict[str, Any]]:
    """Per epoch: how well the full grid's values after that epoch rank the trials by their final answer.

    A pruner's look at epoch k can only be right if the ranking at k resembles the final one. For each
    epoch: Spearman's rho between the trials' values there and their metric summary (1: the same order),
    and where the eventual best trial stood there (1: on top).
    """
    import pandas as pd

    trials = [t for t in full.trials if t.curve and not math.isnan(t.value)]
    if len(trials) < 3 or full.best is None:
        return []
    final = pd.Series([t.value for t in trials])
    ascending = full.spec.metric.goal != "maximize"
    best = next(i for i, t in enumerate(trials) if t.number == full.best.number)
    rows = []
    for k in range(min(len(t.curve) for t in trials)):
        at_k = pd.Series([t.curve[k] for t in trials])
        best_rank = int(at_k.rank(ascending=ascending, method="min")[best])
        rows.append({"epoch": k + 1, "spearman": float(at_k.corr(final, method="spearman")), "best_rank": best_rank})
    return rows


# -- the report ----------------------------------------------------------------------------------------------
def gap(reference: float, value: float, goal: str) -> float:
    """How far ``value`` falls short of ``reference`` (positive: worse), in the metric's unit."""
    return reference - value if goal == "maximize" else value - reference


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[Any]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def report(full: ArmResult, pruned: ArmResult) -> dict[str, Any]:
    """Print the comparison and return it as JSON-ready data."""
    spec = full.spec
    ref = full.best.value if full.best else math.nan
    total = full.epochs
    header = ("arm", "pruner", "trials", "complete", "pruned", "failed", "epochs run", "% of full grid",
              f"best {spec.metric.name}", "gap (dB)", "wall")
    rows = []
    arms: dict[str, Any] = {}
    for arm in (full, pruned):
        best = arm.best
        value = best.value if best else math.nan
        arms[arm.name] = {
            "study": arm.spec.name, "pruner": dict(arm.spec.pruner), "trials": len(arm.trials),
            "complete": arm.count("complete"), "pruned": arm.count("pruned"), "failed": arm.count("failed"),
            "epochs": arm.epochs, "share_of_full": arm.epochs / total if total else math.nan, "best": value,
            "best_trial": best.number if best else None, "best_params": best.params if best else None,
            "best_epoch": best.best_epoch if best else None, "gap_db": gap(ref, value, spec.metric.goal),
            "study_best": study_best(arm.spec), "wall_s": arm.wall_s,
            "trials_detail": [asdict(t) for t in arm.trials],
        }
        a = arms[arm.name]
        rows.append((arm.name, a["pruner"]["type"], a["trials"], a["complete"], a["pruned"], a["failed"],
                     a["epochs"], fmt(100 * a["share_of_full"], ".1f"), fmt(value, ".3f"), fmt(a["gap_db"], "+.3f"),
                     fmt_duration(arm.wall_s)))
        study_value = a["study_best"]
        if study_value is not None and not math.isclose(study_value, value, abs_tol=1e-9):
            print(f"WARNING: {arm.name}: the study's best value {study_value} differs from the records' {value}")
    print(table(rows, header))
    copy_first = full.copy_first
    learned = [t for t in full.trials if t.value - t.copy_first > 0]
    baseline = {"copy_first": copy_first, "best_margin_db": ref - copy_first, "trials_above": len(learned)}
    print(f"did they learn? copying the first frame of each validation clip scores {fmt(copy_first, '.3f')} dB; "
          f"{len(learned)} of {len(full.trials)} full-grid trials beat it at their best epoch, the best by "
          f"{fmt(ref - copy_first, '+.3f')} dB")

    # Per configuration: what the pruned arm did with it, next to what it reaches with every epoch.
    twins = {t.key: t for t in full.trials}
    detail = []
    max_diff = 0.0
    for t in pruned.trials:
        twin = twins.get(t.key)
        common = [(a, b) for a, b in zip(t.curve, twin.curve if twin else [], strict=False)
                  if not (math.isnan(a) or math.isnan(b))]
        diff = max((abs(a - b) for a, b in common), default=0.0)
        max_diff = max(max_diff, diff)
        detail.append((t.run, t.label, t.state, t.epochs, fmt(t.value, ".3f"),
                       fmt(twin.value, ".3f") if twin else "-", fmt(twin.curve[-1] if twin and twin.curve else None, ".3f")))
    print(f"\nthe pruned arm per config ({', '.join(p.name for p in spec.params)}), next to the full grid's twin:")
    print(table(detail, ("run", "config", "state", "epochs", "best so far", "full: best", "full: last")))
    print(f"curves of the pruned arm vs their full-grid twins over the epochs both ran: max |diff| = "
          f"{max_diff:.2g} dB" + ("" if max_diff < 1e-6 else " (training is not bit-reproducible here: the arms "
                                    "differ by more than pruning)"))

    # What-if: every pruner on the full grid's curves.
    replays = {name: replay_summary(full, pruned.spec, cfg) for name, cfg in REPLAYED.items()} if full.best else {}
    if replays:
        print("\nwhat-if (a simulation, no training): each pruner replayed on the full grid's curves")
        rows = []
        for name, r in replays.items():
            ok = r["gap_db"] <= GAP_DB and r["share"] <= EPOCH_SHARE
            opts = ", ".join(f"{k}={v}" for k, v in r["pruner"].items() if k != "type")
            rows.append((name, opts, r["pruned"], r["epochs"], fmt(100 * r["share"], ".1f"), fmt(r["best"], ".3f"),
                         fmt(r["gap_db"], "+.3f"), "yes" if ok else "no"))
        print(table(rows, ("pruner", "options", "pruned", "epochs", "% of full", "best", "gap (dB)", "meets both")))
        print(f"\nthe same pruners replayed in {ORDERS} random trial orders (seeded 0..{ORDERS - 1}): how much a "
              f"result owes to the order")
        rows = []
        for name, r in replays.items():
            o = r["orders"] = order_summary(full, pruned.spec, r["pruner"])
            rows.append((name, fmt(100 * o["share_median"], ".1f"), fmt(100 * o["share_p90"], ".1f"),
                         fmt(100 * o["within_share"], ".0f"), fmt(100 * o["within_gap"], ".0f"),
                         fmt(100 * o["both"], ".0f"), fmt(100 * o["both_by_last_epoch"], ".0f")))
        print(table(rows, ("pruner", "% of epochs: median", "p90", f"orders <= {100 * EPOCH_SHARE:.0f}% (%)",
                           f"orders within {GAP_DB} dB (%)", "orders meeting both (%)",
                           "meeting both, read by the last epoch (%)")))
        used = replay(pruned.spec, pruned.spec.pruner, [t.curve for t in full.trials])
        real = {t.key: t.epochs for t in pruned.trials}
        agree = [real.get(t.key) == e for t, e in zip(full.trials, used, strict=True)]
        print(f"replay of the pruned arm's own pruner agrees with the real run on {sum(agree)}/{len(agree)} trials")

    agreement = rank_agreement(full)
    if agreement:
        print(f"\nhow early the full grid's ranking shows: per epoch, Spearman's rho of the trials' {spec.metric.name} "
              f"with their final answer, and the rank then of the trial that ends best (of {len(full.trials)})")
        print(table([("rho", *(fmt(a["spearman"], ".2f") for a in agreement)),
                     ("best's rank", *(a["best_rank"] for a in agreement))],
                    ("epoch", *(a["epoch"] for a in agreement))))

    # Optuna's pruners decide on intermediate values only, so a sweep that summarised each trial by its last
    # epoch (metric.summary: last) would have pruned the same trials: its answer can be read off these runs.
    last = {arm.name: last_best([t for t in arm.trials if t.state == "complete"], spec.metric.goal) for arm in (full, pruned)}
    last_gap = gap(last["full"], last["pruned"], spec.metric.goal)
    print(f"\nread by the last epoch instead (metric.summary: last; same pruning decisions): best {spec.metric.name} "
          f"full {fmt(last['full'], '.3f')}, pruned {fmt(last['pruned'], '.3f')}, gap {fmt(last_gap, '+.3f')} dB")

    share = pruned.epochs / total if total else math.nan
    gap_db = arms["pruned"]["gap_db"]
    checks = {
        "gap": {"value": gap_db, "limit": GAP_DB, "pass": bool(gap_db <= GAP_DB)},
        "epochs": {"value": share, "limit": EPOCH_SHARE, "pass": bool(share <= EPOCH_SHARE)},
    }
    print()
    print(f"{'PASS' if checks['gap']['pass'] else 'FAIL'}  gap to the full grid's best {spec.metric.name}: "
          f"{fmt(gap_db, '.3f')} dB (limit {GAP_DB} dB; full {fmt(ref, '.3f')}, pruned "
          f"{fmt(arms['pruned']['best'], '.3f')})")
    print(f"{'PASS' if checks['epochs']['pass'] else 'FAIL'}  training epochs: {pruned.epochs} of the full grid's "
          f"{total} = {fmt(100 * share, '.1f')}% (limit {100 * EPOCH_SHARE:.0f}%)")
    return {"arms": arms, "criteria": checks, "baseline": baseline, "replay": replays, "curve_max_diff_db": max_diff,
            "by_last_epoch": {"full": last["full"], "pruned": last["pruned"], "gap_db": last_gap},
            "rank_agreement": agreement}


def figure(full: ArmResult, pruned: ArmResult, path: Path) -> None:
    """Val PSNR per epoch of every trial, one panel per arm; pruned trials dashed and ended by an x; copying the first
    frame of each validation clip as a dotted reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = list(dict.fromkeys([t.key for t in full.trials] + [t.key for t in pruned.trials]))
    palette = [plt.get_cmap("tab20")(i) for i in [*range(0, 20, 2), *range(1, 20, 2)]]
    style = {k: (palette[i % 20], "os^vDP"[i % 6]) for i, k in enumerate(keys)}
    copy_first = full.copy_first
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, arm in zip(axes, (full, pruned), strict=True):
        best = arm.best
        if not math.isnan(copy_first):  # the bar a trial must clear to have learned anything
            ax.axhline(copy_first, color="0.3", ls=":", lw=1.2, zorder=1,
                       label=f"copy first frame: {copy_first:.2f} dB")
        for t in arm.trials:
            x = list(range(1, len(t.curve) + 1))
            stopped = t.state != "complete"
            color, marker = style[t.key]
            ax.plot(x, t.curve, color=color, marker=marker, ms=4, lw=1.4, ls="--" if stopped else "-",
                    label=t.label)
            if stopped and t.curve:
                ax.plot(x[-1], t.curve[-1], "x", color=color, ms=9, mew=2)
            if best is not None and t.number == best.number:
                ax.plot(best.best_epoch + 1, best.value, "*", color="k", ms=14, zorder=5)
        pr = arm.spec.pruner
        what = "no pruner" if pr.get("type") == "none" else ", ".join(f"{k}={v}" for k, v in pr.items())
        ax.set_title(f"{arm.name}: {what}\n{arm.epochs} epochs, {arm.count('pruned')} pruned (x), best *",
                     fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{full.spec.metric.name} (dB)")
    names = ", ".join(p.name for p in full.spec.params)
    axes[1].legend(title=names, fontsize=7, title_fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def no_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


# -- main ----------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (benchmarks/pruning.py) for what is measured.")
    p.add_argument("--out", type=Path, help="output folder (default runs/bench-pruning, with --smoke "
                   "runs/bench-pruning-smoke)")
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="the grid (default benchmarks/configs/pruning.yaml)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the spec's base.num_epoch, 8)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the worker (default 1)")
    p.add_argument("--pruner", choices=sorted(PRUNERS), default="successive_halving",
                   help="the pruned arm's pruner, with the options in PRUNERS (default %(default)s)")
    p.add_argument("--seed", type=int, help="seed of the grid's order, the generated data and training (default: "
                   "the spec's, 0); the default --out gets a -seedN suffix")
    p.add_argument("--smoke", action="store_true", help="tiny data and 3 epochs: checks the machinery only")
    p.add_argument("--replay-grid", action="store_true", help="also replay the settings of REPLAY_GRID in "
                   f"{ORDERS} random orders (the whole --report-only --replay-grid: 28 s here)")
    p.add_argument("--overwrite", action="store_true", help="delete this --out's arm folders and run again")
    p.add_argument("--report-only", action="store_true", help="run nothing: report on the records in --out")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "runs" / ("bench-pruning-smoke" if args.smoke else "bench-pruning")
        if args.seed is not None:
            args.out = args.out.with_name(f"{args.out.name}-seed{args.seed}")
    if args.epochs is not None and args.epochs < 2:
        p.error("--epochs must be >= 2 (the teacher-forcing decay starts after epoch 1)")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    specs = {arm: out / "specs" / f"{arm}.yaml" for arm in ARMS}
    if not args.report_only:
        existing = [out / arm for arm in ARMS if (out / arm).exists()]
        if existing and not args.overwrite:
            raise SystemExit(f"{', '.join(map(str, existing))} exist: pass --overwrite to run again, or "
                             f"--report-only to report on them")
        for folder in existing:
            shutil.rmtree(folder)
        specs = write_specs(args, out)
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(args.threads),
               "CVAE_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
        print(f"benchmark: pruning; output {out}; pruner {PRUNERS[args.pruner]}; {args.threads} thread(s); "
              f"torch threads set per trial; logs in {out / 'logs'}", flush=True)
        t0 = time.perf_counter()
        cvae(["sweep", "init", str(specs["full"]), "--data-only"], out / "logs" / "data.log", env)
        print(f"dataset ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for arm in ARMS:
            print(f"arm {arm}: running {specs[arm]}", flush=True)
            wall = run_arm(arm, specs[arm], out, args.threads, env)
            print(f"arm {arm}: done in {fmt_duration(wall)}", flush=True)
    missing = [str(p) for p in specs.values() if not p.exists()]
    if missing:
        raise SystemExit(f"no benchmark run in {out} (missing {', '.join(missing)})")
    full, pruned = (load_arm(arm, specs[arm]) for arm in ARMS)
    if not full.trials or not pruned.trials:
        raise SystemExit(f"{out}: an arm has no trial records")
    print()
    results = report(full, pruned)
    if args.replay_grid:
        results["replay_grid"] = replay_grid(full, pruned.spec)
    if full.spec.base.get("num_epoch", 70) <= SMOKE["epochs"]:
        print(f"(a smoke-sized run: with {SMOKE['epochs']} epochs a pruned trial saves at most one; the criteria "
              f"above check the machinery, not the goal)")
    import torch

    results["settings"] = {
        "out": str(out), "epochs": int(full.spec.base.get("num_epoch", 70)), "threads": full.threads,
        "pruner": dict(pruned.spec.pruner), "smoke": args.smoke, "base": dict(full.spec.base),
        "synth": dict(full.spec.synth or {}), "seed": full.spec.seed, "grid_order": full.spec.grid_order,
        "run_order": [params for _, params in full.spec.grid_points()], "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "command": full.command,
    }
    (out / "results.json").write_text(json.dumps(no_nan(results), indent=2, default=str))
    figure(full, pruned, out / "val_psnr.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'val_psnr.png'}")
    return 0 if all(c["pass"] for c in results["criteria"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
