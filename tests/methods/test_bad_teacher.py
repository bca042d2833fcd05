"""Bad Teacher: frozen competent and random (incompetent) teachers, only the student optimised; KL towards the
random teacher on forget rows and the competent one on retain rows, on forget ∪ a 30% retain subset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearn_search.context import RunContext
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import bad_teacher as bt

PLENTY = Budget(1.0, retrain_cost=1e12)


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _kl(teacher: torch.Tensor, student: torch.Tensor) -> float:
    """KL(teacher ‖ student) at T = 1, mean over rows."""
    pt = F.softmax(teacher, dim=1)
    return float((pt * (pt.log() - F.log_softmax(student, dim=1))).sum(1).mean())


def test_teachers_are_frozen_and_only_the_student_is_optimised(tiny_model, tiny_splits, ctx):
    st = bt.BadTeacherState(tiny_model, METHODS.get("bad_teacher").config(lr=1e-2), ctx)
    student_ids = {id(p) for p in st.student.parameters()}
    opt_ids = {id(p) for g in st.opt.param_groups for p in g["params"]}
    assert opt_ids == student_ids
    for teacher in (st.competent, st.incompetent):
        assert not opt_ids & {id(p) for p in teacher.parameters()}
        assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    incompetent0 = {k: v.clone() for k, v in st.incompetent.state_dict().items()}
    x = torch.cat([tiny_splits.x_forget[:8], tiny_splits.x_retain[:8]])
    is_forget = torch.arange(16) < 8
    for _ in range(3):
        st.step(x, is_forget)
    assert _equal(st.competent, tiny_model)  # the competent teacher is the poisoned model, never moved
    assert all(torch.equal(v, incompetent0[k]) for k, v in st.incompetent.state_dict().items())
    assert not _equal(st.student, tiny_model)


def test_the_incompetent_teacher_is_a_seeded_random_model_of_the_same_architecture(tiny_model, ctx):
    a, b = bt.incompetent_teacher(tiny_model, ctx), bt.incompetent_teacher(tiny_model, ctx)
    other = bt.incompetent_teacher(tiny_model, RunContext(seed=1, device=ctx.device))
    assert _equal(a, b) and not _equal(a, other)
    sa, sm = a.state_dict(), tiny_model.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sm.items()}
    assert all(not torch.equal(sa[k], sm[k]) for k in sa)


def test_loss_is_kl_to_the_incompetent_teacher_on_forget_rows_and_the_competent_one_elsewhere():
    g = torch.Generator().manual_seed(0)
    s, comp, inc = (3 * torch.randn(6, 5, generator=g) for _ in range(3))
    is_forget = torch.tensor([True, False, True, False, False, True])
    for temp in (1.0, 2.0):
        teacher = torch.where(is_forget.view(-1, 1), inc, comp) / temp
        pt = F.softmax(teacher, dim=1)
        want = (pt * (pt.log() - F.log_softmax(s / temp, dim=1))).sum() / s.numel()  # F.kl_div's default mean
        got = bt.bad_teacher_loss(s, comp, inc, is_forget, temp)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(bt.bad_teacher_loss(comp, comp, inc, torch.zeros(6, dtype=torch.bool), 1.0)) == pytest.approx(
        0.0, abs=1e-6)


def test_the_student_moves_towards_the_random_teacher_on_forget_data(tiny_model, tiny_splits, ctx):
    m = METHODS.get("bad_teacher")
    res = m.run(tiny_model, tiny_splits, m.config(lr=1e-3, epochs=5), PLENTY, ctx)
    random_teacher = bt.incompetent_teacher(tiny_model, ctx)  # the run's: same seed
    xf, xr = tiny_splits.x_forget, tiny_splits.x_retain
    with torch.no_grad():
        t_f, t_r = random_teacher(xf), tiny_model.eval()(xr)
        before_f = _kl(t_f, tiny_model(xf))
        after_f, after_r = _kl(t_f, res.model(xf)), _kl(t_r, res.model(xr))
    assert after_f < 0.5 * before_f  # forget outputs pulled to the random teacher's
    assert after_r < 0.1 * before_f  # retain outputs stay near the poisoned model's


def test_compute_charges_two_teacher_forwards_on_forget_plus_a_30_percent_retain_subset(tiny_model, tiny_splits,
                                                                                         ctx):
    m = METHODS.get("bad_teacher")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=2), PLENTY, ctx)
    n_sub = int(0.3 * tiny_splits.n_retain)
    assert res.info["retain_subset"] == n_sub
    assert res.compute_used == pytest.approx(2 * (tiny_splits.n_forget + n_sub) * bt.STEP_COST)
    assert bt.STEP_COST == pytest.approx(1 + 2 / 3)  # noqa: SIM300
