"""The papers' takeaways checked on the grid's numbers: each finding a sentence computed from them, its
verdict (supported, partly supported, contradicted) decided by thresholds named here and fixed before
any result was seen."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rewarm import config as cfg
from rewarm import grid
from rewarm.report.measures import CORPORA

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


def rewarmed(names: list[str], cells: dict[str, cfg.TrainConfig], specs) -> list[str]:
    """The cells that re-warm a pre-trained checkpoint (not the constant-LR or from-scratch baselines);
    `specs`: the configuration's checkpoints, which say which are from scratch."""
    scratch = grid.scratch_checkpoints(specs)
    return [n for n in names if cells[n].schedule != "constant" and cells[n].checkpoint not in scratch]


def takeaway_warmup(members, table, cells, specs) -> Finding | None:
    """Takeaway 1: warm-up length has no significant effect on either loss; 0% warm-up spikes first."""
    names = [n for n in rewarmed(members, cells, specs) if n in table]
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


def takeaway_max_lr(members, table, cells, specs, seq_len: int) -> Finding | None:
    """Takeaway 2: a larger max LR helps downstream and hurts upstream; re-warming then decaying is
    needed to learn well downstream; a constant LR is better early on upstream, and loses later."""
    names = sorted((n for n in rewarmed(members, cells, specs) if n in table), key=lambda n: cells[n].max_lr)
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


def takeaway_same_data(members, table, cells, specs) -> Finding | None:
    """Takeaway 3: re-warming raises the loss first even on the same data, and the models do not
    recover from it (their final upstream loss stays above the starting checkpoint's)."""
    names = [n for n in rewarmed(members, cells, specs) if n in table]
    if not names:
        return None
    rose = [table[n]["gap_upstream"].rise > 0 for n in names]
    above = [table[n].get("forgetting", 0.0) > 0 for n in names]
    why = (f"training on the upstream corpus itself, the upstream loss rose after step 0 in {sum(rose)} of {len(names)} "
           f"re-warmed cells (largest rise {max(table[n]['gap_upstream'].rise for n in names):.3f} nats) and ended above the "
           f"starting checkpoint's in {sum(above)} of {len(names)}")
    return Finding("Re-warming raises the loss first even on the same data (no shift), and the models do not recover from it",
                   verdict([all(rose), all(above)]), why)


def takeaway_scratch(members, table, cells, specs) -> Finding | None:
    """Takeaway 4: every re-warmed model beats training from scratch on downstream."""
    scratch = [n for n in members if cells[n].checkpoint in grid.scratch_checkpoints(specs) and n in table]
    names = [n for n in rewarmed(members, cells, specs) if n in table]
    if not scratch or not names:
        return None
    beaten = [table[n]["downstream_loss"] < table[scratch[0]]["downstream_loss"] for n in names]
    losses = ", ".join(f"{table[n]['downstream_loss']:.4f}" for n in names)
    why = f"final downstream loss from scratch {table[scratch[0]]['downstream_loss']:.4f}; re-warmed {losses}"
    return Finding("Every re-warmed model beats training from scratch on downstream", verdict([all(beaten)]), why)


PROGRESS_UNITS = {"M": 1e6, "B": 1e9, "T": 1e12}


def checkpoint_age(spec) -> float:
    """How far into pre-training a checkpoint is, to find the latest of a series: the tokens it was
    trained on where known (declared as `tokens_seen`, or named in its revision as OLMo's are:
    `stage1-step10000-tokens21B`), else its step (Pythia's `step<N>` revisions); infinity for `final`
    and `main` (the end of the series), NaN where neither is known. A series is compared in one unit:
    its revisions name their tokens, or none does."""
    declared = getattr(spec, "tokens_seen", None)
    if declared is not None:
        return float(declared)
    revision = getattr(spec, "revision", None) or ""
    if revision in ("final", "main"):
        return math.inf
    tokens = re.search(r"(?:^|-)tokens(\d+(?:\.\d+)?)([MBT])$", revision)
    if tokens:
        return float(tokens.group(1)) * PROGRESS_UNITS[tokens.group(2)]
    step = re.fullmatch(r"step(\d+)", revision) or re.search(r"(?:^|-)step(\d+)(?:-|$)", revision)
    return float(step.group(1)) if step else math.nan


def takeaway_checkpoints(members, table, cells, specs) -> Finding | None:
    """Takeaway 5: the latest checkpoint is best on downstream, and earlier ones do not learn faster
    (compared within each group of cells that differ only by their checkpoint)."""
    names = [n for n in rewarmed(members, cells, specs) if n in table]
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
        found.append(takeaway_warmup(members, table, cells, specs))
    if axis == "max_lr":
        found.append(takeaway_same_data(members, table, cells, specs) if same_data
                     else takeaway_max_lr(members, table, cells, specs, seq_len))
    if axis == "checkpoint":
        found.append(takeaway_scratch(members, table, cells, specs))
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
    return [n for n, c in cells.items() if c.replay_fraction > 0 and c.checkpoint in grid.scratch_checkpoints(specs)]


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
    names = rewarmed_latest(table, cells, specs, latest)
    if not names:
        return None
    up = sum(table[n]["gap_upstream"].rise > 0 for n in names)
    down = sum(table[n]["gap_downstream"].rise > 0 for n in names)
    below = sum(table[n]["downstream_loss"] < table[n]["rows"][0]["val/downstream/loss"] for n in names)
    verdict_ = verdict([up == len(names), down == len(names), below == len(names)])
    return (f"Re-warming the latest checkpoint ({latest}) first raises the loss on both corpora, then the downstream loss "
            f"falls below its start: {verdict_} (the upstream loss rose after step 0 in {up} of {len(names)} re-warmed "
            f"cells, the downstream loss in {down}; the final downstream loss is below the step-0 loss in {below}).")


def rewarmed_latest(table, cells, specs, latest: str | None) -> list[str]:
    """The finished cells that re-warm the latest checkpoint on the downstream corpus as the paper does,
    without replay (Gupta et al. 2023, section 2: "We do not use replay")."""
    return [n for n in rewarmed(list(table), cells, specs)
            if cells[n].train_corpus == "downstream" and cells[n].checkpoint == latest and cells[n].replay_fraction == 0]


def latest_checkpoint(specs) -> str | None:
    """The pre-trained checkpoint furthest into pre-training (`checkpoint_age`)."""
    aged = {name: checkpoint_age(spec) for name, spec in specs.items() if name not in grid.scratch_checkpoints(specs)}
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
    scratch = next((n for n in specs if n in grid.scratch_checkpoints(specs) and n in base), None)  # the first declared
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
    names = [n for n in rewarmed_latest(table, cells, specs, latest) if "forgetting" in table[n]]
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
