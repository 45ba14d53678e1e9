"""Benchmark: the reports' experiments re-measured on the generated data, with a reduced model that learns.

Usage:

    .venv/bin/python benchmarks/reports.py               # the measurement: 4 sweeps, 90 runs (~5-6 h on 2 cores)
    .venv/bin/python benchmarks/reports.py --sweeps kl_annealing-seed0 ndim-seed0  # only these (of the 4 sweeps)
    .venv/bin/python benchmarks/reports.py --report-only # no training: the CSV updated from OUT's records, the tables
    .venv/bin/python benchmarks/reports.py --table       # the tables from the committed CSV alone (no runs/ needed)
    .venv/bin/python benchmarks/reports.py --docs        # docs/reports.md written from the committed CSV
    .venv/bin/python benchmarks/reports.py --smoke --workers 1   # the machinery on tiny data, 2 epochs: measures nothing
        [--out runs/bench-reports] [--workers 2] [--csv benchmarks/results/reports_runs.csv] [--docs PATH]

What it runs. Sweeps through our own machinery (``cvae sweep run``, SQLite, W&B off), one per shipped spec in
``benchmarks/configs/reports/`` (the single source of the configurations): report 001's teacher-forcing
schedules TF1-TF3; its KL annealing schedules KL1-KL4 with report 000's hybrid as KL5, and KL1p and KL2p,
KL1 and KL2 changed to end on beta 1 (the spec shows each schedule's beta per epoch); report 000's N_dim 12
against 32. Each configuration runs 5 times (seeds 1-5) on the quickstart's generated data (one dancer, 768
training frames) with the quickstart's reduced model, 12 epochs. The KL sweep runs a second time on a
second generated dataset (``synth.seed`` 1, its own data folder and study): the benchmark overrides the
spec's ``synth.seed``, ``base.DR``, ``name`` and ``output_dir``, nothing else. The N_dim sweep runs N_dim 32
only: its N_dim 12 trains exactly as TF3 (``tfr`` 0 throughout, the same seeds and data; only ``tfr_sde`` and
``tfr_d_step`` differ, which move a ratio already at 0), so N_dim 12's values are TF3's runs. The lab-size
versions of the sweeps, for a GPU and the lab's data, are ``sweeps/configs/{teacher_forcing,kl_annealing,ndim}.yaml``.

Budget: teacher forcing 3 configurations x 5 = 15 runs, KL 7 x 5 x 2 data seeds = 70, N_dim 1 x 5 = 5
(N_dim 12 reused): 90 runs. A 12-epoch run has taken 3-4 min of 2-worker wall (the last measurement: 30 runs
in 1 h 46 min, before the full evaluation of the last epoch, which adds about half a minute): about 5 to 6 h
in all, twice the 3 h of one session. Every sweep resumes from its Optuna study and the CSV keeps what is
done, so the measurement splits into sessions with ``--sweeps``: ``kl_annealing-seed0 ndim-seed0`` (40 runs,
about 2.5 h), then ``teacher_forcing-seed0 kl_annealing-seed1`` (50 runs, about 3 h).

What it records. After each sweep, ``benchmarks/results/reports_runs.csv`` (``--csv``) gets one row per run
(:data:`RUN_COLUMNS`; a run read again replaces its row): the sweep, the data seed, the configuration, the
replicate and its seed, the schedule and model values, the best epoch and its val PSNR, and at the last
epoch (the one each sweep judges, ``metric.summary: last``, evaluated in full) the lab's single-sample val
PSNR, the best and mean of K samples of z, SSIM, the baselines, the diagnostics, the mean PSNR of the first
and second halves of the 630-frame rollout, the run's wall seconds and state. Everything after it, the
tables and docs/reports.md, is computed from that file alone.

What it tests, on the complete runs' last-epoch values, for the single-sample val PSNR and for the best of
K (each a separate analysis):

- the reports' claims and ours, declared here in advance as directed contrasts (:data:`CLAIMS`), each a
  Welch t-test of the per-seed values with Holm's correction over its family (all contrasts of one sweep on
  one data seed), a Bonferroni-adjusted interval, Hedges' g and a verdict: *holds* when the Holm-adjusted
  two-sided p < 0.05 and the difference has the claimed sign, *contradicted* when it has the other (each
  direction one-sided at 0.025, since both are looked at), else inconclusive (consistent, for A >= B);
- every pair of KL schedules with Tukey's HSD, a secondary table;
- report 001's decline of PSNR along the rollout: per configuration, the first half's mean PSNR minus the
  second's, a one-sample t-test over the runs, Holm over the configurations of a family.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from cvae.analysis.load import AnalysisError, load_local
from cvae.analysis.stats import mean_ci
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "benchmarks" / "configs" / "reports"
RUNS_CSV = ROOT / "benchmarks" / "results" / "reports_runs.csv"
DOCS = ROOT / "docs" / "reports.md"
SWEEPS = (("teacher_forcing", 0), ("kl_annealing", 0), ("ndim", 0), ("kl_annealing", 1))
"""(spec, data seed) of each sweep, in the order they run: the KL comparison again on a second dataset."""
REUSED = {("ndim", "N_dim=12"): ("teacher_forcing", "TF3")}
"""Configurations not run, (sweep, label) -> the one whose runs they are: the same training config, seeds and data
(tests/benchmarks/test_reports.py checks it)."""
ALPHA = 0.05
"""The family-wise error rate of every family of tests."""
METRICS = {"val_psnr": "val PSNR", "val_psnr_best_of_k": "best of K"}
"""The two metrics everything is computed for, at the last epoch: the lab's one sample of z, the best of K."""
HALVES = {"val_psnr": ("frames_first_psnr", "frames_second_psnr"),
          "val_psnr_best_of_k": ("frames_first_best_of_k", "frames_second_best_of_k")}
