"""Benchmark: the reports' experiments re-measured on the generated data, with a reduced model that learns.

Usage:

    .venv/bin/python benchmarks/reports.py                # the measurement: 3 sweeps, 30 trials (~1.5 h on 2 cores)
    .venv/bin/python benchmarks/reports.py --report-only  # the table again, from the records of a finished run
    .venv/bin/python benchmarks/reports.py --smoke        # the machinery on tiny data, 2 epochs (~3 min): measures nothing
        [--out runs/bench-reports] [--workers 2]

Three sweeps through our own machinery (``cvae sweep run``, SQLite, W&B off), one per shipped spec in
``benchmarks/configs/reports/``: report 001's teacher-forcing schedules TF1-TF3, its KL annealing schedules
KL1-KL4 with report 000's hybrid as KL5, and report 000's N_dim 12 against 32. Each configuration runs 3
times (seeds 1-3) on the quickstart's generated data (one dancer, 768 training frames) with the quickstart's
reduced model, 12 epochs; the reports' 70-epoch schedules are scaled by their share of the run (the specs say
how). The lab-size versions of the same sweeps, for a GPU and the lab's data, are
``sweeps/configs/{teacher_forcing,kl_annealing,ndim}.yaml``.

It prints one table, a row per configuration: the validation PSNR at each run's best epoch and at its last
(mean ± 95% t-interval over the 3 seeds), the margin over copying the first frame of the validation video,
and the report's own figure where it gives one (report 001, fig. 3: average PSNR per configuration). Then
each of the reports' findings, tested on the per-seed values: for a claim "A > B" the difference of the
means with its 95% Welch interval and the one-sided p-value; the claim *holds* when the interval is above
0, is *contradicted* when it is below 0, and is *inconclusive* otherwise. The reports disagree on KL
annealing; the last lines say which of the two our data supports. Everything also goes to
``OUT/results.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "benchmarks" / "configs" / "reports"
SPECS = ("teacher_forcing", "kl_annealing", "ndim")

REPORTED = {"TF1": 28.10, "TF2": 26.15, "TF3": 33.83, "KL1": 27.85, "KL2": 25.48, "KL3": 24.95, "KL4": 24.65}
"""Report 001's average validation PSNR per configuration (the caption of its fig. 3), in dB."""
REPORT_NOTES = {"KL5": "report 000: worst, PSNR not rising", "N_dim=12": "report 000: below 32",
                "N_dim=32": "report 000: best, not significantly"}
"""What report 000 says where it gives no figure."""

SMOKE = {"num_epoch": 2, "val_vi_len": 12, "replicates": 2,
         "synth": {"train_frames": 64, "train_video_len": 32, "val_frames": 24, "test_sequences": 1,
                   "test_frames": 4, "dancers": 1, "seed": 0}}


@dataclass(frozen=True)
class Claim:
    """A finding of a report: each of ``pairs`` (A, B) claims A > B (``at_least``: A >= B)."""

    source: str
    text: str
    pairs: tuple[tuple[str, str], ...]
    at_least: bool = False


CLAIMS = (
    Claim("report 001 (report 000: TF3 best)", "teacher forcing: TF3 > TF1 > TF2", (("TF3", "TF1"), ("TF1", "TF2"))),
    Claim("report 000", "no annealing at least as good as monotonic: KL3 >= KL2", (("KL3", "KL2"),), at_least=True),
    Claim("report 000", "hybrid worst of all: KL1, KL2, KL3, KL4 > KL5",
          (("KL1", "KL5"), ("KL2", "KL5"), ("KL3", "KL5"), ("KL4", "KL5"))),
    Claim("report 001", "cyclical best, KL1 > KL2 > KL3 > KL4", (("KL1", "KL2"), ("KL2", "KL3"), ("KL3", "KL4"))),
    Claim("report 000", "N_dim 32 >= 12", (("N_dim=32", "N_dim=12"),), at_least=True),
)
KL_REPORTS = {"report 000": (1, 2), "report 001": (3,)}
"""Which claims (indices into CLAIMS) make up each report's view of KL annealing."""


# -- running ---------------------------------------------------------------------------------------------------
def spec_mapping(name: str, out: Path, *, workers: int, smoke: bool) -> dict[str, Any]:
    """The shipped spec with its outputs under ``out`` (and, for --smoke, tiny data and 2 epochs)."""
    raw = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())
    base = yaml.safe_load((SPEC_DIR / raw["base"]).read_text()) if isinstance(raw["base"], str) else raw["base"]
    if smoke:
        base = {**base, "num_epoch": SMOKE["num_epoch"], "val_vi_len": SMOKE["val_vi_len"], "lr_warmup": 4}
        raw["synth"] = dict(SMOKE["synth"])
        raw["replicates"] = SMOKE["replicates"]
    base["DR"] = str(out / "data")
    base["cache_dir"] = str(out / "cache")
    raw.update(base=base, workers=workers, output_dir=str(out / raw["name"]),
               storage=f"sqlite:///{out / raw['name'] / 'study.db'}")
    return raw


