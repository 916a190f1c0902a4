import math

import pytest
import torch

from bench.losses.log_barrier import LogBarrierSchedule, log_barrier, size_constraint


@pytest.mark.parametrize("t", [1.0, 2.5, 10.0])
def test_matches_closed_form_on_both_branches(t):
    z = torch.tensor([-50.0, -3.0, -1.0 / t**2 - 1e-3, -1.0 / t**2 + 1e-3, 0.0, 2.0], dtype=torch.float64)
    expected = [(-math.log(-v) / t) if v <= -1 / t**2 else (t * v - math.log(1 / t**2) / t + 1 / t) for v in z.tolist()]
    torch.testing.assert_close(log_barrier(z, t), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("t", [1.0, 3.0, 10.0])
def test_continuous_with_continuous_slope_at_junction(t):
    j = -1.0 / t**2
    eps = 1e-7
    z = torch.tensor([j - eps, j + eps], dtype=torch.float64, requires_grad=True)
    values = log_barrier(z, t)
    assert abs(values[0].item() - values[1].item()) < 1e-5
    (grad,) = torch.autograd.grad(values.sum(), z)
    torch.testing.assert_close(grad, torch.full_like(grad, t), rtol=1e-5, atol=1e-5)


def test_no_nan_gradient_for_infeasible_z():
    z = torch.tensor([0.0, 5.0], dtype=torch.float64, requires_grad=True)
    log_barrier(z, 2.0).sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, torch.full_like(z.grad, 2.0))


def test_schedule_grows_and_caps():
    s = LogBarrierSchedule()
    assert s.t_at(0) == 1.0
    assert s.t_at(1) == pytest.approx(1.01)
    assert s.t_at(10_000) == 10.0


def test_size_constraint_pushes_empty_region_up_and_respects_mask():
    probs = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    probs[:, 0] = 0.99  # foreground almost empty
    probs[:, 1] = 0.01
    probs.requires_grad_(True)
    size_constraint(probs, t=1.0).backward()
    assert (probs.grad[:, 1] < probs.grad[:, 0]).all()  # descending the loss grows the foreground more
    none = size_constraint(probs, t=1.0, mask=torch.tensor([False, False]))
    assert none.item() == 0.0
    with pytest.raises(ValueError, match=r"\[B,2,H,W\]"):
        size_constraint(torch.zeros(1, 3, 4, 4), t=1.0)
