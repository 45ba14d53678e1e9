"""The words of the figures: axis labels, legend suffixes and the captions that say what a figure shows and which
runs it covers (``Runs t0000-t0005.``, ``No val_psnr recorded for t0005 (waiting).``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cvae.analysis.groups import Groups, natural_key

LABELS = {
    "train_loss": "training loss", "train_mse": "training MSE", "train_kl": "training KL divergence",
    "train_psnr": "training PSNR (dB)", "val_loss": "validation loss", "val_psnr": "validation PSNR (dB)",
    "beta": "β (KL weight)", "tfr": "teacher-forcing ratio", "tf_fraction": "teacher-forced fraction of batches",
    "lr": "learning rate", "frames_per_s": "training throughput (frames/s)",
    "train_seconds": "training time per epoch (s)", "val_seconds": "validation time per epoch (s)",
    "epoch_seconds": "time per epoch (s)", "psnr": "PSNR (dB)",
    "val_ssim": "validation SSIM", "val_psnr_best_of_k": "validation PSNR, best of K samples of z (dB)",
    "val_psnr_mean_of_k": "validation PSNR, mean of K samples of z (dB)",
    "val_psnr_std_of_k": "validation PSNR spread over z (dB)", "val_ssim_best_of_k": "validation SSIM, best of K",
    "val_ssim_mean_of_k": "validation SSIM, mean of K", "val_psnr_z0": "validation PSNR with z = 0 (dB)",
    "val_psnr_no_prev": "validation PSNR without the previous frame (dB)",
    "val_psnr_swapped_frame": "validation PSNR with another video's frame (dB)",
    "val_kl": "validation KL divergence (nats per frame)", "val_active_units": "active latent units",
}
"""Axis labels of the per-epoch metrics (``epochs`` columns)."""

CUT_NOTE = " CI bands reaching beyond the runs' range are cut at the axes."
LOG_NOTE = " Log y-scale: the values span decades (β·KL can dwarf the MSE)."


def label(column: str) -> str:
    return LABELS.get(column, column)


def capitalized(column: str) -> str:
    text = label(column)
    return text[:1].upper() + text[1:]


def group_noun(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_span(runs: Sequence[str]) -> str:
    """``t0000-t0005, t0008`` for the trial folders, else the names (at most 12)."""
    runs = list(dict.fromkeys(str(r) for r in runs))
    if not runs:
        return "none"
    matches = [re.fullmatch(r"t(\d+)", r) for r in runs]
    if all(matches):
        width = len(matches[0].group(1))
        nums = sorted({int(m.group(1)) for m in matches})
        parts, start, prev = [], nums[0], nums[0]
        for n in [*nums[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            parts.append(f"t{start:0{width}d}" + (f"-t{prev:0{width}d}" if prev > start else ""))
            if n is not None:
                start = prev = n
        return ", ".join(parts)
    shown = sorted(runs, key=natural_key)
    return ", ".join(shown[:12]) + (f", … ({len(shown)} runs)" if len(shown) > 12 else "")


def runs_sentence(runs: Sequence[str]) -> str:
    runs = list(runs)
    return f"Run {run_span(runs)}." if len(runs) == 1 else f"Runs {run_span(runs)}."


def partial_suffix(runs: Sequence[str], states: Mapping[str, str]) -> str:
    """``""`` when every run completed, ``" (pruned)"`` when none did, ``" (1 of 2 pruned)"`` in between."""
    partial = [states.get(r, "complete") for r in runs if states.get(r, "complete") != "complete"]
    if not partial:
        return ""
    kinds = ", ".join(dict.fromkeys(partial))
    if len(partial) == len(runs):
        return f" ({kinds})"
    return f" ({len(partial)} of {len(runs)} {kinds})"


def missing_note(wanted: Sequence[str], drawn: Sequence[str], states: Mapping[str, str], what: str) -> str:
    absent = [r for r in wanted if r not in set(drawn)]
    if not absent:
        return ""
    items = ", ".join(f"{r} ({states.get(r, 'unknown')})" for r in absent)
    return f" No {what} recorded for {items}."


def counts_text(groups: Mapping[str, Sequence[str]], pooled: Sequence[str], labels: Mapping[str, str]) -> str:
    """``2 replicates each``, ``4 runs each, pooled over tfr, N_dim``, ``1-3 runs each``."""
    sizes = [len(v) for v in groups.values() if v]
    if not sizes:
        return "no runs"
    size = f"{sizes[0]}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    replicates_only = all(len({labels.get(r) for r in v}) <= 1 for v in groups.values())
    if max(sizes) == 1:
        text = "1 run each"
    elif replicates_only:
        text = f"{size} replicates each"
    else:
        text = f"{size} runs each"
    if pooled and not replicates_only:
        text += f", pooled over {', '.join(pooled)}"
    if max(sizes) > 1:
        text += "; shaded: 95% CI of the mean"
    return text


def references_sentence(baselines: Sequence[tuple[str, float, float, float]], oracle: float | None) -> str:
    """The caption sentence of the grey reference lines: ``baselines`` as (title, mean, min, max) over the runs,
    ``oracle`` the copy-previous-frame PSNR (or None); empty without baselines."""
    if not baselines:
        return ""
    parts = []
    for title, avg, low, high in baselines:
        spread = "" if high - low < 0.005 else (
            f", a mean over the runs' validation videos ({low:.2f} to {high:.2f} dB)")
        parts.append(f"{title} ({avg:.2f} dB{spread})")
    prev = (f"; copying the previous ground-truth frame, an oracle a rollout cannot use, scores {oracle:.2f} dB"
            if oracle is not None else "")
    return (f" Grey reference lines: the trivial predictors on the same validation clips, "
            f"{' and '.join(parts)}{prev}. A model below copying the first frame has learned nothing.")


def tail(drawn: Sequence[str], wanted: Sequence[str], states: Mapping[str, str], what: str, *, refs: str = "",
         log: bool = False, cut: bool = False) -> str:
    """What every caption ends with: the reference lines, the scale notes, the runs drawn and those missing."""
    drawn = list(dict.fromkeys(drawn))
    return (f"{refs}{LOG_NOTE if log else ''}{CUT_NOTE if cut else ''} {runs_sentence(drawn)}"
            f"{missing_note(wanted, drawn, states, what)}")


def panels_caption(what: str, noun: str, groups: Groups, *, subs: bool, replicated: bool, schedule: str,
                   has_schedule: bool, schedule_differs: bool) -> str:
    """The head of a schedule-panel figure's caption (:func:`tail` follows)."""
    settings = "; ".join(f"{g}: {groups.settings[g]}" for g in groups.order if groups.settings.get(g))
    settings = f" Configurations: {settings}." if groups.named and settings else ""
    if subs:
        lines = " Within a panel one line per other configuration" + (
            " (mean over its replicates; shaded: 95% CI)." if replicated else ".")
    else:
        lines = " Mean over the panel's replicates; shaded: 95% CI." if replicated else ""
    note = "" if has_schedule else f" No per-epoch {schedule} in this source: the schedule is not drawn."
    if schedule_differs:
        note += " The schedule differs between a panel's configurations: one dash-dotted curve each."
    return f"{what}, one panel per {noun} ({group_noun(len(groups.order), 'configuration')}).{settings}{lines}{note}"


