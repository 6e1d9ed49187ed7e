"""The `report` stage: tables, figures and findings across the grid.

Reads each cell's curves (`runs/<cell>/metrics.jsonl`, the learning rate from DVCLive) and
final evaluations (`evals/cells/<cell>.json`, `evals/base/<name>.json`), and writes
`report.md`, `report.html`, `results.csv` and PNG figures. The derived measures are pure
functions of the logged numbers, and every finding is a sentence computed from them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import FAILURE, atomic_dir, write_text

log = logging.getLogger(__name__)

CORPORA = ("upstream", "downstream")


# -- derived measures (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """The stability gap of one validation loss after re-warming (De Lange et al. 2023)."""

    rise: float
    """Peak loss after step 0 minus the loss at step 0 (0 if it never rose)."""
    peak_tokens: int
    """Tokens seen at the peak."""
    recovered_tokens: int | None
    """Tokens seen when the loss first came back below its step-0 value after the peak (None: never)."""


def stability_gap(rows: list[dict], key: str) -> Gap:
    start = rows[0][key]
    later = rows[1:] or rows
    peak = max(later, key=lambda r: r[key])
    rise = max(0.0, peak[key] - start)
    recovered = None
    if rise > 0:
        after = [r for r in rows if r["tokens"] > peak["tokens"] and r[key] < start]
        recovered = after[0]["tokens"] if after else None
    return Gap(rise=rise, peak_tokens=peak["tokens"] if rise > 0 else 0, recovered_tokens=recovered)


def forgetting(final_upstream_loss: float, base_upstream_loss: float) -> float:
    """Final upstream loss minus the base checkpoint's: > 0 means the model forgot upstream."""
    return final_upstream_loss - base_upstream_loss


def adaptation(final_downstream_loss: float, base_downstream_loss: float) -> float:
    """Base downstream loss minus the final one: > 0 means the model learned downstream."""
    return base_downstream_loss - final_downstream_loss


@dataclass(frozen=True)
class CurveFit:
    """L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s): the loss-curve law with learning-rate annealing
    of Tissue et al. 2024, S1 the summed learning rate ("forward area"), S2 the annealing area."""

    l0: float
    a: float
    alpha: float
    c: float
    rmse: float
    """Root-mean-square error of the fit on the points it was fitted to."""

    def predict(self, s1: float, s2: float) -> float:
        return self.l0 + self.a * s1 ** (-self.alpha) - self.c * s2


def lr_areas(lrs: list[float], decay: float = 0.999) -> tuple[list[float], list[float]]:
    """S1 and S2 after each step of a learning-rate sequence (Tissue et al. 2024, eq. 2-3):
    S1 sums the rates; S2 sums an annealing momentum m_i = decay * m_(i-1) + (lr_(i-1) - lr_i),
    counted from the peak on. A warm-up's rise is not annealing: counted, it would be negative
    annealing that lasts the whole run, and two cells that differ only in warm-up length would be
    predicted far apart."""
    peak = lrs.index(max(lrs)) if lrs else 0
    s1, s2, out1, out2, momentum = 0.0, 0.0, [], [], 0.0
    for i, lr in enumerate(lrs):
        if i > peak:
            momentum = decay * momentum + (lrs[i - 1] - lr)
        s1 += lr
        s2 += momentum
        out1.append(s1)
        out2.append(s2)
    return out1, out2


def fit_curve(steps: list[int], losses: list[float], lrs: list[float]) -> CurveFit | None:
    """Least squares for L0, A, C >= 0 (the law's constants are positive: a negative L0 would let a
    near-logarithm fit the points and extrapolate badly) at each alpha of a grid; the best alpha
    wins. `lrs[i]` is the rate of update i, so the loss logged at step s follows updates 0..s-1.
    Points where no learning has happened yet (S1 = 0: GPT-NeoX's warm-up runs its first update at LR 0) are
    left out, since the law's S1^-alpha is undefined there. None if too few points."""
    import itertools

    import numpy as np

    s1, s2 = lr_areas(lrs)
    points = [(s1[s - 1], s2[s - 1], loss) for s, loss in zip(steps, losses) if 0 < s <= len(lrs) and s1[s - 1] > 0]
    if len(points) < 4:
        return None
    x1, x2, y = (np.array(v, dtype=float) for v in zip(*points))
    supports = [cols for k in (3, 2, 1) for cols in itertools.combinations(range(3), k)]
    best = None
    for alpha in np.linspace(0.05, 2.0, 79):
        design = np.stack([np.ones_like(x1), x1 ** (-alpha), -x2], axis=1)
        # Non-negative least squares with three unknowns: the optimum is the unconstrained fit on
        # its non-zero columns, so try every set of columns and keep the best feasible one.
        for cols in supports:
            sub, *_ = np.linalg.lstsq(design[:, cols], y, rcond=None)
            if (sub < 0).any():
                continue
            coef = np.zeros(3)
            coef[list(cols)] = sub
            rmse = float(np.sqrt(np.mean((design @ coef - y) ** 2)))
            if best is None or rmse < best.rmse:
                best = CurveFit(l0=float(coef[0]), a=float(coef[1]), alpha=float(alpha), c=float(coef[2]), rmse=rmse)
    return best


# Thresholds of the verdicts, fixed before looking at any result. The report names them.
NO_EFFECT_SPREAD = 0.01
"""'No significant effect' (takeaway 1): a study's final losses lie within 1% of their mean, on each corpus."""
NOT_FASTER_SHARE = 0.9
"""'Earlier checkpoints do not learn faster' (takeaway 5): the latest checkpoint's downstream loss is the
lowest at 90% or more of the evaluations after step 0."""


@dataclass(frozen=True)
class Finding:
    """One of the paper's takeaways, checked on one study's numbers."""

    claim: str
    verdict: str
    """supported (every part holds), partly supported (some), contradicted (none)."""
    why: str

    def sentence(self) -> str:
        return f"{self.claim}: {self.verdict} ({self.why})."


def verdict(parts: list[bool]) -> str:
    return "supported" if all(parts) else ("partly supported" if any(parts) else "contradicted")