"""Each metric's mean per-frame PSNR over the first and second half of the rollout (the last epoch)."""

REPORTED = {"TF1": 28.10, "TF2": 26.15, "TF3": 33.83, "KL1": 27.85, "KL2": 25.48, "KL3": 24.95, "KL4": 24.65}
"""Report 001's average validation PSNR per configuration (the caption of its fig. 3), in dB."""
REPORT_NOTES = {"KL5": "report 000: worst, PSNR not rising", "N_dim=12": "report 000: below 32",
                "N_dim=32": "report 000: best, not significantly"}
"""What report 000 says where it gives no figure."""

SMOKE = {"num_epoch": 2, "val_vi_len": 12, "replicates": 2,
         "synth": {"train_frames": 64, "train_video_len": 32, "val_frames": 24, "test_sequences": 1,
                   "test_frames": 4, "dancers": 1}}


@dataclass(frozen=True)
class Claim:
    """A finding of a report, declared before the runs: in ``sweep``, each of ``pairs`` (A, B) claims A > B
    (``at_least``: A >= B)."""

    source: str
    sweep: str
    text: str
    pairs: tuple[tuple[str, str], ...]
    at_least: bool = False

    def contrast(self, a: str, b: str) -> str:
        return f"{a} {'>=' if self.at_least else '>'} {b}"


CLAIMS = (
    Claim("report 001 (report 000: TF3 best)", "teacher_forcing", "teacher forcing: TF3 > TF1 > TF2",
          (("TF3", "TF1"), ("TF1", "TF2"))),
    Claim("report 000", "kl_annealing", "no annealing at least as good as monotonic: KL3 >= KL2", (("KL3", "KL2"),),
          at_least=True),
    Claim("report 000", "kl_annealing", "hybrid worst of all: KL1, KL2, KL3, KL4 > KL5",
          (("KL1", "KL5"), ("KL2", "KL5"), ("KL3", "KL5"), ("KL4", "KL5"))),
    Claim("report 001", "kl_annealing", "cyclical best: KL1 > KL2 > KL3 > KL4",
          (("KL1", "KL2"), ("KL2", "KL3"), ("KL3", "KL4"))),
    Claim("this benchmark", "kl_annealing", "ending on beta 1 helps: KL1p > KL1, KL2p > KL2",
          (("KL1p", "KL1"), ("KL2p", "KL2"))),
    Claim("this benchmark", "kl_annealing", "no annealing ahead at an equal final beta: KL3 > KL1p, KL2p",
          (("KL3", "KL1p"), ("KL3", "KL2p"))),
    Claim("report 000", "ndim", "N_dim 32 at least as good as 12", (("N_dim=32", "N_dim=12"),), at_least=True),
)
KL_REPORTS = {"report 000": (1, 2), "report 001": (3,)}
"""Which claims (indices into CLAIMS) make up each report's view of KL annealing, where the two disagree."""


# -- the specs --------------------------------------------------------------------------------------------------
def read_spec(name: str) -> dict[str, Any]:
    return yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())


def compared(raw: dict[str, Any]) -> tuple[str, bool]:
    """The parameter a spec compares (its one with several values) and whether its values name sets (TF1)."""
    for key, param in raw["parameters"].items():
        if len(param.get("values", [])) > 1:
            return key, "sets" in param
    raise ValueError(f"{raw['name']}: no parameter with several values")


def label(raw: dict[str, Any], value: Any) -> str:
    """A configuration's name: the set's name (TF1), else ``key=value`` (N_dim=12)."""
    key, named = compared(raw)
    return str(value) if named else f"{key}={value}"


def configurations(sweep: str) -> list[str]:
    """The labels of a spec's configurations, in the spec's order."""
    raw = read_spec(sweep)
    return [label(raw, v) for v in raw["parameters"][compared(raw)[0]]["values"]]


def sweep_id(sweep: str, seed: int) -> str:
    return f"{sweep}-seed{seed}"


def output_folder(sweep: str, seed: int, out: Path) -> Path:
    """A sweep's output_dir under ``out``: its spec's name and the data seed (also its study's name)."""
    return out / f"{read_spec(sweep)['name']}-seed{seed}"


# -- running ---------------------------------------------------------------------------------------------------
def spec_mapping(sweep: str, seed: int, out: Path, *, workers: int, smoke: bool) -> dict[str, Any]:
    """The shipped spec on data seed ``seed``, its outputs under ``out``, the configurations of :data:`REUSED`
    left out (and, for --smoke, tiny data and 2 epochs)."""
    raw = read_spec(sweep)
    base = yaml.safe_load((SPEC_DIR / raw["base"]).read_text()) if isinstance(raw["base"], str) else raw["base"]
    if smoke:
        base = {**base, "num_epoch": SMOKE["num_epoch"], "val_vi_len": SMOKE["val_vi_len"], "lr_warmup": 4}
        raw["synth"] = dict(SMOKE["synth"])
        raw["replicates"] = SMOKE["replicates"]
    key, _ = compared(raw)
    values = raw["parameters"][key]["values"]
    raw["parameters"][key]["values"] = [v for v in values if (sweep, label(raw, v)) not in REUSED]
    raw["synth"] = {**raw["synth"], "seed": seed}
    base["DR"] = str(out / f"data-seed{seed}")
    base["cache_dir"] = str(out / "cache")
    folder = output_folder(sweep, seed, out)
    raw.update(name=folder.name, base=base, workers=workers, output_dir=str(folder),
               storage=f"sqlite:///{folder / 'study.db'}")
    return raw


