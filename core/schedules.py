"""Training schedules as pure functions of (config, epoch), 0-based epochs.

Pure functions can be plotted without training, tested against the reports' descriptions, and make a
resumed run follow exactly the schedule an uninterrupted one would have.
"""

from __future__ import annotations

import math

from cvae.core.config import DataConfig, ScheduleConfig


def cyclical_beta(epoch: int, num_epoch: int, n_cycle: int, ratio: float, start: float = 0.0,
                  stop: float = 1.0) -> float:
    """Fu et al. (2019)'s cyclical schedule over ``num_epoch`` epochs, as the lab's ``frange_cycle_linear``.

    The epochs are cut into ``n_cycle`` periods of ``num_epoch / n_cycle`` epochs; in each, β rises
    linearly from ``start`` by ``(stop - start) / (period * ratio)`` per epoch and is held at ``stop``
    once it would pass it. A period starts at epoch ``floor(c * period)``, the lab's integer indexing.
    """
    period = num_epoch / n_cycle
    # The lab fills cycle after cycle into one array, so a later cycle that starts at the same integer
    # epoch overwrites an earlier one: take the last cycle c with floor(c * period) <= epoch. The
    # division is only a first guess (float error either way), corrected with the lab's own arithmetic.
    cycle = min(int(epoch // period), n_cycle - 1)
    while cycle > 0 and math.floor(cycle * period) > epoch:
        cycle -= 1
    while cycle + 1 < n_cycle and math.floor((cycle + 1) * period) <= epoch:
        cycle += 1
    i = epoch - math.floor(cycle * period)
    step = (stop - start) / (period * ratio)
    value = start + i * step
    return stop if value > stop + 1e-9 else min(value, stop)


def kl_beta(cfg: ScheduleConfig, num_epoch: int, epoch: int) -> float:
    """β, the KL weight, at ``epoch``.

    - ``cyclical``: :func:`cyclical_beta` with ``kl_anneal_cycle`` cycles and ``kl_anneal_ratio``.
    - ``monotonic``: one cycle: β rises linearly to 1 over the first ``kl_anneal_ratio`` of training,
      then stays at 1.
    - ``none``: β = 1 throughout.
    - ``hybrid`` (report 000): cyclical for the first ``kl_hybrid_switch`` of the epochs, then held at 1.
    """
    kind = cfg.kl_anneal_type
    if kind == "none":
        return 1.0
    if kind == "monotonic":
        return cyclical_beta(epoch, num_epoch, 1, cfg.kl_anneal_ratio)
    if kind == "cyclical":
        return cyclical_beta(epoch, num_epoch, cfg.kl_anneal_cycle, cfg.kl_anneal_ratio)
    if kind == "hybrid":
        if epoch >= math.floor(cfg.kl_hybrid_switch * num_epoch):
            return 1.0
        return cyclical_beta(epoch, num_epoch, cfg.kl_anneal_cycle, cfg.kl_anneal_ratio)
    raise ValueError(f"unknown kl_anneal_type {kind!r}")


def teacher_forcing_ratio(cfg: ScheduleConfig, epoch: int) -> float:
    """Teacher-forcing ratio used during ``epoch``.

    It starts at ``tfr``; the lab lowers it by ``tfr_d_step`` at the end of every epoch whose (already
    incremented) index is >= ``tfr_sde``, so epoch ``e`` has had ``max(0, e - max(tfr_sde, 1) + 1)``
    decrements. Clamped to [0, 1]. Report 001's TF1 (1.0, sde 0, step 0.1) reaches 0 at epoch 10; TF2
    (0.5, sde 10, step 0.05) decays from epoch 10 and reaches 0 at epoch 19.
    """
    steps = max(0, epoch - max(cfg.tfr_sde, 1) + 1)
    # Rounding removes the 1e-17 residue of repeated float steps, which would otherwise leak into plots.
    return min(1.0, max(0.0, round(cfg.tfr - cfg.tfr_d_step * steps, 12)))


def settled_epoch(cfg: ScheduleConfig, num_epoch: int) -> int:
    """The first epoch (0-based) from which β and the teacher-forcing ratio keep their final values.

    Before it, a trial's validation (an autoregressive rollout from the prior, no teacher forcing) pays for
    a β below 1 or for teacher forcing it does not get; a pruner that ranks trials of different schedules
    earlier compares them mid-schedule. A cyclical β settles only in its last cycle's plateau.
    """
    def at(epoch: int) -> tuple[float, float]:
        return kl_beta(cfg, num_epoch, epoch), teacher_forcing_ratio(cfg, epoch)

    final = at(num_epoch - 1)
    epoch = num_epoch - 1
    while epoch > 0 and at(epoch - 1) == final:
        epoch -= 1
    return epoch


def train_fraction(cfg: DataConfig, epoch: int) -> float:
    """Fraction of the training clips used in ``epoch`` (the lab's ``partial`` / ``fast_train`` rule).

    The lab builds the epoch's dataset with ``fast_partial`` while fast_train is on and switches it off
    after building the loader of an epoch greater than ``fast_train_epoch``: so epochs
    0..fast_train_epoch + 1 use ``fast_partial``.
    """
    if cfg.fast_train and epoch <= cfg.fast_train_epoch + 1:
        return cfg.fast_partial
    return cfg.partial


def warmup_factor(step: int, warmup: int) -> float:
    """The learning rate's share of its scheduled value at optimizer step ``step`` (0-based): a linear warmup
    over ``warmup`` steps, ``(step + 1) / warmup``, then 1."""
    if warmup <= 0 or step >= warmup:
        return 1.0
    return (step + 1) / warmup
