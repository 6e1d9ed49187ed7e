"""The continual pre-training law of Wang, Tissue et al. 2025 ("Learning Dynamics in Continual
Pre-Training for Large Language Models", ICML 2025, arXiv 2505.07796, section 3): a validation loss
during continual pre-training (CPT) as a transition between two hidden curves, the pre-training curve
with learning-rate annealing (Tissue et al. 2024) and a distribution-shift term:

    L = L0 + A * S1^-alpha - C * S2 + B * (1 - (1 + E * S1_new)^-beta)

S1 is the forward area (the summed learning rates of pre-training and CPT together), S2 the annealing
area (a momentum of the learning rate's decreases, Tissue et al. 2024 eq. 3, counted from
pre-training's peak on, so that re-warming, a rise, is negative annealing: the loss potential it
gives back), and S1_new the forward area spent on the new data. The shift term saturates in S1_new;
B > 0 on the old data (forgetting), B < 0 on the new. Replay enters through S1_new: a step that
replays a share r of its batch spends (1 - r) of its learning rate on the new data (rewarm's reading:
with r = 1, continuing on the old data itself, no shift remains); the peak learning rate enters through
both areas. One fit per validation corpus. Pure functions of learning-rate sequences and losses: numpy
and scipy, no torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

NAMES = ("l0", "a", "alpha", "c", "b", "e", "beta")
"""The law's parameters, in the order of `Law`'s fields."""
DECAY = 0.999
"""The annealing momentum's decay (Tissue et al. 2024's lambda; their runs use 0.999)."""


@dataclass(frozen=True)
class Point:
    """Where a loss is observed or predicted: the areas after some steps of a run."""

    s1: float
    """Forward area: pre-training's and CPT's learning rates, summed."""
    s2: float
    """Annealing area, pre-training's and CPT's together."""
    s1_new: float
    """Forward area on the new data: each CPT step's learning rate times the share of its batch that is new."""


def areas(pretraining: list[float], lrs: list[float], new_share: float, decay: float = DECAY) -> list[Point]:
    """The points after 0, 1, ..., len(lrs) CPT updates, `pretraining` the learning rates of the
    updates that made the base checkpoint (empty: unknown, the checkpoint counts as a start) and `lrs`
    the CPT run's, `new_share` the share of each CPT batch that is new data (1 - replay). S2 follows
    m_i = decay * m_(i-1) + (lr_(i-1) - lr_i) from the peak of pre-training (of the CPT run, when
    pre-training is unknown) on, and sums the m_i."""
    sequence = [*pretraining, *lrs]
    start = len(pretraining)
    peak = sequence.index(max(sequence[:start])) if start else (lrs.index(max(lrs)) if lrs else 0)
    s1 = s2 = momentum = 0.0
    for i in range(start):
        if i > peak:
            momentum = decay * momentum + (sequence[i - 1] - sequence[i])
        s1 += sequence[i]
        s2 += momentum
    points, new = [Point(s1, s2, 0.0)], 0.0
    for i in range(start, len(sequence)):
        if i > peak:
            momentum = decay * momentum + (sequence[i - 1] - sequence[i])
        s1 += sequence[i]
        s2 += momentum
        new += new_share * sequence[i]
        points.append(Point(s1, s2, new))
    return points


@dataclass(frozen=True)
class Law:
    """The law's parameters for one validation corpus."""

    l0: float
    a: float
    alpha: float
    c: float
    b: float
    """The shift's size: > 0 the loss rises towards the new hidden curve (old data), < 0 it falls (new data)."""
    e: float
    beta: float

    def predict(self, point: Point) -> float:
        return law(point, *self.values())

    def gradient(self, point: Point) -> list[float]:
        """The prediction's derivatives by each parameter (NAMES order), for the delta method."""
        power = point.s1 ** (-self.alpha)
        base = 1.0 + self.e * point.s1_new
        return [1.0, power, -self.a * math.log(point.s1) * power, -point.s2, 1.0 - base ** (-self.beta),
                self.b * self.beta * point.s1_new * base ** (-self.beta - 1.0), self.b * math.log(base) * base ** (-self.beta)]

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in NAMES)


