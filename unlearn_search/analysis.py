"""Why unlearning fails (docs/paper.md section 6) and a strong membership inference attack: the science, no MLflow.

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

**LiRA** (Carlini et al. 2022, with a pooled variance), asked as the unlearning question: does a model behave on the
poisons like one trained on them, or like one that never saw them? The shadow models come in replicate pairs, one
trained as the poisoned model was (S_corr: the retain set and all k poisons) and one as the retrained reference was
(the retain set alone), each pair with seeds of its own (`shadow_models`): each shadow trains on exactly what its
target trained on. Per poison, the logit-scaled confidence φ = log p_y − log(1 − p_y) of the "in" and of the "out"
replicates give two Gaussians: per-poison means, and variances pooled over the poisons (with few shadows a per-point
variance is too noisy). A model's score for a poison is the log-likelihood ratio of its own φ under the two
(`lira_scores`). The null is calibrated on the poisons themselves: each pair in turn is left out, the Gaussians are
fitted on the others, and the left-out "out" replicate, a model of the retrained reference's kind that the fits never
saw, gives the negatives (`ShadowFits.detect`). (Before issue 25 the shadows trained on random halves of the poisons
and test points, and test points were the negatives: a retrained model's AUC was 0.278; then, with the poisons' own
null but those shadows, its false-positive rate at 1% was 1.3-2.8%.)

**U-LiRA** (Hayes et al. 2024): the same pairs, the "in" replicate then unlearning exactly the target's task (all k
poisons, the same retain set, no test points, the method's configuration and budget; `ulira_fits`); per poison,
"trained on and unlearned" against "never seen". The question it answers is the unlearning one: can the method's
output be told from retraining, poison by poison (`ulira`)?
"""

from __future__ import annotations

import copy
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


#: Version of the stored shadow fits (`ShadowFits.to_arrays`) and shadow models: fits and models stored by older code
#: (format 1: calibrated on test points; format 2: shadows on random halves of poisons and test points, whose "out"
#: models were not the retrained reference's kind) are not reused.
LIRA_FORMAT = 3
#: The fewest shadow models LiRA takes: its null is calibrated by leaving one replicate pair out and fitting on the
#: rest, which needs two pairs left so that each poison has a within-point variance in both hypotheses (with one
#: pair left, or 2-4 shadows in all, there is none; the code before issue 25 then fell back to the spread across
#: points, and a retrained model's poisons were flagged at TPR 0.32 at 1% FPR with 2 shadows); docs/analyze.md has
#: the measured false-positive rates.
MIN_SHADOWS = 6


@dataclass(frozen=True)
class Gaussians:
    """Per poison, the mean φ of the "in" shadows (``mu_in``) and of the "out" shadows (``mu_out``), and the
    standard deviations pooled over the poisons within each hypothesis (``sd_in``, ``sd_out``)."""

    mu_in: np.ndarray
    mu_out: np.ndarray
    sd_in: float
    sd_out: float