def run_sweep(name: str, out: Path, *, workers: int, smoke: bool) -> float:
    """``cvae sweep run`` one spec (written to ``out/specs``); returns its wall-clock seconds."""
    mapping = spec_mapping(name, out, workers=workers, smoke=smoke)
    path = out / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by benchmarks/reports.py from {SPEC_DIR / name}.yaml\n"
                    + yaml.safe_dump(mapping, sort_keys=False))
    # The benchmarks' one launcher (this folder is on sys.path when run as a script).
    from pruning import cvae

    wall = cvae(["sweep", "run", str(path), "--no-live"], out / "logs" / f"{name}.log",
                {**os.environ, "WANDB_MODE": "disabled"})
    # A resumed sweep (the benchmark run again after an interruption) adds its wall time to the earlier ones.
    wall_file = Path(mapping["output_dir"]) / "wall.json"
    runs = json.loads(wall_file.read_text()).get("runs_s", []) if wall_file.exists() else []
    runs.append(wall)
    wall_file.write_text(json.dumps({"wall_s": sum(runs), "runs_s": runs, "workers": workers}))
    return wall


# -- reading back ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One configuration over its seeds."""

    label: str
    sweep: str
    best: list[float]
    """Each seed's validation PSNR at its best epoch (the sweep's value)."""
    last: list[float]
    """Each seed's validation PSNR at its last epoch."""
    copy_first: float
    states: dict[str, int]

    @property
    def margins(self) -> list[float]:
        return [v - self.copy_first for v in self.best]


def read_rows(out: Path) -> list[Row]:
    from cvae.analysis.load import load_local

    rows = []
    for name in SPECS:
        folder = out / yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())["name"]
        if not folder.is_dir():
            continue
        data = load_local(folder)
        for label, group in data.runs.groupby("label", sort=False):
            best, last, copies = [], [], []
            for run in group.run:
                ep = data.epochs[data.epochs.run == run].dropna(subset=["val_psnr"])
                if ep.empty:
                    continue
                best.append(float(ep.val_psnr.max()))
                last.append(float(ep.sort_values("epoch").val_psnr.iloc[-1]))
                copies.append(float(ep.val_psnr_copy_first.iloc[0]))
            rows.append(Row(str(label), name, best, last, sum(copies) / len(copies) if copies else math.nan,
                            group.state.value_counts().to_dict()))
    return rows


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    from cvae.analysis.table import mean_ci as _mean_ci

    return _mean_ci(list(values))


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean difference a - b, its two-sided 95% Welch interval, and the one-sided p of a > b."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"diff": float(sum(a) / len(a) - sum(b) / len(b)) if a and b else math.nan, "lo": math.nan,
                "hi": math.nan, "p": math.nan}
    two = stats.ttest_ind(a, b, equal_var=False)
    ci = two.confidence_interval(0.95)
    one = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return {"diff": float(sum(a) / len(a) - sum(b) / len(b)), "lo": float(ci.low), "hi": float(ci.high),
            "p": float(one.pvalue)}


def verdict(cmp: Mapping[str, float]) -> str:
    if math.isnan(cmp["lo"]):
        return "inconclusive"
    if cmp["lo"] > 0:
        return "holds"
    if cmp["hi"] < 0:
        return "contradicted"
    return "inconclusive"


def judge(claim: Claim, by_label: Mapping[str, Row]) -> dict[str, Any]:
    """Each pair's comparison and the claim's overall verdict (holds only if every pair holds)."""
    pairs = []
    for a, b in claim.pairs:
        if a not in by_label or b not in by_label:
            pairs.append({"a": a, "b": b, "verdict": "not run"})
            continue
        cmp = compare(by_label[a].best, by_label[b].best)
        v = verdict(cmp)
        if claim.at_least and v == "inconclusive":
            v = "consistent"  # A >= B: no difference detected is what the claim allows
        pairs.append({"a": a, "b": b, **cmp, "verdict": v})
    verdicts = {p["verdict"] for p in pairs}
    if "not run" in verdicts:
        overall = "not run"
    elif "contradicted" in verdicts:
        overall = "contradicted"
    elif verdicts <= {"holds", "consistent"}:
        overall = "holds" if "consistent" not in verdicts else "consistent"
    else:
        overall = "inconclusive"
    return {"source": claim.source, "claim": claim.text, "verdict": overall, "pairs": pairs}