def spread(values: list[float]) -> float:
    """(max - min) / mean: how far apart a study's final losses are."""
    return (max(values) - min(values)) / (sum(values) / len(values))


def rewarmed(names: list[str], cells: dict[str, cfg.TrainConfig]) -> list[str]:
    """The cells that re-warm a pre-trained checkpoint (not the constant-LR or from-scratch baselines)."""
    return [n for n in names if cells[n].schedule != "constant" and cells[n].checkpoint != "scratch"]


def takeaway_warmup(members, table, cells) -> Finding | None:
    """Takeaway 1: warm-up length has no significant effect on either loss; 0% warm-up spikes first."""
    names = [n for n in rewarmed(members, cells) if n in table]
    if len(names) < 2:
        return None
    spreads = {c: spread([table[n][f"{c}_loss"] for n in names]) for c in CORPORA}
    parts = [all(v < NO_EFFECT_SPREAD for v in spreads.values())]
    why = (f"final losses across warm-up fractions {', '.join(f'{cells[n].warmup_fraction:g}' for n in names)} differ by "
           f"{spreads['upstream']:.2%} upstream and {spreads['downstream']:.2%} downstream, threshold {NO_EFFECT_SPREAD:.0%}")
    rise = {n: max(table[n]["gap_upstream"].rise, table[n]["gap_downstream"].rise) for n in names}
    cold = [n for n in names if not cells[n].warmup_fraction and not cells[n].warmup_steps]
    if cold:
        spike = rise[cold[0]] > 0 and rise[cold[0]] >= max(rise[n] for n in names)
        parts.append(spike)
        why += (f"; without warm-up the loss first rises by {rise[cold[0]]:.3f} nats, "
                f"{'the largest' if spike else 'not the largest'} early rise of the study")
    return Finding("The length of the warm-up has no significant effect on either validation loss, and no warm-up gives an "
                   "initial loss spike (the stability gap)", verdict(parts), why)


def takeaway_max_lr(members, table, cells, seq_len: int) -> Finding | None:
    """Takeaway 2: a larger max LR helps downstream and hurts upstream; re-warming then decaying is
    needed to learn well downstream; a constant LR is better early on upstream, and loses later."""
    names = sorted((n for n in rewarmed(members, cells) if n in table), key=lambda n: cells[n].max_lr)
    if len(names) < 2:
        return None
    down, up = [table[n]["downstream_loss"] for n in names], [table[n]["upstream_loss"] for n in names]
    parts = [all(b <= a for a, b in zip(down, down[1:])) and all(b >= a for a, b in zip(up, up[1:]))]
    why = (f"max_lr {', '.join(f'{cells[n].max_lr:g}' for n in names)}: final downstream loss {_series(down)}, "
           f"upstream {_series(up)}")
    constant = [n for n in members if cells[n].schedule == "constant" and n in table]
    if constant:
        flat = constant[0]
        parts.append(min(down) < table[flat]["downstream_loss"])
        # "Initially": at the first evaluation after every compared cell has finished its warm-up (with
        # evaluations every step early on, the first one after step 0 would compare warm-ups, not schedules).
        warm = max(max(cfg.warmup_steps(cells[n], seq_len) for n in names), 1)
        early = {}
        for n in names + [flat]:
            later = [r for r in table[n]["rows"] if r["step"] >= warm]
            if later:
                early[n] = later[0]["val/upstream/loss"]
        parts.append(flat in early and early[flat] <= min(early.values()))
        why += (f"; constant LR {cells[flat].max_lr:g}: final downstream loss {table[flat]['downstream_loss']:.4f} against the "
                f"best re-warmed {min(down):.4f}, upstream loss at the first evaluation after the warm-ups (step {warm}) "
                f"{early.get(flat, float('nan')):.4f} "
                f"against the re-warmed cells' lowest {min(v for n, v in early.items() if n != flat):.4f}")
    return Finding("A larger maximum learning rate helps downstream and hurts upstream; re-warming then decaying is needed to "
                   "learn well downstream, while a constant learning rate is better early on upstream", verdict(parts), why)


def takeaway_same_data(members, table, cells) -> Finding | None:
    """Takeaway 3: re-warming raises the loss first even on the same data, and the models do not
    recover from it (their final upstream loss stays above the starting checkpoint's)."""
    names = [n for n in rewarmed(members, cells) if n in table]
    if not names:
        return None
    rose = [table[n]["gap_upstream"].rise > 0 for n in names]
    above = [table[n].get("forgetting", 0.0) > 0 for n in names]
    why = (f"training on the upstream corpus itself, the upstream loss rose after step 0 in {sum(rose)} of {len(names)} "
           f"re-warmed cells (largest rise {max(table[n]['gap_upstream'].rise for n in names):.3f} nats) and ended above the "
           f"starting checkpoint's in {sum(above)} of {len(names)}")
    return Finding("Re-warming raises the loss first even on the same data (no shift), and the models do not recover from it",
                   verdict([all(rose), all(above)]), why)


def takeaway_scratch(members, table, cells) -> Finding | None:
    """Takeaway 4: every re-warmed model beats training from scratch on downstream."""
    scratch = [n for n in members if cells[n].checkpoint == "scratch" and n in table]
    names = [n for n in rewarmed(members, cells) if n in table]
    if not scratch or not names:
        return None
    beaten = [table[n]["downstream_loss"] < table[scratch[0]]["downstream_loss"] for n in names]
    losses = ", ".join(f"{table[n]['downstream_loss']:.4f}" for n in names)
    why = f"final downstream loss from scratch {table[scratch[0]]['downstream_loss']:.4f}; re-warmed {losses}"
    return Finding("Every re-warmed model beats training from scratch on downstream", verdict([all(beaten)]), why)


def checkpoint_age(spec) -> float:
    """How far into pre-training a checkpoint is: its step (`step<N>` revisions), infinity for `final`."""
    revision = getattr(spec, "revision", None) or ""
    if revision == "final":
        return math.inf
    return float(revision[4:]) if revision.startswith("step") and revision[4:].isdigit() else math.nan