def law(point: Point, l0: float, a: float, alpha: float, c: float, b: float, e: float, beta: float) -> float:
    return l0 + a * point.s1 ** (-alpha) - c * point.s2 + b * (1.0 - (1.0 + e * point.s1_new) ** (-beta))


@dataclass(frozen=True)
class Fit:
    """A fit of the law to observed points, with what it supports."""

    law: Law
    stderr: dict[str, float | None]
    """Each parameter's standard error, from the Jacobian at the optimum (None for one held at a bound)."""
    covariance: list[list[float]]
    """The parameters' covariance (NAMES order): the schedule search samples the law's uncertainty from it."""
    rmse: float
    """Root-mean-square error on the fitted points, in nats."""
    points: int
    starts: int
    """Starting points tried (the best is kept)."""
    s1_range: tuple[float, float]
    s1_new_range: tuple[float, float]

    def to_dict(self) -> dict:
        return {"law": asdict(self.law), "stderr": self.stderr, "covariance": self.covariance, "rmse": self.rmse,
                "points": self.points, "starts": self.starts, "s1_range": list(self.s1_range),
                "s1_new_range": list(self.s1_new_range)}

    @classmethod
    def from_dict(cls, data: dict) -> "Fit":
        return cls(law=Law(**data["law"]), stderr=data["stderr"], covariance=data["covariance"], rmse=data["rmse"],
                   points=data["points"], starts=data["starts"], s1_range=tuple(data["s1_range"]),
                   s1_new_range=tuple(data["s1_new_range"]))


ALPHA = (0.05, 2.0)
BETA = (0.05, 4.0)
"""Bounds of the exponents: the law's power laws decay; beyond these the curves are flat or a step."""


