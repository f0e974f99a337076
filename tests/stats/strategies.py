"""Hypothesis strategies for samples with ties, zeros, constants and n = 1."""

from __future__ import annotations

from hypothesis import strategies as st

# Multiples of 1/4 in [-2, 2]: every sum of up to ~50 of them is exact in float64, so
# ties are exact ties for both our code and scipy and the p-values must agree bit for bit.
dyadic = st.integers(-8, 8).map(lambda k: k / 4)


def dyadic_samples(min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[list[float]]:
    constant = st.tuples(dyadic, st.integers(min_size, max_size)).map(lambda t: [t[0]] * t[1])
    return st.one_of(st.lists(dyadic, min_size=min_size, max_size=max_size), constant)


def float_samples(min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[list[float]]:
    return st.lists(
        st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False),
        min_size=min_size,
        max_size=max_size,
    )
