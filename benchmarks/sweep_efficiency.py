"""Sweep efficiency on a CPU: how to split the cores, trial start-up, tracking overhead, memory per worker.

Usage:
    .venv/bin/python benchmarks/sweep_efficiency.py                    # quickstart grid, 1x2 vs 2x1
    .venv/bin/python benchmarks/sweep_efficiency.py --lab-defaults     # + memory of lab-default trials, ~+6 min
        [--out runs/bench-sweep] [--arms 1x2,2x1,2x2] [--spec sweeps/configs/quickstart.yaml]

Each arm runs the same sweep (the quickstart grid, W&B offline, SQLite) through ``cvae sweep
run`` or, for a WxT arm that does not split the cores (2x2), ``cvae sweep init`` + W ``cvae sweep worker
--threads T`` processes. What is printed comes from the trials' own records (``trial.json``: ``timing``
and ``resources``, written by the sweep runner for every trial):

- wall time of the sweep and trials per minute, per arm (WxT = workers x threads per worker);
- start-up: seconds from a worker claiming a trial to that trial's first training step (dataset from the
  uint8 cache, model, tracker), the first trial of each worker apart from the later ones;
- tracking: seconds in W&B, Optuna and the trial record, as a share of the trial's time;
- memory: each worker's resident memory after every trial and its peak, to show that a worker's memory
  does not grow from trial to trial.

``--lab-defaults`` adds one worker running 3 trials at the lab's model sizes, batch 2 x 16 frames, with
a 630-frame validation rollout (a short epoch: 160 training frames), for the peak memory of a lab-size
trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from cvae.core.config import read_yaml_mapping

ROOT = Path(__file__).resolve().parents[1]


def arm_spec(raw: dict[str, Any], name: str, out: Path, data: str = "data") -> Path:
    spec = {**raw, "name": name, "output_dir": str(out / name), "storage": f"sqlite:///{out / name / 'study.db'}",
            "wandb": {**raw.get("wandb", {}), "mode": "offline"}}
    spec["base"] = {**raw["base"], "DR": str(out / data), "cache_dir": str(out / "cache")}
    path = out / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cvae(*argv: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    fh = log.open("a")
    return subprocess.Popen([sys.executable, "-m", "cvae", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)


def run_arm(spec: Path, workers: int, threads: int, cores: int, log: Path, env: dict[str, str]) -> float:
    """Run the sweep; returns its wall time in seconds."""
    t0 = time.perf_counter()
    if workers * threads <= cores and threads == max(1, cores // workers):
        procs = [cvae("sweep", "run", str(spec), "--workers", str(workers), "--no-live", log=log, env=env)]
    else:  # an arm that does not split the cores: start the workers by hand
        if cvae("sweep", "init", str(spec), log=log, env=env).wait() != 0:
            raise SystemExit(f"cvae sweep init {spec} failed: see {log}")
        procs = [cvae("sweep", "worker", str(spec), "--threads", str(threads), log=log, env=env)
                 for _ in range(workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{spec}: a sweep process exited with {codes}: see {log}")
    return time.perf_counter() - t0


def read_trials(folder: Path) -> list[dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("t*/trial.json"))]
    return sorted(records, key=lambda r: r["started"])


def summarize(name: str, records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: r["finished"]):
        by_pid.setdefault(r["worker"]["pid"], []).append(r)
    first = [rs[0]["timing"]["startup_s"] for rs in by_pid.values()]
    later = [r["timing"]["startup_s"] for rs in by_pid.values() for r in rs[1:]]
    tracking = [r["timing"]["tracking_s"] / r["duration_s"] for r in records]
    return {
        "arm": name, "trials": len(records), "wall_s": wall, "trials_per_min": 60 * len(records) / wall,
        "startup_first_s": statistics.mean(first), "startup_later_s": statistics.mean(later) if later else None,
        "startup_later_max_s": max(later) if later else None,
        "tracking_share_mean": statistics.mean(tracking), "tracking_share_max": max(tracking),
        "train_val_share": sum(r["timing"]["train_s"] + r["timing"]["val_s"] for r in records)
        / sum(r["duration_s"] for r in records),
        "workers": {pid: {"rss_mib": [r["resources"]["rss_mib"] for r in rs],
                          "peak_rss_mib": [r["resources"]["peak_rss_mib"] for r in rs]}
                    for pid, rs in by_pid.items()},
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"\n{s['arm']}: {s['trials']} trials in {s['wall_s']:.0f} s ({s['trials_per_min']:.2f} trials/min); "
          f"training + validation {100 * s['train_val_share']:.1f}% of trial time")
    later = (f"{s['startup_later_s']:.2f} s (max {s['startup_later_max_s']:.2f} s)"
             if s["startup_later_s"] is not None else "-")
    print(f"  start-up to the first training step: first trial of a worker {s['startup_first_s']:.2f} s, "
          f"later trials {later}")
    print(f"  tracking (W&B + Optuna + records): mean {100 * s['tracking_share_mean']:.2f}% of a trial, "
          f"max {100 * s['tracking_share_max']:.2f}%")
    for pid, w in s["workers"].items():
        rss = w["rss_mib"]
        print(f"  worker {pid}: RSS after each trial (MiB) {' '.join(f'{v:.0f}' for v in rss)}; "
              f"peak {max(w['peak_rss_mib']):.0f} MiB; last - second trial {rss[-1] - rss[min(1, len(rss) - 1)]:+.0f} MiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-sweep")
    p.add_argument("--spec", default=str(ROOT / "sweeps/configs/quickstart.yaml"))
    p.add_argument("--arms", default="1x2,2x1", help="WxT: workers x threads per worker (default 1x2,2x1)")
    p.add_argument("--lab-defaults", action="store_true", help="also 3 trials at the lab's model sizes")
    args = p.parse_args()
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        p.error(f"--out {out} is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    raw = dict(read_yaml_mapping(args.spec))
    results = []
    for arm in args.arms.split(","):
        workers, threads = (int(v) for v in arm.split("x"))
        spec = arm_spec({**raw, "workers": workers}, f"arm-{arm}", out)
        wall = run_arm(spec, workers, threads, cores, out / f"arm-{arm}.log", env)
        results.append(summarize(f"{arm} (workers x threads)", read_trials(out / f"arm-{arm}"), wall))
        print_summary(results[-1])
    if args.lab_defaults:
        lab = {**raw, "workers": 1, "method": "grid", "parameters": {"N_dim": {"values": [12]}}, "replicates": 3,
               "synth": {**raw.get("synth", {}), "train_frames": 160, "val_frames": 630}}
        # The lab's defaults but one short epoch: model sizes, batch 2 x 16 frames, a 630-frame validation.
        lab["base"] = {"num_epoch": 1, "batch_size": 2, "train_vi_len": 16, "val_vi_len": 630, "tfr_d_step": 0,
                       "per_save": 1}
        spec = arm_spec(lab, "lab-defaults", out, data="data-lab")
        wall = run_arm(spec, 1, cores, cores, out / "lab-defaults.log", env)
        results.append(summarize("lab defaults, 1 worker", read_trials(out / "lab-defaults"), wall))
        print_summary(results[-1])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