def takeaway_checkpoints(members, table, cells, specs) -> Finding | None:
    """Takeaway 5: the latest checkpoint is best on downstream, and earlier ones do not learn faster
    (compared within each group of cells that differ only by their checkpoint)."""
    names = [n for n in rewarmed(members, cells) if n in table]
    groups: dict[tuple, list[str]] = {}
    for n in names:
        key = tuple(sorted((k, v) for k, v in cfg.to_dict(cells[n]).items() if k != "checkpoint"))
        groups.setdefault(key, []).append(n)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    best, faster, lines = [], [], []
    for group in groups.values():
        latest = max(group, key=lambda n: checkpoint_age(specs.get(cells[n].checkpoint)))
        best.append(all(table[latest]["downstream_loss"] <= table[n]["downstream_loss"] for n in group))
        steps = [r["step"] for r in table[latest]["rows"][1:]]
        losses = {n: {r["step"]: r["val/downstream/loss"] for r in table[n]["rows"]} for n in group}
        lowest = [all(losses[latest][s] <= losses[n].get(s, math.inf) for n in group) for s in steps]
        faster.append(sum(lowest) >= NOT_FASTER_SHARE * len(lowest))
        ranking = ", ".join(f"{cells[n].checkpoint} {table[n]['downstream_loss']:.4f}"
                            for n in sorted(group, key=lambda n: table[n]["downstream_loss"]))
        lines.append(f"{ranking}; {cells[latest].checkpoint} lowest at {sum(lowest)} of {len(lowest)} evaluations")
    return Finding("The latest checkpoint is the best start downstream, and earlier checkpoints do not learn faster",
                   verdict([all(best), all(faster)]), "final downstream loss " + " | ".join(lines) +
                   f"; threshold {NOT_FASTER_SHARE:.0%} of the evaluations")


def study_findings(study: cfg.Study, members, table, cells, specs, seq_len: int) -> list[Finding]:
    """The paper's takeaways that a study speaks to, by the axis it varies and where it trains."""
    axis = grid.study_axis(study)
    same_data = bool(members) and all(cells[n].train_corpus == "upstream" for n in members)
    found = []
    if axis == "warmup_fraction":
        found.append(takeaway_warmup(members, table, cells))
    if axis == "max_lr":
        found.append(takeaway_same_data(members, table, cells) if same_data else takeaway_max_lr(members, table, cells, seq_len))
    if axis == "checkpoint":
        found.append(takeaway_scratch(members, table, cells))
        found.append(takeaway_checkpoints(members, table, cells, specs))
    return [f for f in found if f is not None]


# Ibrahim et al. 2024 (Table 2): replay and the union baseline. Thresholds fixed from the paper's own
# statements before any demo number was seen; the report names them.
FEW_PERCENT = 0.05
"""'A few percent of replay': the largest replay share in the sweep at or below 5% (the paper's choice for
the weak Pile -> SlimPajama shift)."""
RECOVERS_MOST = 0.5
"""'Recovers most of the forgetting': the few-percent cell's final upstream loss removes at least half of
the gap between no replay and the union baseline (the loss without forgetting). Table 2: 5% removes
(2.44 - 2.23) / (2.44 - 2.17) = 78%."""
SMALL_COST = 0.25
"""'At a small cost downstream': its downstream loss rises above no replay's by at most a quarter of what
its upstream loss falls. Table 2: 2.51 - 2.50 = 0.01 against 0.21."""
MATCH_TOLERANCE = 0.01
"""'Matches the union baseline on the average': the best replay cell's average of the final upstream
and downstream losses is at most 1% above the union baseline's. Table 2: 5% is 0.85% above, 50% level."""


def union_cells(cells: dict[str, cfg.TrainConfig], specs) -> list[str]:
    """The union baseline: from scratch with replay, i.e. trained on both corpora mixed (Ibrahim et al. 2024)."""
    return [n for n, c in cells.items() if c.replay_fraction > 0 and isinstance(specs.get(c.checkpoint), cfg.ScratchCheckpoint)]


def replay_sweep(studies: dict, table, cells, specs) -> tuple[list[str], list[str]]:
    """(the re-warmed cells of the first study varying replay_fraction, by share; the union baselines), finished ones."""
    union = union_cells(cells, specs)
    for study, names in studies.values():
        if grid.study_axis(study) == "replay_fraction":
            sweep = [n for n in names if n in table and n not in union]
            return sorted(sweep, key=lambda n: cells[n].replay_fraction), [n for n in union if n in table]
    return [], []


def replay_table(sweep: list[str], union: list[str], table, cells) -> dict | None:
    """Ibrahim et al. 2024's Table 2: final loss on each corpus and their average, per replay share and
    for the union baseline."""
    if not sweep:
        return None
    rows = []
    for n in sweep + union:
        up, down = table[n]["upstream_loss"], table[n]["downstream_loss"]
        label = f"union (from scratch, {cells[n].replay_fraction:.1%} upstream)" if n in union else f"{cells[n].replay_fraction:.1%}"
        rows.append([label, f"{up:.4f}", f"{down:.4f}", f"{(up + down) / 2:.4f}", n])
    return {"header": ["replay", "upstream loss", "downstream loss", "average", "cell"], "rows": rows}