def fit(points: list[Point], losses: list[float], shift: bool = True) -> Fit | None:
    """The law fitted by bounded least squares (scipy.optimize.least_squares, trust region reflective, the Jacobian analytic)
    from several starts: for each (alpha, beta, E) on a grid, the linear parameters (L0, A, C, B) by
    least squares, then the whole law from the best starts; the lowest cost wins. L0, A, C >= 0; E > 0,
    fitted as log E, bounded so that E * S1_new spans 1e-3 to 1e4 over the observed new-data area.
    Without `shift` (no point saw new data), B = 0 and E, beta are not fitted. None if fewer points
    than parameters."""
    import numpy as np
    from scipy.optimize import least_squares

    if len(points) != len(losses):
        raise ValueError(f"{len(points)} points and {len(losses)} losses: one loss per point")
    s1 = np.array([p.s1 for p in points], dtype=float)
    s2 = np.array([p.s2 for p in points], dtype=float)
    new = np.array([p.s1_new for p in points], dtype=float)
    y = np.array(losses, dtype=float)
    keep = s1 > 0  # before any update S1^-alpha is undefined
    s1, s2, new, y = s1[keep], s2[keep], new[keep], y[keep]
    shift = shift and bool(new.max(initial=0.0) > 0)
    count = 7 if shift else 4
    if len(y) <= count:
        return None
    scale = float(new.max()) if shift else 1.0
    log_e_bounds = (math.log(1e-3 / scale), math.log(1e4 / scale))

    def columns(alpha, beta, log_e):
        shifted = 1.0 - (1.0 + math.exp(log_e) * new) ** (-beta) if shift else np.zeros_like(new)
        return np.stack([np.ones_like(s1), s1 ** (-alpha), -s2, shifted], axis=1)

    def residual(p):
        l0, a, alpha, c = p[:4]
        b, log_e, beta = (p[4], p[5], p[6]) if shift else (0.0, 0.0, 1.0)
        return columns(alpha, beta, log_e) @ np.array([l0, a, c, b]) - y

    def jacobian(p):
        l0, a, alpha, c = p[:4]
        power = s1 ** (-alpha)
        columns_ = [np.ones_like(s1), power, -a * np.log(s1) * power, -s2]
        if shift:
            b, log_e, beta = p[4], p[5], p[6]
            e = math.exp(log_e)
            base = 1.0 + e * new
            columns_ += [1.0 - base ** (-beta), b * beta * base ** (-beta - 1.0) * e * new, b * np.log(base) * base ** (-beta)]
        return np.stack(columns_, axis=1)

    starts = []
    grid_beta = np.linspace(*BETA, 6) if shift else [1.0]
    grid_e = np.linspace(*log_e_bounds, 8) if shift else [0.0]
    for alpha in np.linspace(*ALPHA, 8):
        for beta in grid_beta:
            for log_e in grid_e:
                design = columns(alpha, beta, log_e)[:, :4 if shift else 3]
                coef, *_ = np.linalg.lstsq(design, y, rcond=None)
                coef = np.concatenate([coef, [0.0]]) if not shift else coef
                l0, a, c, b = max(coef[0], 0.0), max(coef[1], 0.0), max(coef[2], 0.0), coef[3]
                start = [l0, a, alpha, c, b, log_e, beta][:count]
                starts.append((float(np.sum(residual(start) ** 2)), start))
    starts.sort(key=lambda s: s[0])
    lower = [0.0, 0.0, ALPHA[0], 0.0, -np.inf, log_e_bounds[0], BETA[0]][:count]
    upper = [np.inf, np.inf, ALPHA[1], np.inf, np.inf, log_e_bounds[1], BETA[1]][:count]
    best = None
    for _, start in starts[:4]:
        start = np.clip(start, lower, upper)
        result = least_squares(residual, x0=start, jac=jacobian, bounds=(lower, upper), x_scale="jac",
                               xtol=1e-10, ftol=1e-10, gtol=1e-10, max_nfev=2000)
        if best is None or result.cost < best.cost:
            best = result
    p = list(best.x)
    rmse = float(np.sqrt(np.mean(best.fun ** 2)))
    # Covariance of the least-squares estimate: (J'J)^-1 s^2, with s^2 the residual variance; log E's
    # error carried to E by the delta method (dE = E dlogE).
    jac = best.jac
    dof = max(len(y) - count, 1)
    sigma2 = float(np.sum(best.fun ** 2)) / dof
    # Through the SVD of the Jacobian, its columns scaled by the parameters' sizes (they span six orders of
    # magnitude), directions it cannot see (singular values below 1e-9 of the largest) left out.
    scale = np.maximum(np.abs(best.x), 1e-12)
    _, singular, vt = np.linalg.svd(jac * scale, full_matrices=False)
    seen = singular > singular[0] * 1e-9
    covariance = (scale[:, None] * (vt[seen].T / singular[seen] ** 2) @ vt[seen] * scale[None, :]) * sigma2
    if shift:
        e = math.exp(p[5])
        to_e = np.eye(count)
        to_e[5, 5] = e
        covariance = to_e @ covariance @ to_e.T
        values = [*p[:5], e, p[6]]
    else:
        values = [*p, 0.0, 0.0, 0.0]
        covariance = np.pad(covariance, ((0, 3), (0, 3)))
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    # A parameter held at a bound (A = 0, say: no power law left) has no standard error the curvature can give.
    held = [bool(m) for m in best.active_mask] + [False] * (len(NAMES) - count)
    stderr = {name: (None if held[i] else float(errors[i])) for i, name in enumerate(NAMES)}
    return Fit(law=Law(*(float(v) for v in values)), stderr=stderr, covariance=covariance.tolist(), rmse=rmse,
               points=int(len(y)), starts=len(starts), s1_range=(float(s1.min()), float(s1.max())),
               s1_new_range=(float(new.min()), float(new.max())))


def variance(result: Fit, gradient: list[float]) -> float:
    """The variance of a quantity whose derivatives by the law's parameters are `gradient`, by the delta
    method: g' Cov g, with the fit's covariance (a parameter held at a bound has none: it counts as known)."""
    held = {i for i, name in enumerate(NAMES) if result.stderr[name] is None}
    return max(0.0, sum(gradient[i] * result.covariance[i][j] * gradient[j] for i in range(len(NAMES)) for j in range(len(NAMES))
                        if i not in held and j not in held))
