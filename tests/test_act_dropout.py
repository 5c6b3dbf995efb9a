"""MaskDropout: nn.Dropout's distribution with a mask that is cheaper to draw on a CPU."""

from __future__ import annotations

import pytest
import torch

from robotrain.policies.act.dropout import LEVELS, MaskDropout


def test_drops_p_of_the_elements_and_keeps_the_expectation():
    drop = MaskDropout(0.1).train()
    torch.manual_seed(0)
    y = drop(torch.ones(1000, 1000))
    dropped = (y == 0).float().mean().item()
    # 1e6 draws: the binomial standard deviation of the fraction is 3e-4.
    assert dropped == pytest.approx(0.1, abs=1.5e-3)
    assert drop.effective_p == 6554 / LEVELS
    values = y.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - 6554 / LEVELS))]
    assert y.mean().item() == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize("numel", [1, 2, 3, 4, 5, 7, 12, 13])
def test_every_position_can_drop_whatever_the_size(numel):
    """Each int64 draw feeds three elements: sizes that are not multiples of 3 (or 4)
    must still give every position an independent chance to drop (none stuck at kept)."""
    drop = MaskDropout(0.5).train()
    torch.manual_seed(1)
    hits = sum((drop(torch.ones(numel)) == 0).float() for _ in range(400))
    assert ((hits > 120) & (hits < 280)).all(), hits


def test_gradient_is_the_mask_times_the_scale():
    drop = MaskDropout(0.25).train()
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    y.sum().backward()
    scale = 1 / (1 - drop.effective_p)
    kept = y != 0
    torch.testing.assert_close(x.grad, kept.float() * scale)
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale)


def test_seeded_masks_repeat_and_eval_is_identity():
    drop = MaskDropout(0.3).train()
    x = torch.randn(5, 17)
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    assert torch.equal(a, drop(x))
    assert drop.eval()(x) is x
    assert MaskDropout(0.0).train()(x) is x


def test_bf16_input_keeps_its_dtype():
    y = MaskDropout(0.1).train()(torch.ones(100, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_rejects_probabilities_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability"):
        MaskDropout(p)