def replay_findings(sweep: list[str], union: list[str], table, cells) -> list[Finding]:
    """Ibrahim et al. 2024's two claims on replay, checked with the thresholds above."""
    def losses(n: str) -> tuple[float, float]:
        return table[n]["upstream_loss"], table[n]["downstream_loss"]

    found = []
    none = next((n for n in sweep if cells[n].replay_fraction == 0), None)
    few = [n for n in sweep if 0 < cells[n].replay_fraction <= FEW_PERCENT]
    if none and few and union:
        pick = few[-1]
        (up0, down0), (up, down), (up_union, _) = losses(none), losses(pick), losses(union[0])
        forgetting = up0 - up_union
        recovered = (up0 - up) / forgetting if forgetting > 0 else float("nan")
        cost = down - down0
        parts = [forgetting > 0 and recovered >= RECOVERS_MOST, cost <= SMALL_COST * max(up0 - up, 0.0)]
        found.append(Finding(
            f"A few percent of replay recovers most of the forgetting at a small cost downstream (Ibrahim et al. 2024, Table 2)",
            verdict(parts),
            f"{cells[pick].replay_fraction:.1%} replay: upstream {up0:.4f} -> {up:.4f}, {recovered:.0%} of the way to the union "
            f"baseline's {up_union:.4f} (RECOVERS_MOST {RECOVERS_MOST:.0%}); downstream {down0:.4f} -> {down:.4f}, "
            f"{cost:+.4f} against {up0 - up:.4f} gained upstream (SMALL_COST {SMALL_COST:g})"))
    replayed = [n for n in sweep if cells[n].replay_fraction > 0]
    if replayed and union:
        average = {n: sum(losses(n)) / 2 for n in replayed + union}
        best = min(replayed, key=lambda n: average[n])
        gap = average[best] / average[union[0]] - 1
        found.append(Finding(
            "Re-warming and re-decaying with replay matches the union baseline on the average loss (Ibrahim et al. 2024, Table 2)",
            verdict([gap <= MATCH_TOLERANCE]),
            f"best: {cells[best].replay_fraction:.1%} replay, average {average[best]:.4f} against the union's "
            f"{average[union[0]]:.4f}, {gap:+.2%} (MATCH_TOLERANCE {MATCH_TOLERANCE:.0%})"))
    return found


def _series(values: list[float]) -> str:
    return " -> ".join(f"{v:.4f}" for v in values)


def rewarming_raises_both(table, cells, specs) -> str | None:
    """Takeaway 3's first half on shifted data (Gupta et al. 2023, abstract and Fig. 6): re-warming the
    fully pre-trained model first raises the loss on both corpora, then the downstream loss falls below
    where it started. Counted on the cells that re-warm the latest pre-training checkpoint, as the paper
    states it for Pythia's final step143000 (earlier checkpoints are still far from a minimum)."""
    latest = latest_checkpoint(specs)
    names = rewarmed_latest(table, cells, latest)
    if not names:
        return None
    up = sum(table[n]["gap_upstream"].rise > 0 for n in names)
    down = sum(table[n]["gap_downstream"].rise > 0 for n in names)
    below = sum(table[n]["downstream_loss"] < table[n]["rows"][0]["val/downstream/loss"] for n in names)
    verdict_ = verdict([up == len(names), down == len(names), below == len(names)])
    return (f"Re-warming the latest checkpoint ({latest}) first raises the loss on both corpora, then the downstream loss "
            f"falls below its start: {verdict_} (the upstream loss rose after step 0 in {up} of {len(names)} re-warmed "
            f"cells, the downstream loss in {down}; the final downstream loss is below the step-0 loss in {below}).")


def rewarmed_latest(table, cells, latest: str | None) -> list[str]:
    """The finished cells that re-warm the latest checkpoint on the downstream corpus as the paper does,
    without replay (Gupta et al. 2023, section 2: "We do not use replay")."""
    return [n for n in rewarmed(list(table), cells)
            if cells[n].train_corpus == "downstream" and cells[n].checkpoint == latest and cells[n].replay_fraction == 0]


def latest_checkpoint(specs) -> str | None:
    """The pre-trained checkpoint furthest into pre-training (`final`, or the highest `step<N>`)."""
    aged = {name: checkpoint_age(spec) for name, spec in specs.items() if not isinstance(spec, cfg.ScratchCheckpoint)}
    aged = {name: age for name, age in aged.items() if not math.isnan(age)}
    return max(aged, key=aged.get) if aged else None


# How the demo is calibrated against the paper's setting, fixed before looking at any result (the
# paper: Pythia-410M's SlimPajama perplexity is within a small factor of its Pile perplexity, and
# continual pre-training moves the Pile loss by tenths of a nat while it gains about as much downstream).
CLOSE_PPL_FACTOR = 3.0
"""A mild shift: the latest checkpoint's downstream perplexity is within this factor of its upstream one."""
FAR_BELOW_FACTOR = 10.0
"""Pre-training upstream helps downstream: the latest checkpoint's downstream perplexity is at least this
many times lower than the untrained (from-scratch) model's."""
ORDER_OF_FACTOR = 3.0
"""'Of the order of': a re-warmed cell's upstream loss rise is at most this many times its downstream gain."""


def calibration(table, cells, base, specs) -> list[str]:
    """How the shift compares with the paper's, from the base checkpoints' and the cells' own numbers."""
    latest = latest_checkpoint(specs)
    scratch = next((n for n, spec in specs.items() if isinstance(spec, cfg.ScratchCheckpoint) and n in base), None)
    lines = []
    if latest in base and all(c in base[latest] for c in CORPORA):
        up, down = base[latest]["upstream"]["ppl"], base[latest]["downstream"]["ppl"]
        ratio = max(up, down) / min(up, down)
        lines.append(f"Mild shift: {_holds(ratio <= CLOSE_PPL_FACTOR)} (the latest checkpoint, {latest}, has downstream "
                     f"perplexity {down:.4g} against upstream {up:.4g}, a factor of {ratio:.2f}; threshold {CLOSE_PPL_FACTOR:g}).")
        if scratch is not None and "downstream" in base[scratch]:
            untrained = base[scratch]["downstream"]["ppl"]
            lines.append(f"Pre-training upstream helps downstream: {_holds(untrained >= FAR_BELOW_FACTOR * down)} (downstream "
                         f"perplexity {down:.4g} against the untrained model's {untrained:.4g}, {untrained / down:.1f} times lower; "
                         f"threshold {FAR_BELOW_FACTOR:g} times).")
    names = [n for n in rewarmed_latest(table, cells, latest) if "forgetting" in table[n]]
    if names:
        ratios = {n: table[n]["forgetting"] / table[n]["adaptation"] if table[n]["adaptation"] > 0 else math.inf for n in names}
        worst = max(names, key=ratios.get)
        ok = all(r <= ORDER_OF_FACTOR for r in ratios.values())
        lines.append(f"Forgetting of the order of the gain: {_holds(ok)} (upstream loss rise against downstream loss gain of the "
                     f"cells re-warming {latest}: at most {ratios[worst]:.2f} times, in {worst}: +{table[worst]['forgetting']:.4f} "
                     f"against {table[worst]['adaptation']:+.4f} nats; threshold {ORDER_OF_FACTOR:g} times).")
    return lines


