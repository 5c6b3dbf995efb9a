from __future__ import annotations

import pytest

from robotrain.evaluation.statistics import wilson_interval


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (8, 10, 0.490, 0.943),
        (5, 10, 0.237, 0.763),
        (0, 10, 0.0, 0.278),
        (10, 10, 0.722, 1.0),
        (1, 1, 0.207, 1.0),
        (45, 50, 0.786, 0.957),
    ],
)
def test_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-3)


def test_edges_are_exact_and_inside_unit_interval() -> None:
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    for k in range(0, 21):
        lo, hi = wilson_interval(k, 20)
        assert 0.0 <= lo <= k / 20 <= hi <= 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_mcnemar_exact() -> None:
    from robotrain.evaluation.statistics import mcnemar_exact_p

    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    # 8 discordant pairs all one way: 2 * (1/2)^8
    assert mcnemar_exact_p(8, 0) == pytest.approx(2 / 256)
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)