def run_sweep(sweep: str, seed: int, out: Path, *, workers: int, smoke: bool) -> float:
    """``cvae sweep run`` one spec on one data seed (written to ``out/specs``); returns its wall-clock seconds.
    Run again, it resumes its study."""
    mapping = spec_mapping(sweep, seed, out, workers=workers, smoke=smoke)
    path = out / "specs" / f"{sweep_id(sweep, seed)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by benchmarks/reports.py from {SPEC_DIR / sweep}.yaml\n"
                    + yaml.safe_dump(mapping, sort_keys=False))
    # The benchmarks' one launcher (this folder is on sys.path when run as a script).
    from pruning import cvae

    return cvae(["sweep", "run", str(path), "--no-live"], out / "logs" / f"{sweep_id(sweep, seed)}.log",
                {**os.environ, "WANDB_MODE": "disabled"})


# -- the per-run CSV -------------------------------------------------------------------------------------------
KEY = ("sweep", "data_seed", "config", "replicate")
"""What identifies a run in the CSV: a run read again replaces its row."""
CONFIG_KEYS = ("kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio", "kl_hybrid_switch", "tfr", "tfr_sde",
               "tfr_d_step", "N_dim", "num_epoch")
LAST_EPOCH = ("val_psnr", "val_psnr_best_of_k", "val_psnr_mean_of_k", "val_ssim", "val_psnr_copy_first",
              "val_psnr_mean_frame", "val_psnr_z0", "val_psnr_no_prev", "val_psnr_swapped_frame", "val_kl",
              "val_active_units")
"""The metrics.csv columns the CSV takes from each run's last epoch (docs/evaluation.md says what each is)."""
RUN_COLUMNS = (*KEY, "seed", "run", "state", *CONFIG_KEYS, "epochs_done", "best_epoch", "best_val_psnr",
               "last_epoch", *LAST_EPOCH, *HALVES["val_psnr"], *HALVES["val_psnr_best_of_k"], "wall_s")
"""``reports_runs.csv``'s header. ``val_*`` are the last epoch's; ``best_val_psnr`` is the best epoch's (for
reference); ``frames_first_*`` / ``frames_second_*`` the last epoch's mean PSNR (lab rollout, best of K) of the
predicted frames 1-314 and 315-629 of the 630-frame validation clip; ``wall_s`` the run's seconds."""


def read_runs(sweep: str, seed: int, folder: Path) -> list[dict[str, Any]]:
    """One :data:`RUN_COLUMNS` row per run of a sweep's output folder (its trial.json, config.yaml,
    metrics.csv and psnr_per_frame.csv)."""
    raw = read_spec(sweep)
    key, _ = compared(raw)
    data = load_local(folder)
    rows = []
    for run in data.runs.to_dict("records"):
        epochs = data.epochs[data.epochs.run == run["run"]].dropna(subset=["val_psnr"])
        row = {"sweep": sweep, "data_seed": seed, "config": label(raw, run[key]), "replicate": run["replicate"],
               "seed": run.get("seed"), "run": run["run"], "state": run["state"], "epochs_done": run["epochs_done"],
               "wall_s": run["duration_s"], **{k: run.get(k) for k in CONFIG_KEYS}}
        if not epochs.empty:
            last, best = epochs.iloc[-1], epochs.loc[epochs.val_psnr.idxmax()]
            row.update(best_epoch=best.epoch, best_val_psnr=best.val_psnr, last_epoch=last.epoch,
                       **{col: last.get(col) for col in LAST_EPOCH})
            frames = data.frames[(data.frames.run == run["run"]) & (data.frames.epoch == last.epoch)]
            if not frames.empty:
                second = frames.frame >= (frames.frame.max() + 1) // 2  # frame 0 is given, 1..629 predicted
                for metric, (first_col, second_col) in HALVES.items():
                    curve = metric.removeprefix("val_")  # psnr_per_frame.csv's column: psnr, psnr_best_of_k
                    if curve in frames:
                        row[first_col] = frames[curve][~second].mean()
                        row[second_col] = frames[curve][second].mean()
        rows.append(row)
    return rows


def read_csv(path: Path) -> pd.DataFrame:
    """The per-run CSV (empty if there is none), with what the analysis derives per run: each metric's margin
    over copy-first (``margin_val_psnr``, ...) and the rollout's decline, first half minus second
    (``drop_val_psnr``, ...)."""
    runs = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=RUN_COLUMNS)
    for metric, (first, second) in HALVES.items():
        runs[f"margin_{metric}"] = runs[metric] - runs.val_psnr_copy_first
        runs[f"drop_{metric}"] = runs[first] - runs[second]
    return runs


