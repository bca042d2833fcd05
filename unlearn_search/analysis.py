"""Why unlearning fails (PAPER.md section 6) and a strong membership inference attack: the science, no MLflow.

**H1, model shift.** The poisons move the model far: the distance between the poisoned model (trained on S_corr) and
the retrained one (S_corr minus the k poisons) is compared with the distance to a *clean control*, trained with the
same recipe and seed on S_corr minus k random clean (retain) points (`control_set`, `train_control`). Distances over
parameters (ℓ1, ℓ2 of the flattened difference) and over outputs on the test set (mean ℓ1 and ℓ2 between softmax
vectors): `model_shift`. Per unlearned model, how far it travelled from the poisoned model and which fraction of the
way to the retrained model it went (`progress`: the projection of its move on the needed shift).

**H2, orthogonal subspace.** The needed shift d = θ_retrain − θ_poisoned against what the remaining data can do from
the poisoned model: the cosine between each of the first plain-GD updates on the retain set and d (`gd_alignment`),
and the fraction of ‖d‖² inside the span of the per-batch mean retain gradients at the poisoned model
(`batch_gradients`, `gradient_span_fraction`; the span of all of them and of their top singular directions). The
same for the clean control's shift θ_control − θ_poisoned against the data that remains there (`control_set`), for
comparison: each shift is measured against the gradients of its own remaining set (against the retain set, which
still holds the removed clean points, the control's span fraction on the `linear` default was 52.7% instead of
44.8%).

**LiRA** (Carlini et al. 2022, with a pooled variance): the scored points are the forget set (the poisons as trained
on; positives) and the test set (negatives). Each shadow model trains, with the scenario's recipe, on the retain set
plus half of the scored points, in complementary pairs, so each scored point is a member of exactly half of the
shadows and every shadow's training set is about as large as the target models' (`train_shadows`; with halves of
S_corr ∪ test instead, shadows trained on about 900 points against the targets' 1,200-1,400, and a retrained model
looked like a member on 9% of the poisons at 1% FPR on the default: it was simply more confident than the shadows).
Per point, the logit-scaled confidence φ = log p_y − log(1 − p_y) of the shadows that trained on it and of those
that did not give two Gaussians: per-point means, and variances pooled within each set of scored points (forget,
test), since with few shadows a per-point variance is too noisy (a retrained model then scored no poison at all at
1% FPR) and one variance for all points is wrong for the poisons, whose confidence varied about 4x more between
models than test points' on the default (a retrained model then looked like a member on 7% of the poisons at 1%
FPR; pooled per set: 1.4%, chance being 1%). A model's score for a point is the log-likelihood ratio of its own φ
under the two Gaussians (`lira_scores`).

**U-LiRA** (Hayes et al. 2024): the same shadows, each of which then unlearns the poisons it trained on with a
method's configuration (`ulira_fits`); per poison, "trained on and unlearned" against "never seen". The question
it answers is the unlearning one: can the method's output be told from retraining, poison by poison (`ulira`)?
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .context import RunContext
from .methods import Splits
from .metrics.roc import auc_of_curve, roc_curve
from .models import create_model
from .scenario import Scenario
from .training import flat_grad, predict_logits, train

CONTROL_OFFSET = 131  # ctx.generator offset of the control's random clean points


# ---- H1 --------------------------------------------------------------------------------------------------------


def control_set(scenario: Scenario, ctx: RunContext, draw: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """S_corr minus as many random retain points as there are poisons (the poisons stay); ``draw`` picks another
    random set of clean points (draw 0 is the one controls were always trained on)."""
    xr, yr = scenario.retain
    k = scenario.poisoning.n_poison
    offset = CONTROL_OFFSET if draw == 0 else CONTROL_OFFSET + 10_000 + draw
    drop = torch.randperm(len(xr), generator=ctx.generator(offset=offset))[:k]
    keep = torch.ones(len(xr), dtype=torch.bool)
    keep[drop] = False
    return torch.cat([xr[keep], scenario.poisoning.x_poison]), torch.cat([yr[keep], scenario.poisoning.y_poison])


def train_control(scenario: Scenario, ctx: RunContext, draw: int = 0) -> nn.Module:
    """The clean control: `control_set` (of ``draw``) trained with the references' recipe, initial weights and
    shuffling seed."""
    x, y = control_set(scenario, ctx, draw)
    model = create_model(scenario.spec, seed=scenario.config.seed)
    return train(model, x, y, scenario.config.train, ctx.child(11))


def param_vector(model: nn.Module) -> torch.Tensor:
    """The trainable parameters (all of them, except a frozen backbone's: `models.frozen`), flattened, float64, on
    the CPU, in the order of `training.flat_grad`."""
    return torch.cat([p.detach().double().flatten().cpu() for p in model.parameters() if p.requires_grad])


def output_distance(a: nn.Module, b: nn.Module, x: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Mean ℓ1 and ℓ2 distance between the two models' softmax outputs on ``x``."""
    pa = predict_logits(a, x, device).double().softmax(1)
    pb = predict_logits(b, x, device).double().softmax(1)
    diff = pa - pb
    return float(diff.abs().sum(1).mean()), float(diff.norm(dim=1).mean())


def model_shift(poisoned: nn.Module, retrain: nn.Module, control: nn.Module, x_test: torch.Tensor,
                device: torch.device) -> dict[str, float]:
    """H1: distances poisoned -> retrained (removing the poisons) and poisoned -> control (removing as many clean
    points), over parameters and test outputs, with their ratios (> 1: the poisons moved the model farther)."""
    theta_p = param_vector(poisoned)
    out: dict[str, float] = {}
    for name, other in (("poison", retrain), ("clean", control)):
        d = param_vector(other) - theta_p
        out[f"h1_param_l1_{name}"] = float(d.abs().sum())
        out[f"h1_param_l2_{name}"] = float(d.norm())
        out[f"h1_output_l1_{name}"], out[f"h1_output_l2_{name}"] = output_distance(poisoned, other, x_test, device)
    for kind in ("param_l1", "param_l2", "output_l1", "output_l2"):
        clean = out[f"h1_{kind}_clean"]
        out[f"h1_{kind}_ratio"] = out[f"h1_{kind}_poison"] / clean if clean > 0 else float("inf")
    return out


def l1_ratio_over_draws(poisoned: nn.Module, retrain: nn.Module, controls: list[nn.Module]) -> dict[str, float]:
    """H1 as the paper states it: the ℓ1 parameter shift of removing the poisons over that of removing as many
    random clean points, for each control draw, with its mean and 95% t-interval over the draws (NaN bounds with
    one draw)."""
    from .verdict import mean_ci

    theta_p = param_vector(poisoned)
    poison = float((param_vector(retrain) - theta_p).abs().sum())
    ratios = [poison / float((param_vector(c) - theta_p).abs().sum()) for c in controls]
    mean, lo, hi = mean_ci(ratios)
    return {"h1_l1_ratio_mean": mean, "h1_l1_ratio_low": lo, "h1_l1_ratio_high": hi,
            "h1_control_draws": float(len(controls)), **{f"h1_l1_ratio_draw{i}": r for i, r in enumerate(ratios)}}


def progress(unlearned: nn.Module, poisoned: nn.Module, retrain: nn.Module) -> dict[str, float]:
    """How far an unlearned model moved from the poisoned one (ℓ2 over parameters), the fraction of the needed
    shift d = θ_retrain − θ_poisoned it covered (its move projected on d, over ‖d‖²: 1 = all the way, 0 = none,
    negative = away), and its remaining distance to the retrained model as a fraction of ‖d‖."""
    theta_p = param_vector(poisoned)
    d = param_vector(retrain) - theta_p
    move = param_vector(unlearned) - theta_p
    dd = float(d.dot(d))
    return {"h1_travel_l2": float(move.norm()),
            "h1_progress": float(move.dot(d)) / dd if dd > 0 else float("nan"),
            "h1_remaining": float((move - d).norm()) / math.sqrt(dd) if dd > 0 else float("nan")}


# ---- H2 --------------------------------------------------------------------------------------------------------


def _mean_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The batch's mean-loss gradient over the trainable parameters (`training.flat_grad`), float64 on the CPU, laid
    out as `param_vector`."""
    return flat_grad(model, x, y, reduction="mean").detach().double().cpu()


def gd_alignment(poisoned: nn.Module, data: tuple[torch.Tensor, torch.Tensor], shift: torch.Tensor, ctx: RunContext,
                 steps: int = 50, lr: float = 0.01, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Plain SGD (no momentum) on ``data`` (the set that remains after the removal: the retain set for the poisons,
    `control_set` for the clean control) from a copy of the poisoned model, ``steps`` batches: per step, the cosine
    between that step's update and ``shift``, and between the cumulative update so far and ``shift``."""
    import copy

    model = copy.deepcopy(poisoned).to(ctx.device).train()  # train mode, as GD's own updates (BatchNorm batch stats)
    xr, yr = (t.to(ctx.device) for t in data)
    gen = ctx.generator(offset=137)
    shift = shift / shift.norm()
    step_cos, cum_cos = [], []
    start = param_vector(model)
    epochs = -(-steps * batch_size // len(xr))  # reshuffled each epoch, as many epochs as the steps need
    order = torch.cat([torch.randperm(len(xr), generator=gen) for _ in range(epochs)])
    for t in range(steps):
        idx = order[t * batch_size:(t + 1) * batch_size].to(ctx.device)
        g = _mean_grad(model, xr[idx], yr[idx])
        update = -lr * g
        with torch.no_grad():
            offset = 0
            for p in (q for q in model.parameters() if q.requires_grad):
                n = p.numel()
                p.add_(update[offset:offset + n].view_as(p).to(p))
                offset += n
        step_cos.append(float(update.dot(shift) / update.norm()) if update.norm() > 0 else 0.0)
        total = param_vector(model) - start
        cum_cos.append(float(total.dot(shift) / total.norm()) if total.norm() > 0 else 0.0)
    return {"step_cosine": np.array(step_cos), "cumulative_cosine": np.array(cum_cos)}


def batch_gradients(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], ctx: RunContext, n_batches: int = 32,
                    batch_size: int = 64) -> torch.Tensor:
    """``n_batches`` per-batch mean gradients of the loss on random batches of ``data`` (the remaining set, as for
    `gd_alignment`) at ``model`` in train mode, as GD's updates take them (BatchNorm on batch statistics), as the
    rows of a (n_batches, n_params) float64 matrix."""
    import copy

    work = copy.deepcopy(model).to(ctx.device).train()
    xr, yr = data
    gen = ctx.generator(offset=139)
    rows = []
    for _ in range(n_batches):
        idx = torch.randperm(len(xr), generator=gen)[:batch_size]
        rows.append(_mean_grad(work, xr[idx].to(ctx.device), yr[idx].to(ctx.device)))
    return torch.stack(rows)


def gradient_span_fraction(grads: torch.Tensor, shift: torch.Tensor,
                           ranks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """The fraction of ‖shift‖² inside the span of the rows of ``grads`` (all of them: ``all``) and of their top
    ``r`` right singular directions (``top<r>``): 1 = the clean gradients can express the shift, 0 = orthogonal."""
    _, s, vh = torch.linalg.svd(grads, full_matrices=False)
    keep = s > s.max() * 1e-10 if len(s) else s.bool()
    basis = vh[keep]
    coords = basis @ shift
    total = float(shift.dot(shift))
    out = {"all": float(coords.dot(coords)) / total}
    for r in ranks:
        c = coords[:r]
        out[f"top{r}"] = float(c.dot(c)) / total
    return out


# ---- LiRA -------------------------------------------------------------------------------------------------------


#: Version of the stored shadow fits (`ShadowFits.to_arrays`): fits stored by older code (format 1: per-point means
#: and pooled variances only, calibrated on test points) are not reused.
LIRA_FORMAT = 2
#: The fewest shadow models LiRA takes: its null is calibrated by leaving one complementary pair out and fitting on
#: the rest, which needs two pairs left so that each point has a within-point variance (with one pair left, or 2-4
#: shadows in all, the variance fell back to the spread across points, and a retrained model's poisons were flagged
#: at TPR 0.32 at 1% FPR with 2 shadows); docs/analyze.md has the measured false-positive rates.
MIN_SHADOWS = 6


@dataclass(frozen=True)
class Gaussians:
    """Per scored point, the mean φ of the shadows that trained on it (``mu_in``) and of those that did not
    (``mu_out``), and the standard deviations pooled within the point's set (``sd_in``, ``sd_out``)."""

    mu_in: np.ndarray
    mu_out: np.ndarray
    sd_in: np.ndarray
    sd_out: np.ndarray


@dataclass(frozen=True)
class ShadowFits:
    """The shadows' φ on every scored point (forget set, then test set) and which points each trained on: LiRA's
    Gaussians are fitted from them (`fit`), with any complementary pair left out for its calibrated null."""

    phis: np.ndarray  # (n_shadows, n_scored)
    members: np.ndarray  # (n_shadows, n_scored) bool
    n_poison: int

    @property
    def n_shadows(self) -> int:
        return len(self.phis)

    def fit(self, leave_out_pair: int | None = None) -> Gaussians:
        """The Gaussians from every shadow, or from all but the complementary pair ``leave_out_pair``."""
        keep = np.ones(self.n_shadows, dtype=bool)
        if leave_out_pair is not None:
            keep[2 * leave_out_pair: 2 * leave_out_pair + 2] = False
        k, n = self.n_poison, self.phis.shape[1]
        return _gaussian_fits(self.phis[keep], self.members[keep], (slice(0, k), slice(k, n)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"phis": self.phis, "members": self.members, "n_poison": np.array([self.n_poison]),
                "format": np.array([LIRA_FORMAT])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ShadowFits:
        """Raises ``ValueError`` for fits of another format (made by older code)."""
        if "format" not in a or int(a["format"][0]) != LIRA_FORMAT:
            raise ValueError(f"shadow fits of format {int(a['format'][0]) if 'format' in a else 1}, not "
                             f"{LIRA_FORMAT}")
        return cls(a["phis"], a["members"].astype(bool), int(a["n_poison"][0]))


def scored_points(scenario: Scenario) -> tuple[torch.Tensor, torch.Tensor]:
    """The points LiRA scores: the forget set (the poisons as trained on), then the test set."""
    xf, yf = scenario.forget
    return torch.cat([xf, scenario.data.x_test]), torch.cat([yf, scenario.data.y_test])


def logit_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> np.ndarray:
    """φ = log p_y − log(1 − p_y), computed from the logits without forming p (stable when p_y is near 0 or 1)."""
    z = predict_logits(model, x, device).double()
    own = z.gather(1, y.view(-1, 1).cpu()).squeeze(1)
    others = z.clone()
    others.scatter_(1, y.view(-1, 1).cpu(), -math.inf)
    return (own - torch.logsumexp(others, dim=1)).numpy()


def check_shadows(name: str, n: int, off_allowed: bool = False) -> None:
    """A shadow count must be even (complementary pairs) and at least `MIN_SHADOWS` (or 0, off, where
    ``off_allowed``)."""
    if (n == 0 and off_allowed) or (n >= MIN_SHADOWS and n % 2 == 0):
        return
    from .errors import UsageError

    even = f"an even number >= {MIN_SHADOWS} (pairs of halves; fewer cannot calibrate LiRA's null)"
    valid = f"0 (off) or {even}" if off_allowed else even
    raise UsageError(f"{name}={n!r} is not valid; valid: {valid}")


@dataclass
class Shadows:
    """Trained shadow models and which scored points (forget set, then test set) each one trained on."""

    models: list[nn.Module]
    members: np.ndarray  # (n_shadows, n_scored) bool


def shadow_models(scenario: Scenario, n_shadows: int, ctx: RunContext) -> Shadows:
    """``n_shadows`` (even) shadow models with the scenario's recipe, each on the retain set plus one of a
    complementary pair of random halves of the scored points. Cost: ``n_shadows`` trainings about as large as the
    poisoned model's."""
    check_shadows("shadows", n_shadows)
    x, y = scored_points(scenario)
    xr, yr = scenario.retain
    n = len(x)
    models: list[nn.Module] = []
    member = np.zeros((n_shadows, n), dtype=bool)
    for pair in range(n_shadows // 2):
        chosen = torch.randperm(n, generator=ctx.generator(offset=1000 + pair))[: n // 2]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[chosen] = True
        for j, m in enumerate((mask, ~mask)):
            i = 2 * pair + j
            model = create_model(scenario.spec, seed=ctx.child(2000 + i).seed)
            train(model, torch.cat([xr, x[m]]), torch.cat([yr, y[m]]), scenario.config.train, ctx.child(3000 + i))
            models.append(model.eval())
            member[i] = m.numpy()
    return Shadows(models, member)


def train_shadows(scenario: Scenario, n_shadows: int, ctx: RunContext) -> ShadowFits:
    """LiRA's per-point fits from `shadow_models`."""
    return fit_shadows(shadow_models(scenario, n_shadows, ctx), scenario, ctx.device)


def fit_shadows(shadows: Shadows, scenario: Scenario, device: torch.device) -> ShadowFits:
    x, y = scored_points(scenario)
    phis = np.stack([logit_confidence(m, x, y, device) for m in shadows.models])
    return ShadowFits(phis, shadows.members.astype(bool), scenario.poisoning.n_poison)


def _gaussian_fits(phis: np.ndarray, member: np.ndarray, groups: tuple[slice, ...]) -> Gaussians:
    """Per point, the mean φ of the shadows where it is in (``member``) and where it is out; standard deviations
    pooled within each group of points. Non-finite φ (a shadow that diverged) are left out of both. A group without
    a within-point degree of freedom raises ``ValueError`` (no silent fallback to the spread across points)."""
    finite = np.isfinite(phis)
    phis = np.where(finite, phis, 0.0)
    fits = {}
    for name, is_in in (("in", member & finite), ("out", ~member & finite)):
        count = is_in.sum(0)
        mu = np.where(is_in, phis, 0).sum(0) / np.maximum(count, 1)
        mu = np.where(count > 0, mu, np.nan)
        sq = np.where(is_in, phis - np.nan_to_num(mu), 0) ** 2
        sd = np.zeros(phis.shape[1])
        for g in groups:
            dof = int((count[g] - 1).clip(min=0).sum())
            if dof <= 0:
                raise ValueError(f"too few shadow models to fit a variance ({len(phis)} used); at least "
                                 f"{MIN_SHADOWS} are needed")
            sd[g] = max(float(np.sqrt(sq[:, g].sum() / dof)), 1e-6)
        fits[name] = (mu, sd)
    return Gaussians(fits["in"][0], fits["out"][0], fits["in"][1], fits["out"][1])


def lira_scores(phi: np.ndarray, mu_in: np.ndarray, mu_out: np.ndarray, sd_in: np.ndarray | float,
                sd_out: np.ndarray | float) -> np.ndarray:
    """log N(φ; μ_in, sd_in²) − log N(φ; μ_out, sd_out²) per point (larger = more likely a member)."""
    from scipy import stats

    return stats.norm.logpdf(phi, mu_in, sd_in) - stats.norm.logpdf(phi, mu_out, sd_out)


#: Below this many negatives a TPR at 0.1% FPR is not measured (NaN): the threshold would be interpolated.
MIN_NEGATIVES_AT_0_1 = 1000


def lira(model: nn.Module, scenario: Scenario, fits: ShadowFits, device: torch.device) -> dict[str, float]:
    """LiRA on ``model``'s poisons against their own calibrated null: for each complementary pair of shadows left
    out, the Gaussians are fitted on the other shadows; the model's poisons are scored with them (positives) and so
    are the same poisons under the left-out shadow that did not train on each (negatives: what a model that never
    saw a poison scores under the very fits it is judged with). AUC, TPR at 1% FPR and at 0.1% FPR (NaN with fewer
    than `MIN_NEGATIVES_AT_0_1` negatives). A model that never saw the poisons gives AUC 0.5 and TPR 1% at 1% FPR."""
    k = fits.n_poison
    xf, yf = scenario.forget
    phi = logit_confidence(model, xf, yf, device)
    pos, neg = [], []
    for pair in range(fits.n_shadows // 2):
        g = fits.fit(leave_out_pair=pair)
        a, b = 2 * pair, 2 * pair + 1
        out_a = ~fits.members[a, :k]
        held = np.where(out_a, fits.phis[a, :k], fits.phis[b, :k])  # each poison is out of exactly one of the two
        args = (g.mu_in[:k], g.mu_out[:k], g.sd_in[:k], g.sd_out[:k])
        pos.append(lira_scores(phi, *args))
        neg.append(lira_scores(held, *args))
    p, n = np.nan_to_num(np.concatenate(pos)), np.nan_to_num(np.concatenate(neg))
    fpr, tpr = roc_curve(p, n)
    return {"lira_auc": auc_of_curve(fpr, tpr),
            "lira_tpr_at_0.1fpr": float(np.interp(0.001, fpr, tpr)) if len(n) >= MIN_NEGATIVES_AT_0_1 else math.nan,
            "lira_tpr_at_1fpr": float(np.interp(0.01, fpr, tpr))}


# ---- U-LiRA -----------------------------------------------------------------------------------------------------

#: Unlearns ``splits.x_forget`` from a shadow model with a method's configuration: (model, splits, ctx) -> model.
UnlearnFn = Callable[[nn.Module, Splits, RunContext], nn.Module]


def ulira_fits(shadows: Shadows, scenario: Scenario, unlearn_fn: UnlearnFn, ctx: RunContext) -> Gaussians:
    """U-LiRA's fits for one method (Hayes et al. 2024, "Inexact unlearning needs more careful evaluations"): each
    shadow unlearns the poisons it trained on (its members of the forget set; its test-set members stay in its
    retain set) with ``unlearn_fn``; per poison, the φ of the shadows that trained on it and then unlearned it
    ("in") against those that never saw it ("out", unlearned too, of the other poisons), variances pooled over
    the forget set. Cost: one run of the method per shadow."""
    k = scenario.poisoning.n_poison
    xf, yf = scenario.forget
    xr, yr = scenario.retain
    xt, yt = scenario.data.x_test, scenario.data.y_test
    phis = np.zeros((len(shadows.models), k))
    for i, (model, m) in enumerate(zip(shadows.models, shadows.members, strict=True)):
        told, kept = torch.from_numpy(m[:k]), torch.from_numpy(m[k:])
        splits = Splits(xf[told], yf[told], torch.cat([xr, xt[kept]]), torch.cat([yr, yt[kept]]))
        phis[i] = logit_confidence(unlearn_fn(model, splits, ctx.child(4000 + i)), xf, yf, ctx.device)
    return _gaussian_fits(phis, shadows.members[:, :k], (slice(0, k),))


def ulira(model: nn.Module, retrain: nn.Module, scenario: Scenario, fits: Gaussians,
          device: torch.device) -> dict[str, float]:
    """U-LiRA on ``model`` (unlearned by the method whose shadows gave ``fits``): the likelihood ratio "trained on
    and unlearned" against "never seen" of each poison, the unlearned model's poisons as positives against the
    retrained model's (the same points, never seen) as negatives: AUC 0.5 when the method's output cannot be told
    from retraining on the poisons; TPR at 1% FPR, and at 0.1% FPR only with at least `MIN_NEGATIVES_AT_0_1`
    poisons (else NaN)."""
    xf, yf = scenario.forget

    def scores(m: nn.Module) -> np.ndarray:
        s = lira_scores(logit_confidence(m, xf, yf, device), fits.mu_in, fits.mu_out, fits.sd_in, fits.sd_out)
        return np.nan_to_num(s, nan=0.0)  # a point no shadow could fit: no evidence either way

    negatives = scores(retrain)
    fpr, tpr = roc_curve(scores(model), negatives)
    at_0_1 = float(np.interp(0.001, fpr, tpr)) if len(negatives) >= MIN_NEGATIVES_AT_0_1 else math.nan
    return {"ulira_auc": auc_of_curve(fpr, tpr), "ulira_tpr_at_0.1fpr": at_0_1,
            "ulira_tpr_at_1fpr": float(np.interp(0.01, fpr, tpr))}
