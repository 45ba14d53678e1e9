"""Schedules against the reports' descriptions and the lab's arithmetic."""

from __future__ import annotations

import pytest
from cvae.core.config import DataConfig, ScheduleConfig
from cvae.core.schedules import (
    cyclical_beta,
    kl_beta,
    settled_epoch,
    teacher_forcing_ratio,
    train_fraction,
    warmup_factor,
)


def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=4, ratio=0.5):
    """Fu et al. (2019)'s published cyclical schedule, as report 001 shows it."""
    values = [stop] * n_iter
    period = n_iter / n_cycle
    step = (stop - start) / (period * ratio)
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_iter:
            values[int(i + c * period)] = v
            v += step
            i += 1
    return values


@pytest.mark.parametrize("num_epoch", [1, 2, 7, 10, 20, 33, 70])
@pytest.mark.parametrize("n_cycle", [1, 3, 4, 10])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_cyclical_matches_frange_cycle_linear(num_epoch, n_cycle, ratio):
    want = frange_cycle_linear(num_epoch, n_cycle=n_cycle, ratio=ratio)
    got = [cyclical_beta(e, num_epoch, n_cycle, ratio) for e in range(num_epoch)]
    assert got == pytest.approx(want, abs=1e-9)


def test_lab_default_cyclical_ramps_within_each_cycle_and_restarts():
    cfg = ScheduleConfig(kl_anneal_type="cyclical", kl_anneal_cycle=10, kl_anneal_ratio=1.0)
    betas = [kl_beta(cfg, 70, e) for e in range(70)]
    assert betas[:7] == pytest.approx([i / 7 for i in range(7)])
    assert betas[7] == 0.0 and betas[14] == 0.0  # a new cycle starts at 0
    assert max(betas) < 1.0


def test_cyclical_ratio_half_holds_at_one_for_the_second_half_of_each_cycle():
    cfg = ScheduleConfig(kl_anneal_type="cyclical", kl_anneal_cycle=10, kl_anneal_ratio=0.5)
    betas = [kl_beta(cfg, 100, e) for e in range(20)]
    assert betas[:5] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert betas[5:10] == [1.0] * 5
    assert betas[10] == 0.0


def test_monotonic_rises_linearly_then_stays():
    cfg = ScheduleConfig(kl_anneal_type="monotonic", kl_anneal_ratio=0.5)
    betas = [kl_beta(cfg, 20, e) for e in range(20)]
    assert betas[:10] == pytest.approx([e / 10 for e in range(10)])
    assert betas[10:] == [1.0] * 10
    assert all(b2 >= b1 for b1, b2 in zip(betas, betas[1:], strict=False))


@pytest.mark.parametrize("alias", ["none", "None", "constant", "Constant"])
def test_no_annealing_is_beta_one(alias):
    from cvae.core.config import ExperimentConfig

    cfg = ExperimentConfig.from_flat({"kl_anneal_type": alias}).schedule
    assert [kl_beta(cfg, 30, e) for e in range(30)] == [1.0] * 30


def test_hybrid_is_cyclical_then_held_high():
    cfg = ScheduleConfig(kl_anneal_type="hybrid", kl_anneal_cycle=4, kl_anneal_ratio=1.0, kl_hybrid_switch=0.5)
    cyc = ScheduleConfig(kl_anneal_type="cyclical", kl_anneal_cycle=4, kl_anneal_ratio=1.0)
    betas = [kl_beta(cfg, 20, e) for e in range(20)]
    assert betas[:10] == [kl_beta(cyc, 20, e) for e in range(10)]
    assert betas[10:] == [1.0] * 10


def test_tf1_decays_from_one_to_zero_over_ten_epochs():
    cfg = ScheduleConfig(tfr=1.0, tfr_sde=0, tfr_d_step=0.1)
    assert [teacher_forcing_ratio(cfg, e) for e in range(12)] == pytest.approx(
        [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
    )


def test_tf2_starts_decaying_at_ten_and_reaches_zero_after_twenty_epochs():
    cfg = ScheduleConfig(tfr=0.5, tfr_sde=10, tfr_d_step=0.05)
    ratios = [teacher_forcing_ratio(cfg, e) for e in range(25)]
    assert ratios[:10] == [0.5] * 10
    assert ratios[10] == pytest.approx(0.45)
    assert ratios[19] == 0.0 and ratios[24] == 0.0


def test_tf3_no_teacher_forcing():
    cfg = ScheduleConfig(tfr=0.0, tfr_sde=80, tfr_d_step=0.1)
    assert {teacher_forcing_ratio(cfg, e) for e in range(70)} == {0.0}


def test_ratio_is_clamped_and_never_negative():
    cfg = ScheduleConfig(tfr=0.3, tfr_sde=0, tfr_d_step=0.7)
    assert [teacher_forcing_ratio(cfg, e) for e in range(3)] == [0.3, 0.0, 0.0]


def test_fast_train_uses_fast_partial_through_the_labs_switch_epoch():
    cfg = DataConfig(partial=0.9, fast_train=True, fast_partial=0.4, fast_train_epoch=2)
    assert [train_fraction(cfg, e) for e in range(6)] == [0.4, 0.4, 0.4, 0.4, 0.9, 0.9]
    assert train_fraction(DataConfig(partial=0.9), 0) == 0.9


@pytest.mark.parametrize(("schedule", "num_epoch", "expected"), [
    # The pruning benchmark's grid: tfr 1 -> 0 by epoch 8 (0-based); monotonic beta 1 from 8; cyclical from 12.
    (ScheduleConfig(kl_anneal_type="monotonic", kl_anneal_ratio=0.5, tfr=1.0, tfr_sde=1, tfr_d_step=0.125), 16, 8),
    (ScheduleConfig(kl_anneal_type="cyclical", kl_anneal_cycle=2, kl_anneal_ratio=0.5, tfr=0.0), 16, 12),
    (ScheduleConfig(kl_anneal_type="none", tfr=0.0), 16, 0),
    (ScheduleConfig(kl_anneal_type="none", tfr=1.0, tfr_sde=10, tfr_d_step=0.1), 70, 19),  # the lab's TF: 0 at 19
    (ScheduleConfig(kl_anneal_type="none", tfr=1.0, tfr_sde=60, tfr_d_step=0.01), 70, 69),  # never reaches 0
])
def test_settled_epoch_is_where_beta_and_the_teacher_forcing_ratio_stop_changing(schedule, num_epoch, expected):
    settled = settled_epoch(schedule, num_epoch)
    assert settled == expected

    def at(e: int) -> tuple[float, float]:
        return kl_beta(schedule, num_epoch, e), teacher_forcing_ratio(schedule, e)

    assert {at(e) for e in range(settled, num_epoch)} == {at(num_epoch - 1)}
    assert settled == 0 or at(settled - 1) != at(num_epoch - 1)


def test_warmup_rises_linearly_to_one_then_stays():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [warmup_factor(s, 0) for s in range(3)] == [1.0, 1.0, 1.0]  # the lab's: none
