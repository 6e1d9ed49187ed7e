"""A run's derived values, fixed before its first step: steps, schedule length, warm-up, decay end,
the final learning rate, replay per step (exactly, in fractions), and the `Plan` the training loop
follows. Pure arithmetic on the configuration's schema; no I/O."""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable
from dataclasses import dataclass

from rewarm import schedules
from rewarm.config.schema import ConfigError, Optimization


def _replayed_per_step(replay_fraction: float, batch_sequences: int) -> fractions.Fraction:
    """The replay share of a batch in sequences, exactly (0.005 of 8 is 1/25)."""
    return fractions.Fraction(repr(float(replay_fraction))) * batch_sequences


def replay_before(replay_fraction: float, batch_sequences: int, step: int) -> int:
    """Upstream sequences in the global batches of steps 0 .. step - 1: floor(step x share x batch),
    in exact arithmetic. The share is thus exact over every run, not rounded per step: 0.5% of a batch
    of 8 replays one sequence every 25 steps (Ibrahim et al. 2024 sweep 0.5% and 1%). Where the share
    is a whole number of sequences, every step replays that many."""
    return math.floor(_replayed_per_step(replay_fraction, batch_sequences) * step)


def replay_is_whole(replay_fraction: float, batch_sequences: int) -> bool:
    """Whether the replay share is a whole number of each batch's sequences (then every step replays as many)."""
    return _replayed_per_step(replay_fraction, batch_sequences).denominator == 1


def replay_in_step(replay_fraction: float, batch_sequences: int, step: int) -> int:
    """Upstream sequences in the global batch of `step` (see replay_before)."""
    return replay_before(replay_fraction, batch_sequences, step + 1) - replay_before(replay_fraction, batch_sequences, step)


def total_steps(run: Optimization, seq_len: int) -> int:
    """Optimizer steps of a run: where it stops, in whole global batches."""
    return run.tokens // (run.batch_sequences * seq_len)


def schedule_steps(run: Optimization, seq_len: int) -> int:
    """Length of the run's schedule in steps (schedule_tokens, or the run's own length)."""
    tokens = run.tokens if run.schedule_tokens is None else run.schedule_tokens
    return tokens // (run.batch_sequences * seq_len)


def warmup_steps(run: Optimization, seq_len: int) -> int:
    """The run's warm-up in steps: warmup_steps, or warmup_fraction of the schedule's length."""
    return schedules.warmup_steps_for(schedule_steps(run, seq_len), run.warmup_steps, run.warmup_fraction)


def warmup_exact(run: Optimization, seq_len: int) -> float:
    """The warm-up as GPT-NeoX counts it, a real number of steps (the `neox-` schedules): warmup_steps, or
    warmup_fraction x the schedule's length unrounded (1% of 131,296 steps: 1312.96)."""
    return schedules.warmup_exact(schedule_steps(run, seq_len), run.warmup_steps, run.warmup_fraction)


def decay_steps(run: Optimization, seq_len: int) -> int:
    """Step count at which the decay ends (min_lr from step decay_steps - 1 on)."""
    if run.decay_end_tokens is None:
        return schedule_steps(run, seq_len)
    return run.decay_end_tokens // (run.batch_sequences * seq_len)


def min_lr(run: Optimization) -> float:
    """The final LR: min_lr, or 0.1 x max_lr as in Pythia and Gupta et al. 2023."""
    return 0.1 * run.max_lr if run.min_lr is None else run.min_lr


@dataclass
class Plan:
    """A run's derived quantities, fixed before the first step."""

    total_steps: int
    """Where the run stops (the schedule may be laid out further: schedule_steps)."""
    warmup_steps: int
    replay_fraction: float
    batch_sequences: int
    accumulation: int
    eval_sequences: int
    schedule: Callable[[int], float]
    extra_eval_steps: frozenset = frozenset()
    """Steps evaluated besides the regular ones: where shorter cells of the same run stop."""

    @classmethod
    def of(cls, run: Optimization, seq_len: int, replay_fraction: float, world: int, stops=()) -> "Plan":
        steps = total_steps(run, seq_len)
        length = schedule_steps(run, seq_len)
        warmup = warmup_steps(run, seq_len)
        per_process = run.batch_sequences // world
        if run.batch_sequences % world or per_process % run.micro_batch_sequences:
            raise ConfigError(
                f"batch_sequences {run.batch_sequences} does not split into {world} processes x micro-batches of "
                f"{run.micro_batch_sequences}"
            )
        neox = run.schedule in schedules.GPT_NEOX  # GPT-NeoX's own warm-up: a real number of steps
        schedule = schedules.build(
            run.schedule, max_lr=run.max_lr, min_lr=min_lr(run), total_steps=length,
            decay_steps=decay_steps(run, seq_len), warmup_steps=warmup_exact(run, seq_len) if neox else warmup,
            decay_fraction=run.decay_fraction, decay_shape=run.decay_shape, constant_lr=run.constant_lr,
            cooldown_end_fraction=run.cooldown_end_fraction, constant_end_fraction=run.constant_end_fraction,
            timescale=run.timescale,
        )
        return cls(
            total_steps=steps,
            warmup_steps=warmup,
            replay_fraction=replay_fraction,
            batch_sequences=run.batch_sequences,
            accumulation=per_process // run.micro_batch_sequences,
            eval_sequences=max(1, run.eval_tokens // seq_len),
            schedule=schedule,
            extra_eval_steps=frozenset(stops),
        )

    @property
    def replays(self) -> bool:
        return replay_before(self.replay_fraction, self.batch_sequences, self.total_steps) > 0

    @property
    def uniform(self) -> bool:
        """Whether every step replays the same number of sequences (a whole number of a batch)."""
        return replay_is_whole(self.replay_fraction, self.batch_sequences)

    def replay_in(self, step: int) -> int:
        """Upstream sequences in the global batch of `step` (exact over the run: config.replay_before)."""
        return replay_in_step(self.replay_fraction, self.batch_sequences, step)

    def evaluates(self, done: int, run: Optimization) -> bool:
        """Whether the step count `done` is evaluated: every eval_every steps, densely during the
        first early_eval_steps (the stability gap), at the stops of shorter cells, and at the end."""
        early = run.early_eval_every is not None and done <= run.early_eval_steps and done % run.early_eval_every == 0
        return done % run.eval_every == 0 or early or done in self.extra_eval_steps or done == self.total_steps

    def evaluation_count(self, run: Optimization) -> int:
        """How many evaluations the run makes: at step 0 and at each step `evaluates` names (counted
        without visiting every step, for `rewarm plan` on runs of 100,000 steps)."""
        end = self.total_steps
        steps = set(range(run.eval_every, end + 1, run.eval_every)) | {s for s in self.extra_eval_steps if s <= end} | {end}
        if run.early_eval_every is not None:
            steps |= set(range(run.early_eval_every, min(run.early_eval_steps, end) + 1, run.early_eval_every))
        return 1 + len(steps - {0})