def update_csv(path: Path, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Add ``rows`` to the CSV at ``path``, replacing the rows of the same runs (:data:`KEY`), sorted by sweep,
    data seed, configuration (the specs' order) and replicate. Returns the table written."""
    tables = [df for df in (read_csv(path)[list(RUN_COLUMNS)], pd.DataFrame(list(rows), columns=RUN_COLUMNS))
              if not df.empty]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=RUN_COLUMNS)
    table = table.drop_duplicates(subset=list(KEY), keep="last")
    order = {name: i for i, name in enumerate(dict.fromkeys(s for s, _ in SWEEPS))}
    position = {c: i for name in order for i, c in enumerate(configurations(name))}
    rank = {"sweep": order, "config": position}
    table = table.sort_values(list(KEY), key=lambda col: col.map(rank[col.name]) if col.name in rank else col,
                              kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    return table.reset_index(drop=True)


# -- statistics ------------------------------------------------------------------------------------------------
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjustment: the i-th smallest of m p-values times m - i + 1, never below the
    adjusted p before it, at most 1. Rejecting where the adjusted p < alpha keeps the chance of any false
    rejection in the family at most alpha. (scipy.stats adjusts only for false discovery rates.)"""
    m = len(pvalues)
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Standardized difference of means a - b: Cohen's d over the pooled standard deviation, times Hedges'
    small-sample correction 1 - 3 / (4 (n_a + n_b) - 9)."""
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * stats.tvar(a) + (nb - 1) * stats.tvar(b)) / (na + nb - 2))
    if pooled == 0:
        return math.nan
    return (sum(a) / na - sum(b) / nb) / pooled * (1 - 3 / (4 * (na + nb) - 9))


def welch(a: Sequence[float], b: Sequence[float], level: float) -> dict[str, float]:
    """Mean difference a - b, its Welch interval at ``level``, Hedges' g and the two-sided p of Welch's t-test."""
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(level)
    return {"diff": sum(a) / len(a) - sum(b) / len(b), "lo": float(ci.low), "hi": float(ci.high),
            "g": hedges_g(a, b), "p": float(res.pvalue)}


def one_sample(d: Sequence[float], level: float) -> dict[str, float]:
    """Mean of ``d``, its t-interval at ``level`` and the two-sided p of a one-sample t-test against 0."""
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(level)
    return {"diff": sum(d) / len(d), "lo": float(ci.low), "hi": float(ci.high), "p": float(res.pvalue)}


def family(samples: Sequence[tuple[list[float], ...]], test: Callable[..., dict[str, float]]) -> list[dict | None]:
    """``test`` on each sample whose groups have two values or more (the others: None), with Holm's adjusted p
    (``p_holm``) over them and an interval at the Bonferroni level 1 - ALPHA / m, m the tests made: an interval
    that leaves out 0 always goes with an adjusted p below ALPHA (Holm rejects whatever Bonferroni does), not
    always the other way round."""
    tested = [i for i, sample in enumerate(samples) if all(len(g) >= 2 for g in sample)]
    results: list[dict | None] = [None] * len(samples)
    for i in tested:
        results[i] = {**test(*samples[i], level=1 - ALPHA / len(tested)), "m": len(tested)}
    # A test with no p (every value equal in both groups) counts in the family as p = 1.
    adjusted = holm([1.0 if math.isnan(results[i]["p"]) else results[i]["p"] for i in tested])
    for i, p in zip(tested, adjusted, strict=True):
        results[i]["p_holm"] = p
    return results


def verdict(result: dict | None, at_least: bool = False) -> str:
    """``holds`` when the Holm-adjusted two-sided p < ALPHA and the difference has the claimed sign (each
    direction one-sided at ALPHA / 2: the reverse is tested too), ``contradicted`` when it has the other sign,
    else ``inconclusive`` (``consistent`` for an "at least as good" claim)."""
    if result is None:
        return "not run"
    if result["p_holm"] < ALPHA:
        return "holds" if result["diff"] > 0 else "contradicted"
    return "consistent" if at_least else "inconclusive"


def values(runs: pd.DataFrame, sweep: str, seed: int, config: str, column: str) -> list[float]:
    """A configuration's finite values of ``column`` over its complete runs (a :data:`REUSED` one: those of the
    runs it reuses)."""
    sweep, config = REUSED.get((sweep, config), (sweep, config))
    rows = runs[(runs.sweep == sweep) & (runs.data_seed == seed) & (runs.config == config)
                & (runs.state == "complete")]
    return [float(v) for v in rows[column] if pd.notna(v)]


def contrasts(runs: pd.DataFrame, sweep: str, seed: int, metric: str) -> list[dict[str, Any]]:
    """Every claim's contrasts in one family (``sweep`` on data seed ``seed``), tested on ``metric``. A pair
    that two claims compare (KL3 >= KL2, KL2 > KL3) is one test, read in each claim's direction."""
    directed = [(claim, a, b) for claim in CLAIMS if claim.sweep == sweep for a, b in claim.pairs]
    pairs: list[tuple[str, str]] = []
    for _, a, b in directed:
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    tested = family([tuple(values(runs, sweep, seed, c, metric) for c in pair) for pair in pairs], welch)
    out = []
    for claim, a, b in directed:
        forward = (a, b) in pairs
        r = tested[pairs.index((a, b) if forward else (b, a))]
        if r is not None and not forward:
            r = {**r, "diff": -r["diff"], "lo": -r["hi"], "hi": -r["lo"], "g": -r["g"]}
        out.append({"claim": claim, "a": a, "b": b, "text": claim.contrast(a, b), "result": r,
                    "verdict": verdict(r, claim.at_least)})
    return out


