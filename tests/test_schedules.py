"""Schedules are pure functions of the step, checked against tables of expected values."""

from __future__ import annotations

import math

import pytest

from rewarm import schedules

MAX, MIN = 1.0, 0.1
# total_steps 11 (steps 0..10), warm-up 4 steps: warm-up LRs are (s+1)/5 for s = 0..3.
WARMUP = [0.2, 0.4, 0.6, 0.8]


def table(name: str, **extra) -> list[float]:
    schedule = schedules.build(name, max_lr=MAX, min_lr=MIN, total_steps=11, warmup_steps=4, **extra)
    return [schedule(step) for step in range(11)]


def cosine_at(progress: float) -> float:
    return MIN + (MAX - MIN) * 0.5 * (1 + math.cos(math.pi * progress))


EXPECTED = {
    # cosine: warm-up, then from max at step 4 to min at step 10 (6 intervals)
    "cosine": WARMUP + [cosine_at(k / 6) for k in range(7)],
    # constant: no decay after warm-up
    "constant": WARMUP + [1.0] * 7,
    # linear: 1.0 at step 4 down by 0.15 per step to 0.1 at step 10
    "linear": WARMUP + [1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1],
    # rex: factor r / (0.5 + 0.5 r), r = remaining share after warm-up
    "rex": WARMUP + [MIN + (MAX - MIN) * (1 - k / 6) / (0.5 + 0.5 * (1 - k / 6)) for k in range(7)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schedule_table(name):
    assert table(name) == pytest.approx(EXPECTED[name], abs=1e-12)


def test_wsd_stable_then_decay():
    # decay_fraction 0.2 of 11 steps = 2 steps: decay from step 8 to the last step 10.
    assert table("wsd", decay_fraction=0.2, decay_shape="linear") == pytest.approx(WARMUP + [1, 1, 1, 1, 1.0, 0.55, 0.1])
    assert table("wsd", decay_fraction=0.2, decay_shape="cosine") == pytest.approx(WARMUP + [1, 1, 1, 1, 1.0, cosine_at(0.5), 0.1])
    # 1-sqrt: factor 1 - sqrt(progress)
    assert table("wsd", decay_fraction=0.2, decay_shape="1-sqrt")[9] == pytest.approx(MIN + (MAX - MIN) * (1 - math.sqrt(0.5)))


def test_infinite_cooldown_plateau_anneal():
    # cooldown 0.2 x 11 = 2 steps (4 -> 6) to plateau 0.5; anneal 0.1 x 11 = 1 step (9 -> 10).
    lrs = table("infinite", cooldown_fraction=0.2, plateau_ratio=0.5, anneal_fraction=0.1)
    assert lrs == pytest.approx(WARMUP + [1.0, 0.75, 0.5, 0.5, 0.5, 0.5, 0.1])


def test_no_warmup_starts_at_max_and_every_decaying_schedule_ends_at_min():
    for name in ("cosine", "linear", "wsd", "infinite", "rex"):
        schedule = schedules.build(name, max_lr=3e-4, min_lr=3e-5, total_steps=100, warmup_steps=0)
        assert schedule(99) == pytest.approx(3e-5), name
        if name != "infinite":
            assert schedule(0) == pytest.approx(3e-4), name


@pytest.mark.parametrize(
    "total, steps, fraction, expected",
    [(1000, None, 0.0, 0), (1000, None, 0.005, 5), (1000, None, 0.01, 10), (1000, None, 0.02, 20), (1000, 7, None, 7), (146, None, 0.01, 1)],
)
def test_warmup_in_steps_or_fraction(total, steps, fraction, expected):
    assert schedules.warmup_steps_for(total, steps, fraction) == expected


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        schedules.build("step", max_lr=1, min_lr=0, total_steps=10, warmup_steps=0)
    with pytest.raises(ValueError, match="unknown decay shape"):
        schedules.wsd(9, max_lr=1, min_lr=0, total_steps=10, decay_steps=10, warmup_steps=0, decay_fraction=0.5, decay_shape="exp")