# Benchmark ranking against perplexity ranking (issue 17), thresholds fixed before any result was seen.
RANKS_AGREE = 0.8
"""The rankings agree when Spearman's rank correlation between the benchmark average and the negated
mean validation loss is at least this."""
RANKS_DISAGREE = 0.0
"""They disagree when it is at most this (no or an inverse relation); between the two, they partly agree."""


def ranking_agreement(names: list[str], table) -> str | None:
    """Whether a study's cells rank the same by benchmark average (higher is better) and by mean final
    validation loss over the evaluated corpora (lower is better): one sentence, or None with fewer
    than three cells benchmarked. Spearman's rho, as scipy computes it (ties share their mean rank)."""
    from scipy.stats import spearmanr

    ranked = [n for n in names if n in table and table[n].get("bench_average") is not None]
    if len(ranked) < 3:
        return None
    scores = [table[n]["bench_average"] for n in ranked]
    losses = [table[n]["mean_loss"] for n in ranked]
    best_bench, best_loss = max(ranked, key=lambda n: table[n]["bench_average"]), min(ranked, key=lambda n: table[n]["mean_loss"])
    if len(set(scores)) == 1:
        return f"The benchmark does not tell these {len(ranked)} cells apart (every average is {scores[0]:.3f}), so it cannot rank them."
    # Rounded: rho is a ratio of small integers (0.8 exactly for 4 cells one swap apart), which floating point misses.
    rho = round(float(spearmanr(scores, [-loss for loss in losses]).statistic), 9)
    word = "agrees" if rho >= RANKS_AGREE else ("disagrees" if rho <= RANKS_DISAGREE else "partly agrees")
    same = "the same cell" if best_bench == best_loss else f"{best_bench} by benchmark, {best_loss} by loss"
    return (f"The benchmark ranking {word} with the perplexity ranking: Spearman's rho {rho:+.2f} over {len(ranked)} cells "
            f"between the benchmark average and the mean validation loss (agrees at {RANKS_AGREE:g} or more, disagrees at "
            f"{RANKS_DISAGREE:g} or less); best: {same}.")


def _holds(ok: bool) -> str:
    return "holds" if ok else "does not hold"


# -- reading and writing ----------------------------------------------------------------------------


def collect(config: cfg.Config, runs: Path, evals: Path, partial: bool = False):
    """(cells, table of finished cells, base evaluations, unfinished cells -> why). Without
    `partial`, a cell that has no evaluation is an error naming the missing file."""
    cells = grid.cells(config)
    # A checkpoint that is another cell's final state is measured by that cell's own evaluation.
    continued = grid.continued(config)
    sources = {name: evals / "base" / f"{name}.json" for name in config.checkpoints}
    sources.update({name: evals / "cells" / f"{spec.cell}.json" for name, spec in continued.items()})
    base = {name: json.loads(path.read_text()) for name, path in sources.items() if path.exists()}
    table, unfinished = {}, {}
    for name, cell in cells.items():
        if not (evals / "cells" / f"{name}.json").exists() or not (runs / name / "metrics.jsonl").exists():
            failure = runs / name / FAILURE
            error = json.loads(failure.read_text())["error"] if failure.exists() else None
            if not partial:
                raise FileNotFoundError(f"{evals / 'cells' / f'{name}.json'}: cell {name} has no evaluation"
                                        + (f" (it failed: {error})" if error else ""))
            unfinished[name] = f"failed: {error}" if error else "not run (or not finished)"
            continue
        rows = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
        final = json.loads((evals / "cells" / f"{name}.json").read_text())
        start = base.get(cell.checkpoint)
        entry = {"rows": rows, "lr": _lr_log(runs / name), **{f"gap_{c}": stability_gap(rows, f"val/{c}/loss") for c in CORPORA}}
        for corpus, result in final.items():
            entry[f"{corpus}_loss"], entry[f"{corpus}_ppl"] = result["loss"], result["ppl"]
            if start is not None and corpus in start:
                entry[f"{corpus}_change"] = result["loss"] - start[corpus]["loss"]
        if start is not None:
            entry["forgetting"] = forgetting(final["upstream"]["loss"], start["upstream"]["loss"])
            entry["adaptation"] = adaptation(final["downstream"]["loss"], start["downstream"]["loss"])
        entry["mean_loss"] = sum(result["loss"] for result in final.values()) / len(final)
        if config.benchmarking():
            entry.update(benchmark_scores(evals / "benchmark" / "cells" / f"{name}.json", partial))
        table[name] = entry
    if config.benchmarking():
        for name in base:
            if name not in continued:  # a continued cell's end is that cell's own benchmark
                base[name] = {**base[name], **benchmark_scores(evals / "benchmark" / "base" / f"{name}.json", partial)}
    return cells, table, base, unfinished


def benchmark_scores(path: Path, partial: bool) -> dict:
    """A benchmark result as table entries: `bench_<task>` (its score) and `bench_average`; nothing
    for a missing file with `partial`, else an error naming it."""
    if not path.exists():
        if partial:
            return {}
        raise FileNotFoundError(f"{path}: no benchmark result (the `benchmark` job has not run)")
    result = json.loads(path.read_text())
    scores = {f"bench_{task}": t["score"]["value"] for task, t in result["tasks"].items() if t["score"]}
    return {**scores, "bench_average": result["average"]}


def _lr_log(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "dvclive/plots/metrics/train/lr.tsv"
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in lines)]


def warmup_end_tokens(config: cfg.Config, cell: cfg.TrainConfig) -> int:
    """Tokens seen when the cell's warm-up ends (its schedule's warm-up, in whole steps)."""
    seq_len = config.prepare.seq_len
    return cfg.warmup_steps(cell, seq_len) * cell.batch_sequences * seq_len


def study_lines(study_members: list[str], cells, table) -> list[str]:
    """A study's cells, and the baselines (constant LR, from scratch) of other studies trained as far
    on the same corpus, drawn for comparison as the paper's figures do."""
    members = [n for n in study_members if n in table]
    reach = {(cells[n].tokens, cells[n].train_corpus) for n in members}
    extra = [n for n in grid.baseline_cells(cells) if n in table and n not in members and (cells[n].tokens, cells[n].train_corpus) in reach]
    return members + extra


