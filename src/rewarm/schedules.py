"""Learning-rate schedules: pure functions of the step (0-based update index).

Every schedule takes the same notion of length. `total_steps` is the schedule's length:
the steps it is laid out over, which may be more than a run trains (Gupta et al. 2023 lay
their schedule over the whole 297B-token SlimPajama and stop at 50B or 240B); the fractions
of wsd and the infinite schedules are of this length. `decay_steps` (at most `total_steps`) is where the
decay ends: the schedule reaches `min_lr` at step `decay_steps - 1` and stays there (the
paper's cosine reaches its minimum at 240B tokens and is constant after). Where a run
stops is not a schedule parameter at all: the schedule is a pure function of the step.

Every schedule starts with the same linear warm-up: update `step` < `warmup_steps`
uses max_lr * (step + 1) / (warmup_steps + 1), rising from near 0 to max_lr
without a wasted zero-LR update (as nanoGPT's `get_lr`). After warm-up each
schedule has its own shape and reaches `min_lr` at `decay_steps - 1`.
Bind the parameters with `functools.partial` (`build`).

The two `neox-` schedules are GPT-NeoX's `AnnealingLR` exactly, warm-up included, as the papers' authors
ran it: `neox-floored-cosine` as it was until pull request 1008 (Gupta et al. 2023's runs, and Pythia's
pre-training), `neox-cosine` as it is since pull requests 1008 and 1011 (Ibrahim et al. 2024's runs).
Their warm-up is GPT-NeoX's, not the one above: `warmup_steps` is a real number (warm-up fraction x
train-iters: 1% of 131,296 is 1312.96) and update s < W runs at max_lr x s / W, the first at LR 0.

The infinite schedules (`infinite-cosine`, `infinite-inv-sqrt`) are Ibrahim et al. 2024's, phase for
phase and with the authors' parameters (their GPT-NeoX names beside ours in `infinite`). They replace
rewarm's earlier `infinite` (a cooldown to plateau_ratio x max_lr and a linear annealing, rewarm's own
parametrisation): it matched no published schedule, so it had no reason to stay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

Schedule = Callable[[int], float]

NAMES = ("cosine", "constant", "linear", "wsd", "infinite-cosine", "infinite-inv-sqrt", "rex", "neox-floored-cosine", "neox-cosine")
GPT_NEOX = ("neox-floored-cosine", "neox-cosine")
"""GPT-NeoX's own cosine (`AnnealingLR`), update by update: warm-up from LR 0 over a real number of steps, a
cosine laid over the whole schedule (its train-iters, or lr-decay-iters where set); no separate decay end."""
INFINITE = {"infinite-cosine": "cosine", "infinite-inv-sqrt": "inverse_sqrt"}
"""The infinite schedules by name, with their cooldown's shape (the authors' lr-decay-style:
`cosine_cooldown_infinite`, `inverse_sqrt_infinite`)."""
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _warmup(step: int, max_lr: float, warmup_steps: int) -> float | None:
    """The warm-up LR, or None once warm-up is over."""
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    return None


def _progress(step: int, start: int, end: int) -> float:
    """Where `step` lies in [start, end] as a fraction in [0, 1]."""
    if end <= start:
        return 1.0
    return min(1.0, max(0.0, (step - start) / (end - start)))


def _decay(progress: float, shape: str) -> float:
    """Factor going from 1 (progress 0) to 0 (progress 1) in the given shape."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":  # Hägele et al. 2024, used for WSD cooldowns
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"unknown decay shape {shape!r} (allowed: {', '.join(DECAY_SHAPES)})")


def cosine(step: int, *, max_lr: float, min_lr: float, total_steps: int, decay_steps: int, warmup_steps: int) -> float:
    """Gupta et al. 2023 (and Pythia): 1) linear warm-up, 2) cosine decay to min_lr at the end
    of the decay, 3) min_lr after it."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    return min_lr + (max_lr - min_lr) * _decay(_progress(step, warmup_steps, decay_steps - 1), "cosine")


def constant(step: int, *, max_lr: float, min_lr: float, total_steps: int, decay_steps: int, warmup_steps: int) -> float:
    """No re-warming: max_lr throughout (after an optional warm-up). min_lr is unused."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    return max_lr