# -- the report ------------------------------------------------------------------------------------------------
def fmt(mean: float, ci: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if math.isnan(ci) else f"{text} ± {ci:.2f}"


def table_markdown(rows: Sequence[Row]) -> str:
    lines = ["| configuration | sweep | seeds | best-epoch val PSNR (dB) | last-epoch val PSNR (dB) | margin over "
             "copy-first (dB) | the report's figure |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        reported = f"{REPORTED[r.label]:.2f} dB (report 001)" if r.label in REPORTED else REPORT_NOTES.get(r.label, "-")
        lines.append(f"| {r.label} | {r.sweep} | {len(r.best)} | {fmt(*mean_ci(r.best))} | {fmt(*mean_ci(r.last))} | "
                     f"{fmt(*mean_ci(r.margins), signed=True)} | {reported} |")
    return "\n".join(lines)


def findings_markdown(judged: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for j in judged:
        parts = []
        for p in j["pairs"]:
            if p["verdict"] == "not run":
                parts.append(f"{p['a']} vs {p['b']}: not run")
                continue
            parts.append(f"{p['a']} - {p['b']} = {p['diff']:+.2f} dB (95% CI {p['lo']:+.2f} to {p['hi']:+.2f}, "
                         f"one-sided p {p['p']:.3f}): {p['verdict']}")
        lines.append(f"- {j['source']}: {j['claim']}: **{j['verdict']}**. " + "; ".join(parts) + ".")
    return "\n".join(lines)


def kl_sentence(judged: Sequence[Mapping[str, Any]]) -> str:
    """Which report's view of KL annealing our data supports."""
    support = {}
    for report, idx in KL_REPORTS.items():
        verdicts = {judged[i]["verdict"] for i in idx}
        if "contradicted" in verdicts:
            support[report] = "contradicted"
        elif verdicts <= {"holds", "consistent"}:
            support[report] = "supported"
        else:
            support[report] = "not shown either way"
    text = "; ".join(f"{r}'s view ({' and '.join(judged[i]['claim'] for i in KL_REPORTS[r])}) is {v}"
                     for r, v in support.items())
    return f"On KL annealing, where the reports disagree: {text}."


def report(out: Path) -> int:
    rows = read_rows(out)
    if not rows:
        raise SystemExit(f"{out}: no sweep records: run the benchmark first")
    by_label = {r.label: r for r in rows}
    judged = [judge(c, by_label) for c in CLAIMS]
    walls = {}
    for name in SPECS:
        wall_file = out / yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())["name"] / "wall.json"
        if wall_file.exists():
            record = json.loads(wall_file.read_text())
            walls[name] = record["wall_s"]
            if len(record.get("runs_s", [])) > 1:
                print(f"note: {name} ran in {len(record['runs_s'])} invocations (resumed); its wall time is their sum")
    table = table_markdown(rows)
    findings = findings_markdown(judged)
    kl = kl_sentence(judged)
    copy = sorted({round(r.copy_first, 2) for r in rows if not math.isnan(r.copy_first)})
    header = (f"Validation video: copying its first frame scores {', '.join(f'{c:.2f}' for c in copy)} dB. "
              f"Wall time: {', '.join(f'{k} {v / 60:.1f} min' for k, v in walls.items()) or 'not recorded'}.")
    print(header)
    print(table)
    print()
    print(findings)
    print(kl)
    (out / "table.md").write_text(f"{header}\n\n{table}\n\n{findings}\n\n{kl}\n")
    (out / "results.json").write_text(json.dumps({
        "rows": [{"label": r.label, "sweep": r.sweep, "best": r.best, "last": r.last, "copy_first": r.copy_first,
                  "states": r.states, "reported": REPORTED.get(r.label)} for r in rows],
        "findings": judged, "kl": kl, "wall_s": walls}, indent=2))
    failed = [r.label for r in rows if r.states.get("complete", 0) < len(r.best) or r.states.get("failed")]
    if failed:
        print(f"note: not every run of {', '.join(failed)} completed (see the sweeps' trials.csv)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default runs/bench-reports, --smoke: runs/bench-reports-smoke)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per sweep (default 2: one per core here)")
    parser.add_argument("--report-only", action="store_true", help="print the table from existing records")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 epochs, 2 seeds: checks the machinery")
    args = parser.parse_args(argv)
    out = Path(args.out or ("runs/bench-reports-smoke" if args.smoke else "runs/bench-reports")).resolve()
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        for name in SPECS:
            print(f"{name}: running ...", flush=True)
            wall = run_sweep(name, out, workers=args.workers, smoke=args.smoke)
            print(f"{name}: done in {wall / 60:.1f} min", flush=True)
    return report(out)


if __name__ == "__main__":
    sys.exit(main())