def tukey(runs: pd.DataFrame, sweep: str, seed: int, metric: str) -> list[dict[str, Any]]:
    """Every pair of a sweep's configurations, Tukey's HSD (scipy.stats.tukey_hsd): difference, simultaneous
    95% interval and adjusted p."""
    groups = {c: values(runs, sweep, seed, c, metric) for c in configurations(sweep)}
    groups = {c: v for c, v in groups.items() if len(v) >= 2}
    if len(groups) < 2:
        return []
    names = list(groups)
    res = stats.tukey_hsd(*groups.values())
    ci = res.confidence_interval(1 - ALPHA)
    return [{"a": names[i], "b": names[j], "diff": sum(groups[names[i]]) / len(groups[names[i]])
             - sum(groups[names[j]]) / len(groups[names[j]]), "lo": float(ci.low[i, j]),
             "hi": float(ci.high[i, j]), "p": float(res.pvalue[i, j])}
            for i in range(len(names)) for j in range(i + 1, len(names))]


def declines(runs: pd.DataFrame, sweep: str, seed: int, metric: str) -> list[dict[str, Any]]:
    """Per configuration run in this family, the rollout's decline tested against 0, Holm over the configurations."""
    configs = [c for c in configurations(sweep) if (sweep, c) not in REUSED]
    tested = family([(values(runs, sweep, seed, c, f"drop_{metric}"),) for c in configs], one_sample)
    return [{"config": c, "result": r, "verdict": verdict(r)} for c, r in zip(configs, tested, strict=True)]


# -- the report ------------------------------------------------------------------------------------------------
TITLES = {"teacher_forcing": "Teacher forcing", "kl_annealing": "KL annealing", "ndim": "N_dim"}


