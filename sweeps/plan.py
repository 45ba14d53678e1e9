"""``cvae sweep plan``: what a sweep will run and roughly how long, before anything runs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from cvae.core import epoch_seconds
from cvae.core.config import ScheduleConfig
from cvae.core.layout import list_frames
from cvae.core.schedules import settled_epoch
from cvae.sweeps.report import fmt_duration
from cvae.sweeps.space import first_pruning_step, representative_params
from cvae.sweeps.spec import SweepSpec


def _split_frames(spec: SweepSpec, split: str, synth_default: int) -> int | None:
    """Frames of the dataset's ``train`` or ``val`` split: counted on disk, else what ``synth`` will write."""
    root = spec.data_root
    if root and (Path(root) / split / f"{split}_img").is_dir():
        return len(list_frames(Path(root) / split / f"{split}_img"))
    if spec.synth:
        frames = spec.synth.frames(split)
        return int(frames if frames is not None else synth_default)
    return None


def time_one_epoch(spec: SweepSpec, params: dict, threads: int) -> tuple[float, float]:
    """(seconds of one training epoch, mean seconds of one validation) of a trial, from a short timing
    (:func:`cvae.core.epoch_seconds`) on the spec's dataset (counted on disk, else what ``synth`` writes)."""
    cfg = spec.trial_config(params, save_root="plan")
    return epoch_seconds(cfg, _split_frames(spec, "train", 1600), _split_frames(spec, "val", 630), threads=threads)


def schedule_note(spec: SweepSpec) -> str | None:
    """A warning when the pruner may stop trials before their KL and teacher-forcing schedules settle.

    Until then validation ranks the configs by where they are in their schedules, not by where they end:
    in the pruning benchmark (README) the first look, after epoch 2 and under teacher forcing, stopped the
    eventual best, which led from epoch 5, the first without it.
    """
    first = first_pruning_step(spec.pruner)
    if first is None:
        return None
    latest, example, num_epoch = -1, {}, 0
    for params in representative_params(spec):
        cfg = spec.trial_config(params, save_root="plan")
        settled = settled_epoch(cfg.schedule, cfg.run.num_epoch)
        if settled > latest:
            latest, example, num_epoch = settled, params, cfg.run.num_epoch
    if latest <= first:
        return None
    keys = {f.name for f in fields(ScheduleConfig)} | {"num_epoch"}
    shown = ", ".join(f"{k}={v}" for k, v in example.items() if k in keys) or "the base config"
    text = (f"the pruner may stop a trial after epoch {first + 1}, but beta and the teacher-forcing ratio reach "
            f"their final values only in epoch {latest + 1} of {num_epoch} (with {shown}): until then validation "
            f"ranks configs by where they are in their schedules (see the README's pruning benchmark)")
    if latest <= num_epoch // 2:
        text += f"; min_resource or n_warmup_steps {latest} waits for them"
    return text


def plan_text(spec: SweepSpec) -> str:
    """The trials a sweep makes, its conditional branches, epochs in total, and an estimated time."""
    target = f", target {spec.metric.target:g}" if spec.metric.target is not None else ""
    lines = [f"sweep {spec.name}: method {spec.method}, metric {spec.metric.name} ({spec.metric.goal}{target}), "
             f"{spec.replicates} replicate(s), {spec.workers} worker(s)"]
    if spec.display_name:
        lines.insert(0, spec.display_name)
    conditional = [p for p in spec.params if p.when]
    for p in conditional:
        lines.append(f"  branch: {p.name} only when " + ", ".join(f"{k} in {list(v)}" for k, v in p.when.items()))
    if spec.method == "grid":
        points = spec.grid_points()
        order = f", shuffled with seed {spec.seed}" if spec.grid_order == "shuffled" else ""
        lines.append(f"grid: {len(points)} parameter set(s), in run order{order} (#: the point's place in the "
                     f"listed grid):")
        lines += [f"  {i:3d}  " + ", ".join(f"{k}={v}" for k, v in p.items()) for i, p in points]
        first = points[0][1] if points else {}
    else:
        drawn = "parameter sets drawn until the sweep is stopped (no run_cap)" if spec.until_stopped else (
            f"{spec.run_cap} parameter set(s) drawn")
        lines.append(f"{spec.method}: {drawn} from:")
        for p in spec.params:
            if p.is_quantized_log:
                rng = f"[{p.values[0]}, {p.values[-1]}], {len(p.values)} multiples of q"
            else:
                rng = list(p.values) if p.values else f"[{p.low}, {p.high}]" + (f" step {p.q}" if p.q else "")
            weights = (f" with probabilities {[round(w, 3) for w in p.probabilities]}"
                       if p.probabilities and not p.is_quantized_log else "")
            lines.append(f"  {p.name}: {p.wandb_distribution} {rng}{weights}")
        first = {p.name: p.boundary_values()[0] for p in spec.params}
    trials = spec.n_configs() * spec.replicates
    cfg = spec.trial_config(first, save_root="plan")
    num_epoch = spec.num_epoch
    per_trial = num_epoch.max if num_epoch.is_swept else cfg.run.num_epoch
    epochs = trials * per_trial
    swept = (f"; num_epoch is swept from {num_epoch.min} to {num_epoch.max}"
             if num_epoch.is_swept and num_epoch.min != num_epoch.max else "")
    if spec.until_stopped:
        lines.append(f"trials: until stopped, each at most {per_trial} epoch(s) (pruning stops some early{swept})")
    else:
        lines.append(f"trials: {trials}, epochs in total: {epochs} (at most: pruning stops some trials early{swept})")
    if spec.pruner.type != "none":
        lines.append("pruner: " + ", ".join(f"{k}={v}" for k, v in spec.pruner.items()))
        if spec.method == "grid" and spec.grid_order == "listed":
            lines.append("  note: the pruner judges each trial against those before it, and this grid runs in its "
                         "listed order; grid_order: shuffled mixes the configs")
        note = schedule_note(spec)
        if note:
            lines.append("  note: " + note)
    threads = max(1, (torch.get_num_threads() or 1) // spec.workers) if spec.workers > 1 else torch.get_num_threads()
    train_s, val_s = time_one_epoch(spec, first, threads)
    if train_s == 0:
        lines.append("estimated time: unknown (the dataset does not exist yet and the spec has no synth:)")
    else:
        per_epoch = train_s + val_s
        total = per_epoch * per_trial if spec.until_stopped else per_epoch * epochs / spec.workers
        until = "per trial " if spec.until_stopped else ""
        lines.append(f"estimated time: {until}{fmt_duration(total)} ({fmt_duration(per_epoch)} per epoch: "
                     f"{fmt_duration(train_s)} training + {fmt_duration(val_s)} validation, timed on the first "
                     f"trial's model with {threads} thread(s); other sizes differ)")
    return "\n".join(lines)
