"""Small statistics helpers for honest comparisons.

Success rates from a few dozen sim episodes are noisy: 8/10 and 6/10 overlap widely.
Every success rate robotrain prints comes with a Wilson score interval, which (unlike the
normal approximation) stays inside [0, 1] and is sensible at 0/n and n/n.

Example:
    python -c "from robotrain.evaluation.statistics import wilson_interval; print(wilson_interval(8, 10))"
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054
"""Two-sided 95% normal quantile (the usual 1.96)."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `successes / n`.

    Returns (lo, hi) in [0, 1]. E.g. 8/10 -> (0.490, 0.943); 0/10 -> (0.0, 0.278).
    Raises ValueError for n < 1 or successes outside [0, n] (programming errors).
    """
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp the float noise at the edges (0/n must give exactly 0, n/n exactly 1).
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs of a paired comparison.

    When two policies run on the same episode seeds, only the episodes where exactly one
    of them succeeds carry information about which is better; under "no difference" each
    such episode is a fair coin. Returns the two-sided binomial p-value (1.0 when there
    are no discordant pairs).
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)