def per_frame_caption(n_frames: int | None, epochs: Sequence[int], used_of: Mapping[str, Sequence[str]],
                      labels: Mapping[str, str]) -> str:
    """The head of ``psnr_per_frame``'s caption."""
    epochs = sorted(epochs)
    epochs_text = (f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}" if epochs
                   else "no epoch")
    frames_text = f"{n_frames} predicted frames" if n_frames else "frames"
    replicates = " and replicates" if any(len(v) > 1 for v in used_of.values()) else ""
    return (f"PSNR of each of the {frames_text} of the validation rollout at each run's last recorded epoch "
            f"({epochs_text}), one line per configuration ({group_noun(len(used_of), 'configuration')}, "
            f"{counts_text(used_of, (), labels)}); the legend gives each configuration's average over "
            f"frames{replicates}.")


USES_SENTENCES = {
    "Frame input": ("Frame input: the validation PSNR of the lab's rollout (its own previous prediction as the frame "
                    "input) beside the same rollout, same z, with the frame input replaced at every step by the clip's "
                    "first frame (without its previous frame) and by a frame of another video. No drop without the "
                    "previous frame (within {no_drop} dB, or above): the model does not use its previous frame, it "
                    "renders the pose; the drop with another video's frame is what it takes of the video's look."),
    "Samples of z": ("Samples of z: per video, the standard deviation of the PSNR over {k} samples of z from the "
                     "prior, and the best of them minus their mean: near 0, the samples do not differ and z is "
                     "ignored."),
    "Latent channels": ("Latent channels: the active units, channels whose posterior mean varies over the validation "
                        "frames (variance > 0.01, Burda et al. 2016){n_dim}: 0 active units is posterior collapse, "
                        "z ignored."),
}
"""What each panel of the ``uses`` figure shows and how to read it."""


def uses_caption(panels: Sequence[str], members: Mapping[str, Sequence[str]], labels: Mapping[str, str], *, k: str,
                 no_drop: float, n_dim: bool) -> str:
    """The head of the ``uses`` figure's caption (:func:`tail` follows): the layout, then a sentence per panel."""
    counts = counts_text(members, (), labels).replace("shaded:", "bars:")
    text = " ".join(USES_SENTENCES[p] for p in panels).format(
        k=k, no_drop=no_drop, n_dim=", beside N_dim, the channels available (grey |)" if n_dim else "")
    return (f"What each configuration uses, all at one epoch of each run: the epoch of its value (its best, or its "
            f"last with metric.summary: last) among those that ran the full evaluation; one row per configuration ({group_noun(len(members), 'configuration')}, {counts}); points: "
            f"the mean over its runs; the points of a row come from the same runs: compare them within the row (the "
            f"table gives each change with its own interval). {text}")


def importances_caption(metric: str, method: str, n_runs: int, left_out: Sequence[str], runs: Sequence[str], *,
                        one_value: Sequence[str] = (), few: int = 0) -> str:
    """``few``: below this many complete runs, the caption says the importances are rough."""
    left = f" Left out (missing in some runs): {', '.join(left_out)}." if left_out else ""
    same = (f" Not ranked (one value in every complete run): {', '.join(one_value)}." if one_value else "")
    rough = (f" Only {group_noun(n_runs, 'complete trial')} (fewer than {few}): importances from so few are rough, "
             "read them as a hint, not a ranking." if n_runs < few else "")
    return (f"Importance of each varying swept parameter for {metric}{f' ({method})' if method else ''}, from "
            f"{group_noun(n_runs, 'complete run')}; the values sum to 1.{left}{same}{rough}"
            f"{' ' + runs_sentence(runs) if runs else ''}")