def _style(name: str, cells, axis: str | None, members: list[str]) -> tuple[str, str]:
    cell = cells[name]
    if cell.checkpoint == "scratch":
        return ":", f"from scratch, max_lr {cell.max_lr:g}"
    if cell.schedule == "constant":
        return "--", f"constant LR {cell.max_lr:g} (no re-warming)"
    label = ", ".join(f"{a}={getattr(cell, a)}" for a in ([axis] if axis else [])) or name
    return "-", label if name in members else f"{label} ({name})"


def figures(config: cfg.Config, cells, table, studies, out: Path) -> dict[str, list[tuple[str, str]]]:
    """PNG figures in the paper's style, each with a JSON of the values drawn (read back from the
    plotted lines, so tests and users can check them against the metrics). Per study: validation
    loss against tokens on both corpora (the paper's Figs. 1, 2, 3, 5, 7) and the trajectory of
    downstream against upstream perplexity, start and end of warm-up marked (Figs. 4, 6); and the
    learning rates of every cell. Returns figure -> (file, caption), by study (and `all`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[tuple[str, str]]] = {}
    for study_name, (study, members) in studies.items():
        axis = grid.study_axis(study)
        names = study_lines(members, cells, table)
        if not names:
            continue
        fig, panels = plt.subplots(1, 2, figsize=(11, 4))
        for panel, corpus in zip(panels, CORPORA):
            for name in names:
                style, label = _style(name, cells, axis, members)
                rows = table[name]["rows"]
                line, = panel.plot([r["tokens"] for r in rows], [r[f"val/{corpus}/loss"] for r in rows], style, label=label)
                line.set_gid(name)
            panel.set_title(f"{corpus} validation loss")
            panel.set_xlabel("tokens seen")
            panel.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            panel.legend(fontsize=7)
        fig.suptitle(f"{study_name}: {study.title}" if study.title else study_name)
        files = [_save(fig, out, f"study_{study_name}", f"Study {study_name}: validation loss against tokens seen on both "
                       "corpora (dashed: constant learning rate, no re-warming; dotted: from scratch).")]
        # The paper's trajectories (Figs. 4, 6) draw the pre-trained starts only: from scratch, thousands of
        # perplexity points, would flatten them into one corner.
        pretrained = [n for n in names if cells[n].checkpoint != "scratch"]
        if not pretrained:  # a study of from-scratch cells only (the union baseline) has no trajectory to draw
            made[study_name] = files
            continue
        fig, ax = plt.subplots(figsize=(6, 5))
        for name in pretrained:
            style, label = _style(name, cells, axis, members)
            rows = table[name]["rows"]
            line, = ax.plot([r["val/downstream/ppl"] for r in rows], [r["val/upstream/ppl"] for r in rows], style, marker=".", label=label)
            line.set_gid(name)
            end = warmup_end_tokens(config, cells[name])
            warm = next((r for r in rows if r["tokens"] >= end), rows[-1]) if end else None
            if warm is not None and warm is not rows[0]:
                ax.plot([warm["val/downstream/ppl"]], [warm["val/upstream/ppl"]], "o", color="green", gid=f"{name}:warmup_end")
        starts = {cells[n].checkpoint: n for n in reversed(pretrained)}  # one per start
        for name in starts.values():
            first = table[name]["rows"][0]
            ax.plot([first["val/downstream/ppl"]], [first["val/upstream/ppl"]], "o", color="red", gid=f"{name}:start")
        ax.set_xlabel("downstream validation perplexity")
        ax.set_ylabel("upstream validation perplexity")
        ax.set_title(f"{study_name}: trajectory (red: start, green: warm-up end)")
        ax.legend(fontsize=7)
        files.append(_save(fig, out, f"trajectory_{study_name}", f"Study {study_name}: downstream against upstream perplexity as "
                           "training goes on; red: the starting checkpoints, green: the end of each cell's warm-up (from scratch is "
                           "left out, as in the paper's Figs. 4 and 6)."))
        made[study_name] = files
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in table.items():
        if entry["lr"]:
            line, = ax.plot(*zip(*entry["lr"]), label=name, linewidth=1)
            line.set_gid(name)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=5)
    made["all"] = [_save(fig, out, "learning_rates", "The learning-rate schedules actually used (logged every step).")]
    return made


def _save(fig, out: Path, stem: str, caption: str) -> tuple[str, str]:
    """Write `<stem>.png` and `<stem>.json`: per panel, each line's cell and the x and y it drew."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    panels = [{"title": ax.get_title(), "lines": [{"cell": line.get_gid(), "label": line.get_label(),
                                                    "x": [float(v) for v in line.get_xdata()],
                                                    "y": [float(v) for v in line.get_ydata()]} for line in ax.get_lines()]}
              for ax in fig.axes]
    write_text(out / f"{stem}.json", json.dumps({"caption": caption, "panels": panels}, indent=1) + "\n")
    plt.close(fig)
    return f"{stem}.png", caption


def columns(corpora: list[str], tasks: dict[str, str] | None = None) -> list[tuple[str, str, object]]:
    """(key, title, best-of) for the results table: final perplexity per corpus, forgetting and
    adaptation, the loss change of each extra held-out corpus against the base checkpoint, and each
    benchmark task's score (task -> its title) with their average (higher is better)."""
    extra = [c for c in corpora if c not in CORPORA]
    tasks = tasks or {}
    bench = [(f"bench_{t}", title, max) for t, title in tasks.items()] + ([("bench_average", "benchmark avg", max)] if tasks else [])
    return ([(f"{c}_ppl", f"{c} ppl", min) for c in corpora] + [("forgetting", "forgetting (loss)", min),
            ("adaptation", "adaptation (loss)", max)] + [(f"{c}_change", f"{c} change (loss)", min) for c in extra] + bench)


def benchmark_record(config: cfg.Config, evals: Path) -> dict | None:
    """One benchmark result of the grid (the first cell's there is), for what every result shares:
    the harness's version, the tasks' versions and metrics, the dtype and the batch size."""
    if not config.benchmarking():
        return None
    found = sorted((evals / "benchmark" / "cells").glob("*.json"))
    return json.loads(found[0].read_text()) if found else None