def linear(step: int, *, max_lr: float, min_lr: float, total_steps: int, decay_steps: int, warmup_steps: int) -> float:
    """1) linear warm-up, 2) linear decay to min_lr at the end of the decay, 3) min_lr after it."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    return min_lr + (max_lr - min_lr) * _decay(_progress(step, warmup_steps, decay_steps - 1), "linear")


def wsd(
    step: int, *, max_lr: float, min_lr: float, total_steps: int, decay_steps: int, warmup_steps: int, decay_fraction: float,
    decay_shape: str,
) -> float:
    """Warm-up, stable, decay (MiniCPM, Hu et al. 2024): 1) warm-up, 2) max_lr until
    `decay_fraction` of the schedule's length before the end of the decay, 3) decay to min_lr
    in `decay_shape`, 4) min_lr after it."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    decay_start = max(warmup_steps, decay_steps - 1 - round(decay_fraction * total_steps))
    return min_lr + (max_lr - min_lr) * _decay(_progress(step, decay_start, decay_steps - 1), decay_shape)


def _inv_sqrt(x: float, timescale: float) -> float:
    """h(x) = 1 / sqrt(1 + timescale * x) - 1: 0 at x = 0, falling ever more slowly (Ibrahim et al. 2024)."""
    return 1.0 / math.sqrt(1.0 + timescale * x) - 1.0


def infinite(
    step: int,
    *,
    max_lr: float,
    min_lr: float,
    total_steps: int,
    decay_steps: int,
    warmup_steps: int,
    cooldown: str,
    constant_lr: float,
    cooldown_end_fraction: float,
    constant_end_fraction: float,
    timescale: float,
) -> float:
    """Infinite schedule of Ibrahim et al. 2024 (section 7.2; the authors' GPT-NeoX code, lr-decay-style
    `cosine_cooldown_infinite` / `inverse_sqrt_infinite`). With W the warm-up, C = cooldown_end_fraction x
    total_steps (authors: cooldown_iters_percent), A = constant_end_fraction x total_steps (authors:
    constant_iters_percent) and E = decay_steps - 1 the end of the annealing:
    1) warm-up to max_lr;
    2) cooldown from max_lr to constant_lr over [W, C], progress p = (step - W) / (C - W):
       cosine: constant_lr + (max_lr - constant_lr) (1 + cos(pi p)) / 2;
       inverse square root: max_lr + (constant_lr - max_lr) h(p) / h(1), h(x) = 1/sqrt(1 + timescale x) - 1;
    3) constant_lr over [C, A] (the phase a run continues in on its next dataset, with no re-warming);
    4) exponential annealing over [A, E]: constant_lr (min_lr / constant_lr)^((step - A) / (E - A));
    5) min_lr after E.
    Phase boundaries belong to the earlier phase, as in the authors' code (`<=`); with A = E (constant_end_fraction
    1) there is no annealing and the learning rate stays at constant_lr to the end of the schedule.
    A continuation on a new dataset uses no warm-up and cooldown_end_fraction 0: constant_lr, then the annealing."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    end = decay_steps - 1
    cooldown_end = max(warmup_steps, min(round(cooldown_end_fraction * total_steps), end))
    anneal_start = max(cooldown_end, min(round(constant_end_fraction * total_steps), end))
    if step < cooldown_end:
        progress = _progress(step, warmup_steps, cooldown_end)
        if cooldown == "cosine":
            return constant_lr + (max_lr - constant_lr) * _decay(progress, "cosine")
        return max_lr + (constant_lr - max_lr) * _inv_sqrt(progress, timescale) / _inv_sqrt(1.0, timescale)
    if step <= anneal_start:
        return constant_lr
    if step >= end:
        return min_lr
    return constant_lr * (min_lr / constant_lr) ** _progress(step, anneal_start, end)


def rex(step: int, *, max_lr: float, min_lr: float, total_steps: int, decay_steps: int, warmup_steps: int) -> float:
    """REX (Chen et al. 2022): 1) warm-up, 2) factor (1 - z) / (1/2 + (1 - z)/2) with z the
    progress after warm-up: slower than linear early, faster late; min_lr at the end of the decay."""
    if (lr := _warmup(step, max_lr, warmup_steps)) is not None:
        return lr
    remaining = 1.0 - _progress(step, warmup_steps, decay_steps - 1)
    return min_lr + (max_lr - min_lr) * remaining / (0.5 + 0.5 * remaining)


def neox_floored_cosine(step: int, *, max_lr: float, min_lr: float, total_steps: int, warmup_steps: float) -> float:
    """GPT-NeoX's `AnnealingLR` "cosine" until pull request 1008 (megatron/learning_rates.py at commit 8b3f1c28,
    2023-07-27), as Gupta et al. 2023 ran it: T = total_steps (their train-iters, 131,296; no lr-decay-iters),
    W = warmup_steps (real), s the 0-based update:
    1) n = min(s, T - W);
    2) warm-up while W > 0 and s <= W: max_lr x n / W (0 at s = 0);
    3) after it, a cosine over the whole schedule from max_lr: max_lr / 2 x (1 + cos(pi (n - W) / T)), which
       would reach 0 only at n - W = T;
    4) floored at min_lr: the cosine meets 0.1 x max_lr at n - W = 0.795 T (239B tokens of the 297B with 1%
       warm-up: the paper's "minimum at 240B, constant thereafter"), and the LR stays there."""
    n = min(step, total_steps - warmup_steps)
    if warmup_steps > 0 and step <= warmup_steps:
        return max_lr * n / warmup_steps
    lr = max_lr / 2.0 * (math.cos(math.pi * (n - warmup_steps) / total_steps) + 1)
    return max(lr, min_lr)


def neox_cosine(step: int, *, max_lr: float, min_lr: float, total_steps: int, warmup_steps: float) -> float:
    """GPT-NeoX's `AnnealingLR` "cosine" since pull requests 1008 and 1011 (August 2023), as Ibrahim et al. 2024
    ran it: T = total_steps (their lr-decay-iters = train-iters, 132,366 per 300B tokens), W = warmup_steps (real):
    1) warm-up while W > 0 and s <= W: max_lr x s / W (0 at s = 0);
    2) a cosine from max_lr at W to min_lr at T: min_lr + (max_lr - min_lr) / 2 x (1 + cos(pi (s - W) / (T - W)));
    3) floored at min_lr (kept from the code before; the cosine does not go below it before T)."""
    if warmup_steps > 0 and step <= warmup_steps:
        return max_lr * step / warmup_steps
    lr = min_lr + (max_lr - min_lr) / 2.0 * (math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)) + 1)
    return max(lr, min_lr)


