"""MLPerf LoadGen's early-stopping bound against examples derived by hand (see the module docstring)."""

from __future__ import annotations

import math

import pytest

from harness.comply.early_stopping import binomial_cdf, early_stopping_passes, min_passing_queries, odds


def test_no_overlatency_query_needs_ln_bound():
    # t = 0: odds(h, 0) = 0.99^h < 0.01  <=>  h > ln(0.01) / ln(0.99) = 458.2  ->  459 queries
    assert math.log(0.01) / math.log(0.99) == pytest.approx(458.21, abs=0.01)
    assert min_passing_queries(0) == 459
    assert odds(459, 0) < 0.01 <= odds(458, 0)
    # p90 at 99 %: 0.9^h < 0.01  <=>  h > 43.7  ->  44
    assert min_passing_queries(0, p=0.90) == 44


def test_one_overlatency_query_by_hand():
    # t = 1: odds(h, 1) = P[Bin(h+1, 0.01) <= 1] = 0.99^(h+1) + (h+1) 0.01 0.99^h = 0.99^h (0.99 + 0.01 (h+1))
    def by_hand(h: int) -> float:
        return 0.99 ** h * (0.99 + 0.01 * (h + 1))

    assert by_hand(660) > 0.01 > by_hand(661)  # 0.0100008 and 0.0099137: h(1) = 661, so 662 queries
    assert odds(661, 1) == pytest.approx(by_hand(661), rel=1e-9)
    assert min_passing_queries(1) == 662
    # p90: 0.9^h (0.9 + 0.1 (h+1)) < 0.01 first at h = 63 -> 64 queries (LoadGen's p90 floor)
    assert 0.9 ** 62 * (0.9 + 0.1 * 63) > 0.01 > 0.9 ** 63 * (0.9 + 0.1 * 64)
    assert min_passing_queries(1, p=0.90) == 64


def test_binomial_cdf_matches_a_direct_sum():
    n, q = 40, 0.07
    direct = sum(math.comb(n, x) * q ** x * (1 - q) ** (n - x) for x in range(4))
    assert binomial_cdf(3, n, q) == pytest.approx(direct, rel=1e-12)
    assert binomial_cdf(-1, n, q) == 0.0 and binomial_cdf(n, n, q) == 1.0


def test_passes_is_monotone_in_queries_and_in_over_limit():
    needed = [min_passing_queries(t) for t in range(6)]
    assert needed == sorted(needed) and len(set(needed)) == 6
    assert early_stopping_passes(needed[2], 2) == (True, needed[2])
    assert early_stopping_passes(needed[2] - 1, 2) == (False, needed[2])


@pytest.mark.parametrize("t,p,c", [(-1, 0.99, 0.99), (0, 1.0, 0.99), (0, 0.99, 1.0)])
def test_bad_parameters(t, p, c):
    with pytest.raises(ValueError):
        min_passing_queries(t, p, c)