def families(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """The (sweep, data seed) of :data:`SWEEPS` that have runs in the table."""
    return [(s, seed) for s, seed in SWEEPS if ((runs.sweep == s) & (runs.data_seed == seed)).any()]


def fmt(mean: float, half: float = math.nan, signed: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if math.isnan(half) else f"{text} ± {half:.2f}"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def others(parts: list[str], rest: int, what: str) -> list[str]:
    """``parts`` and, where some tests resolved nothing, how many."""
    if not rest:
        return parts
    return [*parts, f"{rest} other{'s' if rest > 1 else ''} not resolved"] if parts else [
        f"no {what} resolved after Holm's correction"]


def summarize(judged: Sequence[dict[str, Any]], say_holds: Callable[[str, int], str],
              say_against: Callable[[str, int], str], what: str) -> str:
    """What the corrected tests of one family show and nothing else: the tests that hold, those contradicted
    (each said by its ``say_*`` from the joined names and their count), how many are not resolved."""
    holds = [j["text"] for j in judged if j["verdict"] == "holds"]
    against = [j["text"] for j in judged if j["verdict"] == "contradicted"]
    parts = [say(join(names), len(names)) for say, names in ((say_holds, holds), (say_against, against)) if names]
    return "; ".join(others(parts, len(judged) - len(holds) - len(against), what))


def finding(judged: Sequence[dict[str, Any]]) -> str:
    """Which contrasts hold, which are contradicted, how many are not resolved."""
    return summarize(judged, lambda names, n: f"{names} {'holds' if n == 1 else 'hold'} after Holm's correction",
                     lambda names, n: f"{names} {'is' if n == 1 else 'are'} contradicted after Holm's correction",
                     "contrast")


def decline_finding(judged: Sequence[dict[str, Any]]) -> str:
    """The same for the rollout's decline: where PSNR falls, where it rises, how many are not resolved."""
    return summarize(judged, lambda names, n: f"PSNR falls along the rollout in {names} after Holm's correction",
                     lambda names, n: f"PSNR rises along the rollout in {names} after Holm's correction", "decline")


def configuration_table(runs: pd.DataFrame) -> str:
    """Per configuration, the mean over its complete runs ± the half-width of its 95% t-interval."""
    lines = ["| sweep | data seed | configuration | runs | val PSNR, last epoch (dB) | margin over copy-first | "
             "best of K, last epoch (dB) | margin over copy-first | val PSNR, best epoch | the report's figure |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sweep, seed in families(runs):
        for config in configurations(sweep):
            cells = [fmt(*mean_ci(values(runs, sweep, seed, config, col)), signed=col.startswith("margin"))
                     for col in ("val_psnr", "margin_val_psnr", "val_psnr_best_of_k", "margin_val_psnr_best_of_k",
                                 "best_val_psnr")]
            n = len(values(runs, sweep, seed, config, "val_psnr"))
            if not n:
                continue
            reused = REUSED.get((sweep, config))
            n_text = f"{n} ({reused[1]}'s runs)" if reused else str(n)
            report = (f"{REPORTED[config]:.2f} dB (report 001)" if config in REPORTED
                      else REPORT_NOTES.get(config, "-"))
            lines.append(f"| {TITLES[sweep]} | {seed} | {config} | {n_text} | " + " | ".join(cells) + f" | {report} |")
    return "\n".join(lines)


def unlearned(runs: pd.DataFrame, sweep: str, seed: int) -> list[str]:
    """The configurations of a family whose runs do not beat copying the first frame on average (last epoch,
    val PSNR): models that learned nothing, which a contrast cannot rank."""
    return [c for c in configurations(sweep)
            if (margins := values(runs, sweep, seed, c, "margin_val_psnr")) and sum(margins) / len(margins) <= 0]


def contrast_section(runs: pd.DataFrame, sweep: str, seed: int, metric: str) -> str:
    judged = contrasts(runs, sweep, seed, metric)
    below = unlearned(runs, sweep, seed)
    m = next((j["result"]["m"] for j in judged if j["result"]), 0)
    level = f"{100 * (1 - ALPHA / m):.4g}%" if m else "-"
    lines = [f"### {TITLES[sweep]}, data seed {seed}, {METRICS[metric]}: {finding(judged)}", "",
             f"| claim | contrast | A - B (dB) | {level} interval (Bonferroni, {m} test{'s' if m != 1 else ''}) | Hedges' g | "
             "p (Welch, two-sided) | p (Holm) | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for j in judged:
        r = j["result"]
        source = f"{j['claim'].source}: {j['claim'].text}"
        if r is None:
            lines.append(f"| {source} | {j['text']} | - | - | - | - | - | not run |")
            continue
        caveat = " (under copy-first: compares nothing)" if {j["a"], j["b"]} & set(below) else ""
        lines.append(f"| {source} | {j['text']} | {r['diff']:+.2f} | {r['lo']:+.2f} to {r['hi']:+.2f} | "
                     f"{r['g']:+.2f} | {fmt_p(r['p'])} | {fmt_p(r['p_holm'])} | {j['verdict']}{caveat} |")
    if below:
        lines += ["", f"Under copying the first frame on average, so learned nothing: {join(below)}."]
    return "\n".join(lines)


def tukey_section(runs: pd.DataFrame, sweep: str, seed: int, metric: str) -> str:
    pairs = tukey(runs, sweep, seed, metric)
    differ = [f"{p['a']} > {p['b']}" if p["diff"] > 0 else f"{p['b']} > {p['a']}" for p in pairs if p["p"] < ALPHA]
    shown = (f"{join(differ)} at Tukey's 5% family-wise level" if differ
             else "no pair differs at Tukey's 5% family-wise level")
    lines = [f"### Every pair of {TITLES[sweep]} configurations (Tukey HSD), data seed {seed}, {METRICS[metric]}: "
             f"{shown}", "", "| A | B | A - B (dB) | simultaneous 95% interval | p (Tukey) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {p['a']} | {p['b']} | {p['diff']:+.2f} | {p['lo']:+.2f} to {p['hi']:+.2f} | {fmt_p(p['p'])} |"
              for p in pairs]
    return "\n".join(lines)


def judged_declines(runs: pd.DataFrame, metric: str) -> list[dict[str, Any]]:
    """The rollout's decline of every configuration of every family that was tested."""
    return [{**d, "sweep": sweep, "seed": seed, "text": f"{d['config']} (data seed {seed})"}
            for sweep, seed in families(runs) for d in declines(runs, sweep, seed, metric) if d["result"]]


DECLINE_VERDICTS = {"holds": "falls", "contradicted": "rises"}


def decline_section(runs: pd.DataFrame, metric: str) -> str:
    judged = judged_declines(runs, metric)
    lines = [f"### The rollout's decline (report 001), {METRICS[metric]}: {decline_finding(judged)}", "",
             "| sweep | data seed | configuration | runs | frames 1-314 minus 315-629 (dB) | interval (Bonferroni) | "
             "p (two-sided) | p (Holm, over the family's configurations) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in judged:
        r = d["result"]
        n = len(values(runs, d["sweep"], d["seed"], d["config"], f"drop_{metric}"))
        lines.append(f"| {TITLES[d['sweep']]} | {d['seed']} | {d['config']} | {n} | {r['diff']:+.2f} | "
                     f"{100 * (1 - ALPHA / r['m']):.4g}%: {r['lo']:+.2f} to {r['hi']:+.2f} | {fmt_p(r['p'])} | "
                     f"{fmt_p(r['p_holm'])} | {DECLINE_VERDICTS.get(d['verdict'], d['verdict'])} |")
    return "\n".join(lines)


def results_markdown(runs: pd.DataFrame) -> str:
    """The tables computed from the CSV, as Markdown: the configurations, each family's contrasts, the Tukey
    tables, the rollout's decline; each heading says what its corrected tests show."""
    complete = runs[runs.state == "complete"]
    copy = sorted({round(float(v), 2) for v in complete.val_psnr_copy_first.dropna()})
    incomplete = [f"{r.sweep} {r.config} data seed {r.data_seed} replicate {r.replicate} ({r.state})"
                  for r in runs[runs.state != "complete"].itertuples()]
    parts = [f"{len(complete)} complete runs ({complete.wall_s.sum() / 3600:.1f} h of run time, summed over runs); "
             f"copying the first frame of the validation video scores {', '.join(f'{c:.2f}' for c in copy) or '-'} dB; "
             f"{int((complete.margin_val_psnr > 0).sum())} of them beat it at their last epoch (val PSNR)."
             + (f" Left out, not complete: {'; '.join(incomplete)}." if incomplete else ""),
             "### Per configuration", configuration_table(runs)]
    for sweep, seed in families(runs):
        parts += [contrast_section(runs, sweep, seed, metric) for metric in METRICS]
    parts += [tukey_section(runs, sweep, seed, metric) for sweep, seed in families(runs) if sweep == "kl_annealing"
              for metric in METRICS if tukey(runs, sweep, seed, metric)]
    parts += [decline_section(runs, metric) for metric in METRICS]
    return "\n\n".join(parts)


def claim_verdict(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its contrasts': it holds only if every one holds."""
    found = set(verdicts)
    if "not run" in found:
        return "not run"
    if "contradicted" in found:
        return "contradicted"
    if found <= {"holds", "consistent"}:
        return "consistent" if "consistent" in found else "holds"
    return "inconclusive"


def findings_markdown(runs: pd.DataFrame) -> str:
    """What the corrected tests show, generated from the verdicts: per family and metric, the contrasts that
    hold or are contradicted; the rollout's decline; each claim's verdict; which report's view of KL annealing
    the data supports."""
    lines = []
    for sweep, seed in families(runs):
        for metric, title in METRICS.items():
            judged = contrasts(runs, sweep, seed, metric)
            lines.append(f"- {TITLES[sweep]}, data seed {seed}, {title}: {finding(judged)}.")
            overall = {claim: claim_verdict([j["verdict"] for j in judged if j["claim"] == claim])
                       for claim in dict.fromkeys(j["claim"] for j in judged)}
            lines += [f"  - {claim.source}, {claim.text}: **{v}**." for claim, v in overall.items()]
            if sweep == "kl_annealing":
                views = []
                for report, idx in KL_REPORTS.items():
                    found = {overall[CLAIMS[i]] for i in idx}
                    view = ("contradicted" if "contradicted" in found else
                            "supported" if found <= {"holds", "consistent"} else "not shown either way")
                    views.append(f"{report}'s view ({' and '.join(CLAIMS[i].text for i in idx)}) is {view}")
                lines.append(f"  - Where the reports disagree: {'; '.join(views)}.")
    lines += [f"- The rollout's decline, {title}: {decline_finding(judged_declines(runs, metric))}."
              for metric, title in METRICS.items()]
    return "\n".join(lines)


DOCS_INTRO = """\
# The reports' experiments, re-measured

The two Lab-4 reports in `shared/seeds/` compare teacher-forcing schedules, KL-annealing schedules and the
noise size N_dim on the lab's data, 70 epochs on a GPU. `benchmarks/reports.py` runs the same comparisons on
the generated data with a reduced model that learns (the quickstart's: one dancer, `F_dim 24 L_dim 8
D_out_dim 24`, lr 2e-3 cosine with a one-epoch warmup, [learning.md](learning.md)), 12 epochs, 5 seeds per
configuration, through the platform itself: one sweep per shipped spec in `benchmarks/configs/reports/`.

| spec | configurations | schedules, scaled from the reports' 70 epochs to 12 by their share of the run |
| --- | --- | --- |
| `teacher_forcing.yaml` | TF1, TF2, TF3 (report 001), no KL annealing (as report 000 isolated it) | TF1 tfr 1.0, 0.5, 0 (the report's reaches 0 at 14% of the run); TF2 0.5, 0.5, 0.25, 0 (from 14% to 27%); TF3 0 |
| `kl_annealing.yaml`, on two generated datasets (`synth.seed` 0 and 1) | KL1 cyclical, KL2 monotonic, KL3 none, KL4 cyclical ratio 0.5 (report 001), KL5 hybrid (report 000); KL1p and KL2p, KL1 and KL2 changed to end on beta 1 | 2 cycles of 6 epochs (the reports: 10 of 7); KL2 rises over the whole run; KL5 cyclical for the first half, then beta 1; KL1 ends its cycles at beta 0.833 and KL2 at 0.917, KL1p (ratio 0.8) and KL2p (ratio 0.9) at 1 (the spec lists every epoch's beta); teacher forcing: the lab's default, scaled (1.0, 1.0, 0.5, then 0) |
| `ndim.yaml` | N_dim 12 vs 32 (report 000) | no annealing, no teacher forcing (report 000's final model); N_dim 12 trains exactly as TF3, whose runs it reuses |

Every run is judged at its last epoch (`metric.summary: last`), which is evaluated in full
([evaluation.md](evaluation.md)): the lab's single-sample PSNR, the best of K = 5 samples of z, SSIM and the
diagnostics. For a GPU and the lab's data, the lab-size versions of the same sweeps are
`sweeps/configs/{teacher_forcing,kl_annealing,ndim}.yaml`.

```bash
.venv/bin/python benchmarks/reports.py          # the sweeps (resumable), each followed by the per-run CSV
.venv/bin/python benchmarks/reports.py --table  # the tables again, from the committed CSV alone
.venv/bin/python benchmarks/reports.py --docs   # this page, from the committed CSV
```

Every run's numbers are in [`benchmarks/results/reports_runs.csv`](../benchmarks/results/reports_runs.csv),
one row per run; everything below is computed from that file.
"""

DOCS_HOW_TO_READ = """\
## How to read it

- **Values.** Per configuration, the mean over its complete runs ± the half-width of its 95% t-interval (one
  configuration's interval, not a comparison). "Last epoch" is what the sweeps judge; the best epoch's val
  PSNR is there for reference only and is not tested. The margin is a run's value minus copying the first
  frame of the validation video.
- **Two metrics, analysed apart.** The lab's single-sample val PSNR (`val_psnr`, one draw of z) and the best
  of K = 5 draws (`val_psnr_best_of_k`, per video the best sample). Each has its own tests and corrections.
- **Contrasts, declared in advance.** Each claim of the reports (and two of ours, on KL1p and KL2p) is a list
  of directed contrasts "A > B" (or "A >= B"), fixed in `benchmarks/reports.py` before the runs. A
  contrast is Welch's t-test on the per-seed values. A **family** is all contrasts of one sweep on one data
  seed, for one metric; a pair that two claims compare in opposite directions (KL3 >= KL2, KL2 > KL3) is one
  test. Within a family the two-sided p-values are adjusted with **Holm's** step-down method, which keeps the
  chance of any false verdict in the family at 5%.
- **Verdicts.** A contrast *holds* when its Holm-adjusted p < 0.05 and A - B has the claimed sign, and is
  *contradicted* when it has the other sign (both directions are looked at, each one-sided at 2.5%). Otherwise
  it is *inconclusive*, or *consistent* for an "at least as good" claim. A claim holds when every one of its
  contrasts holds.
- **Intervals and effect sizes.** The interval of A - B is Welch's at the Bonferroni level 1 - 0.05 / m (m
  the family's tests), simultaneous over the family: one that leaves out 0 always comes with a verdict; Holm
  can give a verdict whose interval just touches 0. Hedges' g is A - B over the pooled standard deviation,
  corrected for small samples.
- **Tukey HSD** compares every pair of KL schedules on one data seed (a secondary table; it assumes equal
  variances, the contrasts do not).
- **The rollout's decline** (report 001: PSNR falls along the 630-frame rollout): per run, the mean PSNR of
  the predicted frames 1-314 minus frames 315-629 at the last epoch; per configuration, a one-sample t-test
  against 0 over its runs, Holm over the configurations of the family.

The figures: `cvae analysis figures --runs runs/bench-reports/reports-<sweep>-seed<N> --out DIR` after the
benchmark (they need the runs, not only the CSV).
"""


def docs_page(runs: pd.DataFrame, csv_name: str) -> str:
    """docs/reports.md: the hand-written setup and reading guide around everything computed from the CSV."""
    marker = (f"<!-- Generated by `.venv/bin/python benchmarks/reports.py --docs` from {csv_name}: edit "
              "benchmarks/reports.py (DOCS_INTRO, DOCS_HOW_TO_READ), not this file. -->")
    return "\n".join([marker, DOCS_INTRO, "## Result", "", results_markdown(runs), "", "## What it shows", "",
                      findings_markdown(runs), "", DOCS_HOW_TO_READ])


def main(argv: Sequence[str] | None = None) -> int:
    ids = [sweep_id(s, seed) for s, seed in SWEEPS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="runs folder (default runs/bench-reports, --smoke: runs/bench-reports-smoke)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per sweep (default 2: one per core here)")
    parser.add_argument("--sweeps", nargs="+", choices=ids, default=ids,
                        help="the sweeps to run, or with --report-only to read (default: all; they run in this order)")
    parser.add_argument("--csv", default=None, help=f"the per-run CSV (default {RUNS_CSV.relative_to(ROOT)}, --smoke: OUT/reports_runs.csv)")
    parser.add_argument("--report-only", action="store_true", help="no training: update the CSV from OUT's records, print the tables")
    parser.add_argument("--table", action="store_true", help="print the tables from the CSV alone")
    parser.add_argument("--docs", nargs="?", const=str(DOCS), default=None, metavar="PATH",
                        help=f"write the results page from the CSV alone (default {DOCS.relative_to(ROOT)})")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 epochs, 2 seeds: checks the machinery")
    args = parser.parse_args(argv)
    out = Path(args.out or ("runs/bench-reports-smoke" if args.smoke else "runs/bench-reports")).resolve()
    csv = Path(args.csv).resolve() if args.csv else (out / "reports_runs.csv" if args.smoke else RUNS_CSV)
    if args.docs:
        name = csv.relative_to(ROOT) if csv.is_relative_to(ROOT) else csv.name
        Path(args.docs).write_text(docs_page(read_csv(csv), str(name)))
        print(f"wrote {args.docs} from {csv}")
        return 0
    for sweep, seed in SWEEPS:
        if args.table or sweep_id(sweep, seed) not in args.sweeps:
            continue
        if not args.report_only:
            out.mkdir(parents=True, exist_ok=True)
            print(f"{sweep_id(sweep, seed)}: running ...", flush=True)
            wall = run_sweep(sweep, seed, out, workers=args.workers, smoke=args.smoke)
            print(f"{sweep_id(sweep, seed)}: done in {wall / 60:.1f} min", flush=True)
        folder = output_folder(sweep, seed, out)
        try:
            update_csv(csv, read_runs(sweep, seed, folder))
        except AnalysisError as err:  # --report-only on a sweep not run (yet)
            print(f"{sweep_id(sweep, seed)}: {err}", flush=True)
    runs = read_csv(csv)
    if runs.empty:
        raise SystemExit(f"{csv}: no runs: run the benchmark first")
    print(results_markdown(runs), findings_markdown(runs), sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