@dataclass(frozen=True)
class ShadowFits:
    """φ of the shadow models on every poison, in replicate pairs: row 2i is "in" replicate i (LiRA: trained on
    S_corr, as the poisoned model; U-LiRA: that model, then unlearned by the method), row 2i+1 is "out" replicate i
    (trained on the retain set alone, as the retrained reference). LiRA's Gaussians are fitted from them (`fit`), with
    any pair left out for its calibrated null (`detect`)."""

    phis: np.ndarray  # (n_shadows, n_poison)

    @property
    def n_shadows(self) -> int:
        return len(self.phis)

    @property
    def n_poison(self) -> int:
        return int(self.phis.shape[1])

    def fit(self, leave_out_pair: int | None = None) -> Gaussians:
        """The Gaussians from every pair, or from all but the pair ``leave_out_pair``."""
        keep = np.ones(self.n_shadows // 2, dtype=bool)
        if leave_out_pair is not None:
            keep[leave_out_pair] = False
        (mu_in, sd_in), (mu_out, sd_out) = (_gaussian_fit(self.phis[j::2][: len(keep)][keep]) for j in (0, 1))
        return Gaussians(mu_in, mu_out, sd_in, sd_out)

    def detect(self, phi: np.ndarray, prefix: str) -> dict[str, float]:
        """A model's poisons (its φ, ``phi``) against their own calibrated null: for each pair left out, the
        Gaussians are fitted on the other pairs; the model's poisons are scored with them (positives) and so are the
        same poisons under the left-out "out" replicate (negatives: what a model of the null's kind that the fits never
        saw scores). AUC, TPR at 1% FPR and at 0.1% FPR (NaN with fewer than `MIN_NEGATIVES_AT_0_1` negatives), under
        ``prefix`` (``lira_``, ``ulira_``). A model of the null's kind gives AUC 0.5 and 1% at 1% FPR, up to noise."""
        if self.n_shadows % 2 or self.n_shadows < MIN_SHADOWS:
            raise ValueError(f"too few shadow models to fit a variance ({self.n_shadows} used); at least "
                             f"{MIN_SHADOWS} are needed")
        pos, neg = [], []
        for pair in range(self.n_shadows // 2):
            g = self.fit(leave_out_pair=pair)
            args = (g.mu_in, g.mu_out, g.sd_in, g.sd_out)
            pos.append(lira_scores(phi, *args))
            neg.append(lira_scores(self.phis[2 * pair + 1], *args))
        p, n = np.nan_to_num(np.concatenate(pos)), np.nan_to_num(np.concatenate(neg))  # NaN: no evidence either way
        fpr, tpr = roc_curve(p, n)
        return {f"{prefix}auc": auc_of_curve(fpr, tpr),
                f"{prefix}tpr_at_0.1fpr": float(np.interp(0.001, fpr, tpr)) if len(n) >= MIN_NEGATIVES_AT_0_1
                else math.nan,
                f"{prefix}tpr_at_1fpr": float(np.interp(0.01, fpr, tpr))}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"phis": self.phis, "format": np.array([LIRA_FORMAT])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ShadowFits:
        """Raises ``ValueError`` for fits of another format (made by older code)."""
        found = int(a["format"][0]) if "format" in a else 1
        if found != LIRA_FORMAT:
            raise ValueError(f"shadow fits of format {found}, not {LIRA_FORMAT}")
        return cls(a["phis"])


def logit_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> np.ndarray:
    """φ = log p_y − log(1 − p_y), computed from the logits without forming p (stable when p_y is near 0 or 1)."""
    z = predict_logits(model, x, device).double()
    own = z.gather(1, y.view(-1, 1).cpu()).squeeze(1)
    others = z.clone()
    others.scatter_(1, y.view(-1, 1).cpu(), -math.inf)
    return (own - torch.logsumexp(others, dim=1)).numpy()


def check_shadows(name: str, n: int, off_allowed: bool = False) -> None:
    """A shadow count must be even (replicate pairs) and at least `MIN_SHADOWS` (or 0, off, where ``off_allowed``)."""
    if (n == 0 and off_allowed) or (n >= MIN_SHADOWS and n % 2 == 0):
        return
    from .errors import UsageError

    even = f"an even number >= {MIN_SHADOWS} (pairs of replicates; fewer cannot calibrate LiRA's null)"
    valid = f"0 (off) or {even}" if off_allowed else even
    raise UsageError(f"{name}={n!r} is not valid; valid: {valid}")


@dataclass
class Shadows:
    """Trained shadow models in replicate pairs: model 2i trained on S_corr (as the poisoned model), model 2i+1 on
    the retain set alone (as the retrained reference), each with its own initialisation and data order."""

    models: list[nn.Module]


def shadow_models(scenario: Scenario, n_shadows: int, ctx: RunContext) -> Shadows:
    """``n_shadows`` (even) shadow models with the scenario's recipe: ``n_shadows / 2`` replicates of the poisoned
    model's training (S_corr: the same retain set and all k poisons) and as many of the retrained reference's (the
    retain set alone), seeds of their own. Each shadow thus trains on exactly what its target trained on, so an
    "out" shadow is of the retrained reference's kind and LiRA's null is that of a model that never saw the poisons
    (format 2 trained every shadow on the retain set plus random halves of the poisons and test points; a retrained
    model, with about 400 training points fewer, looked like a member on 1.3-2.8% of the poisons at 1% FPR). Cost:
    ``n_shadows`` trainings, half of them as large as the poisoned model's, half as the retrained one's."""
    check_shadows("shadows", n_shadows)
    models: list[nn.Module] = []
    for i in range(n_shadows):
        x, y = scenario.corrupted if i % 2 == 0 else scenario.retain
        model = create_model(scenario.spec, seed=ctx.child(2000 + i).seed)
        train(model, x, y, scenario.config.train, ctx.child(3000 + i))
        models.append(model.eval())
    return Shadows(models)


def train_shadows(scenario: Scenario, n_shadows: int, ctx: RunContext) -> ShadowFits:
    """LiRA's fits from `shadow_models`."""
    return fit_shadows(shadow_models(scenario, n_shadows, ctx), scenario, ctx.device)


def fit_shadows(shadows: Shadows, scenario: Scenario, device: torch.device) -> ShadowFits:
    xf, yf = scenario.forget
    return ShadowFits(np.stack([logit_confidence(m, xf, yf, device) for m in shadows.models]))


def _gaussian_fit(phis: np.ndarray) -> tuple[np.ndarray, float]:
    """Per poison, the mean φ over the models (rows); the standard deviation pooled over the poisons (with few
    shadows a per-point variance is too noisy). Non-finite φ (a shadow that diverged) are left out. No
    within-point degree of freedom raises ``ValueError`` (no silent fallback to the spread across points)."""
    finite = np.isfinite(phis)
    count = finite.sum(0)
    values = np.where(finite, phis, 0.0)
    mu = np.where(count > 0, values.sum(0) / np.maximum(count, 1), np.nan)
    dof = int((count - 1).clip(min=0).sum())
    if dof <= 0:
        raise ValueError(f"too few shadow models to fit a variance ({len(phis)} per hypothesis); at least "
                         f"{MIN_SHADOWS} shadows are needed")
    sq = np.where(finite, values - np.nan_to_num(mu), 0.0) ** 2
    return mu, max(float(np.sqrt(sq.sum() / dof)), 1e-6)


def lira_scores(phi: np.ndarray, mu_in: np.ndarray, mu_out: np.ndarray, sd_in: np.ndarray | float,
                sd_out: np.ndarray | float) -> np.ndarray:
    """log N(φ; μ_in, sd_in²) − log N(φ; μ_out, sd_out²) per point (larger = more likely a member)."""
    from scipy import stats

    return stats.norm.logpdf(phi, mu_in, sd_in) - stats.norm.logpdf(phi, mu_out, sd_out)


#: Below this many negatives a TPR at 0.1% FPR is not measured (NaN): the threshold would be interpolated.
MIN_NEGATIVES_AT_0_1 = 1000


def lira(model: nn.Module, scenario: Scenario, fits: ShadowFits, device: torch.device) -> dict[str, float]:
    """LiRA on ``model``'s poisons: "trained on them" (the poisoned model's replicates) against "never saw them" (the
    retrained reference's), calibrated on the left-out pair (`ShadowFits.detect`)."""
    xf, yf = scenario.forget
    return fits.detect(logit_confidence(model, xf, yf, device), "lira_")


# ---- U-LiRA -----------------------------------------------------------------------------------------------------

#: Unlearns ``splits.x_forget`` from a shadow model with a method's configuration: (model, splits, ctx) -> model.
UnlearnFn = Callable[[nn.Module, Splits, RunContext], nn.Module]


def ulira_fits(shadows: Shadows, scenario: Scenario, unlearn_fn: UnlearnFn, ctx: RunContext) -> ShadowFits:
    """U-LiRA's fits for one method (Hayes et al. 2024, "Inexact unlearning needs more careful evaluations"): each
    "in" shadow (a replicate of the poisoned model) unlearns the target's task exactly: all k poisons, from the same
    retain set (no test points), with the method's configuration and budget (``unlearn_fn``); the "out" shadows are
    the retrained reference's replicates, which never saw the poisons (what exact unlearning returns). Per poison,
    "trained on and unlearned" against "never seen". Cost: one run of the method per replicate pair."""
    xf, yf = scenario.forget
    xr, yr = scenario.retain
    splits = Splits(xf, yf, xr, yr)
    phis = []
    for i, model in enumerate(shadows.models):
        if i % 2 == 0:
            model = unlearn_fn(copy.deepcopy(model), splits, ctx.child(4000 + i))
        phis.append(logit_confidence(model, xf, yf, ctx.device))
    return ShadowFits(np.stack(phis))


def ulira(model: nn.Module, retrain: nn.Module, scenario: Scenario, fits: ShadowFits,
          device: torch.device) -> dict[str, float]:
    """U-LiRA on ``model`` (unlearned by the method whose shadows gave ``fits``): each poison's likelihood ratio
    "trained on and unlearned" against "never seen", calibrated on the left-out pair (`ShadowFits.detect`): AUC 0.5
    when the method's output cannot be told from retraining, poison by poison; TPR at 1% FPR, at 0.1% FPR (NaN
    below `MIN_NEGATIVES_AT_0_1` negatives). Beside them the null check: the retrained reference ``retrain`` scored
    the same way (``ulira_retrain_auc``, ``ulira_retrain_tpr_at_1fpr``: 0.5 and 1% when the null holds)."""
    xf, yf = scenario.forget
    null = fits.detect(logit_confidence(retrain, xf, yf, device), "ulira_retrain_")
    return {**fits.detect(logit_confidence(model, xf, yf, device), "ulira_"),
            "ulira_retrain_auc": null["ulira_retrain_auc"],
            "ulira_retrain_tpr_at_1fpr": null["ulira_retrain_tpr_at_1fpr"]}