def task_titles(config: cfg.Config, record: dict | None) -> dict[str, str]:
    """Benchmark task -> the results table's head for it: the task and the metric it is scored by."""
    if not config.benchmarking():
        return {}
    scored = {name: t["score"]["metric"] for name, t in (record or {}).get("tasks", {}).items() if t["score"]}
    return {name: f"{name} ({scored[name]})" if name in scored else name for name in sorted(config.benchmark.tasks)}


def benchmark_note(record: dict | None) -> str:
    """How the benchmark columns were computed, from what the harness recorded."""
    if record is None:
        return ""
    tasks = "; ".join(f"{name} (version {t['version']}, {t['num_fewshot']}-shot, {t['examples']} examples, scored by "
                      f"{t['score']['metric'] if t['score'] else 'no accuracy metric'})" for name, t in record["tasks"].items())
    return (f"Benchmark columns: the LM Evaluation Harness ({record['harness']['package']} {record['harness']['version']}) on "
            f"each final model and base checkpoint, {record['dtype']} on {record['device']}, batch size {record['batch_size']}"
            f"{'' if record['limit'] is None else ', at most ' + str(record['limit']) + ' examples per task'}: {tasks}. "
            f"The average is the mean of the tasks' scores (evals/benchmark/ has every metric with its standard error).")


def write_report(config: cfg.Config, runs: Path, evals: Path, out_dir: Path, partial: bool = False) -> Path | None:
    """Write the report; with `partial`, over the cells that finished, listing the others as
    failed or not run (None, and nothing written, if no cell finished)."""
    cells, table, base, unfinished = collect(config, runs, evals, partial)
    if not table:
        return None
    members = grid.studies(config)
    studies = {name: (study, members[name]) for name, study in grid.declared_studies(config).items()}
    corpora = config.eval_corpora()
    record = benchmark_record(config, evals)
    tasks = task_titles(config, record)
    cols = columns(corpora, tasks)
    with atomic_dir(out_dir) as tmp:
        (tmp / "figures").mkdir()
        made = figures(config, cells, table, studies, tmp / "figures")
        best = {key: pick([n for n in table if key in table[n]], key=lambda n: table[n][key], default=None) for key, _, pick in cols}
        header = ["cell"] + [title for _, title, _ in cols] + ["stability gap up (rise)", "recovered at (tokens)"]
        rows = []
        for name, entry in table.items():
            values = [_cell(entry.get(key), name == best[key]) for key, _, _ in cols]
            gap = entry["gap_upstream"]
            rows.append([name, *values, f"{gap.rise:.3f}", "never" if gap.recovered_tokens is None and gap.rise > 0 else str(gap.recovered_tokens or 0)])
        rows += [[name, status] + ["-"] * (len(header) - 2) for name, status in unfinished.items()]
        overview = [s for s in [rewarming_raises_both(table, cells, config.checkpoints)] if s]
        if unfinished:
            overview.insert(0, f"{len(unfinished)} of {len(cells)} cells did not finish and are left out of the findings: "
                               + "; ".join(f"{name} {status}" for name, status in unfinished.items()) + ".")
        fit_rows, fit_text = predictions(config, cells, table)
        sweep, union = replay_sweep(studies, table, cells, config.checkpoints)
        context = {
            "replay": {"table": replay_table(sweep, union, table, cells),
                       "findings": [f.sentence() for f in replay_findings(sweep, union, table, cells)]},
            "overview": overview,
            "calibration": calibration(table, cells, base, config.checkpoints),
            "studies": [{"name": name, "title": study.title, "axis": grid.study_axis(study),
                         "note": "Ibrahim et al. 2024's claims on replay are checked in the section on replay and the union baseline "
                                 "above." if set(names) & set(sweep + union) else "",
                         "findings": [f.sentence() for f in study_findings(study, names, table, cells, config.checkpoints, config.prepare.seq_len)],
                         "ranking": ranking_agreement(names, table) if tasks else None,
                         "table": study_table(names, study, cells, table), "figures": made.get(name, [])}
                        for name, (study, names) in studies.items()],
            "gap": gap_method(cells),
            "thresholds": [("NO_EFFECT_SPREAD", f"{NO_EFFECT_SPREAD:.0%}",
                            "warm-up length has no significant effect when a study's final losses lie within it of their mean"),
                           ("NOT_FASTER_SHARE", f"{NOT_FASTER_SHARE:.0%}", "earlier checkpoints do not learn faster when the "
                            "latest checkpoint's downstream loss is the lowest at this share of the evaluations"),
                           ("CLOSE_PPL_FACTOR", f"{CLOSE_PPL_FACTOR:g}", "a mild shift: the latest checkpoint's downstream "
                            "perplexity is within this factor of its upstream one"),
                           ("FAR_BELOW_FACTOR", f"{FAR_BELOW_FACTOR:g}", "pre-training helps downstream: the latest checkpoint's "
                            "downstream perplexity is at least this many times below the untrained model's"),
                           ("ORDER_OF_FACTOR", f"{ORDER_OF_FACTOR:g}", "forgetting of the order of the gain: a re-warmed cell's "
                            "upstream loss rise is at most this many times its downstream gain"),
                           ("FEW_PERCENT", f"{FEW_PERCENT:.0%}", "a few percent of replay: the largest share in the sweep at or below it"),
                           ("RECOVERS_MOST", f"{RECOVERS_MOST:.0%}", "replay recovers most of the forgetting when it removes this share "
                            "of the upstream gap between no replay and the union baseline"),
                           ("SMALL_COST", f"{SMALL_COST:g}", "at a small cost downstream: the downstream loss rises by at most this "
                            "share of what the upstream loss falls"),
                           ("MATCH_TOLERANCE", f"{MATCH_TOLERANCE:.0%}", "matches the union baseline: the best replay cell's average "
                            "loss is at most this much above the union's"),
                           *([("RANKS_AGREE", f"{RANKS_AGREE:g}", "the benchmark ranking agrees with the perplexity ranking when "
                               "Spearman's rho between them is at least this"),
                              ("RANKS_DISAGREE", f"{RANKS_DISAGREE:g}", "they disagree when it is at most this")] if tasks else [])],
            "fit_text": fit_text, "fit": {"header": FIT_HEADER, "rows": fit_rows},
            "results": {"header": header, "rows": rows},
            "base": {"header": ["checkpoint"] + [f"{c} ppl" for c in corpora] + list(tasks.values())
                               + (["benchmark avg"] if tasks else []),
                     "rows": [[n] + [f"{v[c]['ppl']:.4g}" if c in v else "-" for c in corpora]
                              + [_cell(v.get(f"bench_{t}"), False) for t in tasks] + ([_cell(v.get("bench_average"), False)] if tasks else [])
                              for n, v in base.items()]},
            "benchmark": benchmark_note(record),
            "other_figures": made.get("all", []),
        }
        markdown = render_markdown(context)
        write_text(tmp / "results.csv", _csv(table, corpora, list(tasks)))
        write_text(tmp / "report.md", markdown)
        write_text(tmp / "report.html", render_html(markdown))
    return out_dir / "report.md"