def build(
    name: str,
    *,
    max_lr: float,
    min_lr: float,
    total_steps: int,
    warmup_steps: float,
    decay_steps: int | None = None,
    decay_fraction: float = 0.2,
    decay_shape: str = "1-sqrt",
    constant_lr: float | None = None,
    cooldown_end_fraction: float = 0.6,
    constant_end_fraction: float = 0.85,
    timescale: float = 10.0,
) -> Schedule:
    """The schedule `name` with its parameters bound: a function of the step alone. `total_steps`
    is the schedule's length; the decay ends at `decay_steps` (None: at the end of the schedule). The GPT-NeoX
    schedules take no decay end (their cosine spans the schedule) and a real `warmup_steps`."""
    if name in GPT_NEOX:
        if decay_steps is not None and decay_steps != total_steps:
            raise ValueError(f"schedule {name} has no separate decay end: its cosine spans the schedule's {total_steps} steps")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warm-up {warmup_steps} must be in [0, total_steps = {total_steps})")
        function = neox_floored_cosine if name == "neox-floored-cosine" else neox_cosine
        return functools.partial(function, max_lr=max_lr, min_lr=min_lr, total_steps=total_steps, warmup_steps=warmup_steps)
    decay_steps = total_steps if decay_steps is None else decay_steps
    if not 0 < decay_steps <= total_steps:
        raise ValueError(f"decay_steps {decay_steps} must be in [1, total_steps = {total_steps}]")
    common = dict(max_lr=max_lr, min_lr=min_lr, total_steps=total_steps, decay_steps=decay_steps, warmup_steps=warmup_steps)
    if name == "wsd":
        return functools.partial(wsd, **common, decay_fraction=decay_fraction, decay_shape=decay_shape)
    if name in INFINITE:
        if constant_lr is None or constant_lr <= 0:
            raise ValueError(f"schedule {name} needs constant_lr > 0 (the LR of its constant phase), got {constant_lr}")
        return functools.partial(
            infinite, **common, cooldown=INFINITE[name], constant_lr=constant_lr, cooldown_end_fraction=cooldown_end_fraction,
            constant_end_fraction=constant_end_fraction, timescale=timescale,
        )
    functions = {"cosine": cosine, "constant": constant, "linear": linear, "rex": rex}
    if name not in functions:
        raise ValueError(f"unknown schedule {name!r} (allowed: {', '.join(NAMES)})")
    return functools.partial(functions[name], **common)


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_fraction: float | None) -> int:
    """Warm-up in steps, given in steps or as a fraction of the schedule's length `total_steps`
    (the paper sweeps 0, 0.5%, 1%, 2% of its 297B-token schedule)."""
    return round(warmup_exact(total_steps, warmup_steps, warmup_fraction))


def warmup_exact(total_steps: int, warmup_steps: int | None, warmup_fraction: float | None) -> float:
    """Warm-up as GPT-NeoX counts it: warmup_fraction x the schedule's length as a real number (its
    `warmup_iter = warmup * num_iters`, megatron/training.py), or the steps given."""
    if warmup_steps is not None:
        return float(warmup_steps)
    return (warmup_fraction or 0.0) * total_steps
