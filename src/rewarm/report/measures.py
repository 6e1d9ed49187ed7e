"""The report's derived measures: pure functions of the logged numbers (stability gap, forgetting,
adaptation, the loss-curve fit of Tissue et al. 2024)."""

from __future__ import annotations

import math

from dataclasses import dataclass

CORPORA = ("upstream", "downstream")


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
    s1_range: tuple[float, float] = (0.0, math.inf)
    s2_range: tuple[float, float] = (0.0, math.inf)
    """The areas the fitted points span: what the fit supports (`supports`)."""

    def predict(self, s1: float, s2: float) -> float:
        return self.l0 + self.a * s1 ** (-self.alpha) - self.c * s2

    def supports(self, s1: float, s2: float) -> str | None:
        """None if (s1, s2) lies within what the fitted points span (up to EXTRAPOLATION of each span
        beyond its ends); else why not, to print in place of a prediction."""
        for name, value, (low, high) in (("S1", s1, self.s1_range), ("S2", s2, self.s2_range)):
            margin = EXTRAPOLATION * (high - low)
            if not low - margin <= value <= high + margin:
                return f"{name} {value:.3g} outside the fitted {low:.3g} to {high:.3g}"
        return None


EXTRAPOLATION = 0.1
"""How far beyond the fitted points' span of S1 and S2 (as a share of the span) a prediction is still
printed, chosen before looking at any prediction: a cell whose warm-up differs slightly from the
reference's ends a little beyond its S1; one with twice the maximum learning rate, far beyond."""


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
    """The law fitted by bounded least squares (scipy.optimize.least_squares, trust region): L0, A,
    C >= 0 (the law's constants are positive: a negative L0 would let a near-logarithm fit the points
    and extrapolate badly) and alpha in [0.05, 2], started from the best non-negative least-squares
    fit (scipy.optimize.nnls) at a few alphas. `lrs[i]` is the rate of update i, so the loss logged
    at step s follows updates 0..s-1. Points where no learning has happened yet (S1 = 0: GPT-NeoX's
    warm-up runs its first update at LR 0) are left out, since the law's S1^-alpha is undefined
    there. None if too few points."""
    import numpy as np
    from scipy.optimize import least_squares, nnls

    s1, s2 = lr_areas(lrs)
    points = [(s1[s - 1], s2[s - 1], loss) for s, loss in zip(steps, losses) if 0 < s <= len(lrs) and s1[s - 1] > 0]
    if len(points) < 4:
        return None
    x1, x2, y = (np.array(v, dtype=float) for v in zip(*points))

    def design(alpha: float):
        return np.stack([np.ones_like(x1), x1 ** (-alpha), -x2], axis=1)

    starts = []
    for alpha in np.linspace(0.05, 2.0, 40):
        coef, norm = nnls(design(alpha), y)
        starts.append((norm, alpha, coef))
    _, alpha0, (l0, a, c) = min(starts, key=lambda start: start[0])
    result = least_squares(lambda p: design(p[2]) @ np.array([p[0], p[1], p[3]]) - y, x0=[l0, a, alpha0, c],
                           bounds=([0.0, 0.0, 0.05, 0.0], [np.inf, np.inf, 2.0, np.inf]), x_scale="jac", xtol=1e-15, ftol=1e-15,
                           gtol=1e-15, max_nfev=2000)
    l0, a, alpha, c = (float(v) for v in result.x)
    rmse = float(np.sqrt(np.mean(result.fun ** 2)))
    return CurveFit(l0=l0, a=a, alpha=alpha, c=c, rmse=rmse, s1_range=(float(x1.min()), float(x1.max())),
                    s2_range=(float(x2.min()), float(x2.max())))