def study_table(names: list[str], study: cfg.Study, cells, table) -> dict:
    """A study's own table: the value of its axis, the final losses (whole validation splits), the
    change from the starting checkpoint and the early rise of each loss (the stability gap)."""
    # the varied axes; for cells listed one by one, the settings they give (a sequence: checkpoint, corpus, ...)
    axes = list(study.vary) or list(dict.fromkeys(k for cell in study.cells for k in cell)) or ["max_lr"]
    benchmarked = any("bench_average" in table[n] for n in names if n in table)
    header = ["cell", *axes, "upstream loss", "downstream loss", "upstream change", "downstream change",
              "rise up (nats)", "rise down (nats)"] + (["benchmark avg"] if benchmarked else [])
    rows = []
    for n in names:
        if n not in table:
            continue
        entry = table[n]
        rows.append([n, *[str(getattr(cells[n], a)) for a in axes], f"{entry['upstream_loss']:.4f}", f"{entry['downstream_loss']:.4f}",
                     _signed(entry.get("upstream_change")), _signed(entry.get("downstream_change")),
                     f"{entry['gap_upstream'].rise:.3f}", f"{entry['gap_downstream'].rise:.3f}"]
                    + ([_cell(entry.get("bench_average"), False)] if benchmarked else []))
    return {"header": header, "rows": rows}


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def gap_method(cells) -> str:
    """How the stability gap was measured, from the evaluation settings the cells used."""
    every = sorted({c.eval_every for c in cells.values()})
    early = sorted({(c.early_eval_every, c.early_eval_steps) for c in cells.values() if c.early_eval_every})
    dense = (" and every " + " / ".join(f"{e} steps during the first {n} steps" for e, n in early)) if early else ""
    return (f"The stability gap of a cell is the highest validation loss logged after step 0 minus the loss at step 0 "
            f"(0 when it never rose), on each corpus, from the in-training evaluations: at step 0, every "
            f"{' / '.join(map(str, every))} steps{dense}, at the end, and where a shorter cell of the same run stops; "
            f"each evaluation reads a fixed sample of eval_tokens tokens of each validation split. Recovered at: the first "
            f"evaluation back below the step-0 loss. A gap shorter than the evaluation interval is not seen.")


def render_markdown(context: dict) -> str:
    """The report as Markdown, from the one template (templates/report.md.j2)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("rewarm", "templates"), autoescape=False,
                                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.md.j2").render(**context)


def render_html(markdown: str) -> str:
    """The same report as HTML: the Markdown rendered by markdown-it (tables on), in a page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Re-warming report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}img{max-width:100%}</style></head><body>\n" + body + "</body></html>\n")


FIT_HEADER = ["cell", "predicted final downstream loss", "measured (in-training sample)", "error"]


def predictions(config: cfg.Config, cells, table) -> tuple[list[list[str]], str]:
    """Fit the law on the reference cell's downstream curve; predict the final loss of every cell
    that starts from the same checkpoint, from its learning rates alone."""
    reference = grid.cell_name(config.train)
    entry = table.get(reference)
    fit = None
    if entry and entry["lr"]:
        rows = entry["rows"]
        fit = fit_curve([r["step"] for r in rows], [r["val/downstream/loss"] for r in rows], [lr for _, lr in entry["lr"]])
    if fit is None:
        return [], "Loss-curve fit (Tissue et al. 2024): not enough evaluations on the reference cell to fit."
    out = []
    for name, other in table.items():
        if cells[name].checkpoint != cells[reference].checkpoint or not other["lr"]:
            continue
        s1, s2 = lr_areas([lr for _, lr in other["lr"]])
        predicted, measured = fit.predict(s1[-1], s2[-1]), other["rows"][-1]["val/downstream/loss"]
        label = f"{name} (the fit's own curve)" if name == reference else name
        out.append([label, f"{predicted:.4f}", f"{measured:.4f}", f"{predicted - measured:+.4f}"])
    text = (f"Loss-curve fit (Tissue et al. 2024) on the reference cell's downstream curve: L = {fit.l0:.3f} + "
            f"{fit.a:.3g} S1^-{fit.alpha:.2f} - {fit.c:.3g} S2, RMSE {fit.rmse:.4f}; the table below predicts the other "
            f"schedules' final loss from their learning rates alone (fitted at max_lr {cells[reference].max_lr:g}: "
            f"cells with another maximum are extrapolations).")
    return out, text


def _cell(value, best: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return f"**{text}**" if best else text


def _csv(table: dict, corpora: list[str], tasks: list[str] = ()) -> str:
    keys = [f"{c}_{m}" for c in corpora for m in ("loss", "ppl")] + ["forgetting", "adaptation"]
    keys += [f"{c}_change" for c in corpora if c not in CORPORA]
    keys += [f"bench_{t}" for t in tasks] + (["bench_average"] if tasks else [])
    lines = ["cell," + ",".join(keys)]
    for name, entry in table.items():
        lines.append(name + "," + ",".join("" if entry.get(k) is None else repr(entry[k]) for k in keys))
    return "\n".join(lines) + "\n"
