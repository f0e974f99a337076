"""stats.lyapunov against systems with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stats.lyapunov import (
    SpectrumSummary,
    kaplan_yorke_dimension,
    lyapunov_label,
    lyapunov_spectrum,
    summarise_spectrum,
)
from worlds.errors import SpecError


def constant(m: np.ndarray, steps: int) -> np.ndarray:
    return np.broadcast_to(m, (steps, *m.shape)).copy()


def test_constant_linear_map_with_complex_pair() -> None:
    # a rotation-scaling block (eigenvalues 0.9·e^{±0.7i}) plus a real eigenvalue, conjugated
    # by a random basis change so the matrix is neither normal nor triangular
    rng = np.random.default_rng(3)
    theta, rho = 0.7, 0.9
    block = np.zeros((4, 4))
    block[:2, :2] = rho * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    block[2, 2] = -1.5
    block[3, 3] = 0.2
    p = rng.normal(size=(4, 4))
    m = p @ block @ np.linalg.inv(p)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(m))))[::-1]
    np.testing.assert_allclose(expected, [math.log(1.5), math.log(0.9), math.log(0.9), math.log(0.2)])
    got = lyapunov_spectrum(constant(m, 3000))
    # finite-time error of a non-normal map is O(log(cond P) / T)
    np.testing.assert_allclose(got, expected, atol=5e-3)


def test_diagonal_map_is_exact() -> None:
    d = np.array([0.5, 2.0, -3.0, 1.0])
    got = lyapunov_spectrum(constant(np.diag(d), 7))
    np.testing.assert_allclose(got, np.sort(np.log(np.abs(d)))[::-1], atol=1e-12)


def test_time_varying_diagonal_is_mean_log() -> None:
    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 3.0, size=(50, 3)) * rng.choice([-1, 1], size=(50, 3))
    jac = np.zeros((50, 3, 3))
    jac[:, range(3), range(3)] = d
    np.testing.assert_allclose(lyapunov_spectrum(jac), np.sort(np.log(np.abs(d)).mean(0))[::-1], atol=1e-12)


def henon_jacobians(n_orbits: int, steps: int, seed: int = 0) -> np.ndarray:
    a, b = 1.4, 0.3
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-0.1, 0.1, n_orbits), np.zeros(n_orbits)
    for _ in range(1000):  # onto the attractor
        x, y = 1 - a * x * x + y, b * x
    jac = np.zeros((n_orbits, steps, 2, 2))
    for t in range(steps):
        jac[:, t, 0, 0] = -2 * a * x
        jac[:, t, 0, 1] = 1.0
        jac[:, t, 1, 0] = b
        x, y = 1 - a * x * x + y, b * x
    return jac


def test_henon_map() -> None:
    spectra = lyapunov_spectrum(henon_jacobians(8, 20000))  # (8, 2), one spectrum per orbit
    lam = spectra.mean(axis=0)
    # literature: 0.4192, -1.6232 (sum = log b exactly, det J = -b at every step)
    assert round(lam[0], 2) == 0.42
    assert round(lam[1], 2) == -1.62
    np.testing.assert_allclose(spectra.sum(-1), math.log(0.3), atol=1e-12)


def test_batch_dims_match_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(2, 3, 40, 4, 4))
    got = lyapunov_spectrum(jac)
    assert got.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(got[i, j], lyapunov_spectrum(jac[i, j]), atol=1e-12)
    assert np.all(np.diff(got, axis=-1) <= 0)


def test_non_finite_member_gets_nan_others_untouched() -> None:
    jac = np.stack([constant(np.diag([2.0, 0.5]), 5)] * 2)
    jac[1, 3, 0, 0] = np.nan
    got = lyapunov_spectrum(jac)
    np.testing.assert_allclose(got[0], [math.log(2), math.log(0.5)])
    assert np.isnan(got[1]).all()


def test_singular_direction_is_minus_inf() -> None:
    got = lyapunov_spectrum(constant(np.diag([2.0, 0.0]), 4))
    assert got[0] == pytest.approx(math.log(2)) and got[1] == -np.inf


@pytest.mark.parametrize(
    ("spectrum", "expected"),
    [
        ([-0.1, -0.5], 0.0),  # λ1 < 0
        ([0.2, 0.1, 0.0], 3.0),  # total >= 0
        ([0.5, -1.0], 1.5),  # j = 1, 1 + 0.5/1
        ([0.4, 0.1, -1.0, -2.0], 2.5),  # j = 2, S2 = 0.5, 2 + 0.5/1
        ([0.42, -1.62], 1 + 0.42 / 1.62),  # Hénon: ≈ 1.26
        ([-1.0, 0.5], 1.5),  # unsorted input is sorted first
        ([0.3, -0.3, -1.0], 2.0),  # S2 = 0 counts as >= 0
        ([0.0], 1.0),
    ],
)
def test_kaplan_yorke_by_hand(spectrum: list[float], expected: float) -> None:
    assert kaplan_yorke_dimension(spectrum) == pytest.approx(expected)


def test_kaplan_yorke_vectorised_and_nan() -> None:
    got = kaplan_yorke_dimension(np.array([[0.5, -1.0], [-0.1, -0.5], [np.nan, 0.0]]))
    np.testing.assert_allclose(got, [1.5, 0.0, np.nan])
    assert kaplan_yorke_dimension([0.5, -np.inf]) == 1.0


@pytest.mark.parametrize(
    ("lam1", "rest", "label"),
    [
        (0.5, [-1.0], "chaotic"),
        (-0.5, [-1.0], "sink"),
        (0.05, [-0.1, -0.2], "marginal"),
        (0.05, [-0.5, -0.4], "selective contraction"),
        (-0.09, [-1.0], "selective contraction"),
        (0.1, [-0.1], "marginal"),  # the band is closed
        (-0.1, [], "marginal"),  # N = 1: no rest to contract
        (0.2, [-5.0], "chaotic"),  # selective contraction only refines marginal
        (float("nan"), [-1.0], ""),
    ],
)
def test_labels(lam1: float, rest: list[float], label: str) -> None:
    assert lyapunov_label(lam1, rest) == label


def test_summary() -> None:
    s = summarise_spectrum([-1.0, 0.02, -0.5])
    assert isinstance(s, SpectrumSummary)
    assert s.spectrum == (0.02, -0.5, -1.0)
    assert s.lambda1 == 0.02 and s.gap == pytest.approx(0.52) and s.sum == pytest.approx(-1.48)
    assert s.ky_dim == pytest.approx(1 + 0.02 / 0.5)
    assert s.label == "selective contraction"
    one = summarise_spectrum([0.3])
    assert math.isnan(one.gap) and one.label == "chaotic" and one.ky_dim == 1.0
    bad = summarise_spectrum([np.nan, 0.0])
    assert math.isnan(bad.lambda1) and bad.label == ""


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: lyapunov_spectrum(np.zeros((3, 3))), "jacobians"),
        (lambda: lyapunov_spectrum(np.zeros((5, 3, 2))), "jacobians"),
        (lambda: lyapunov_spectrum(np.zeros((0, 2, 2))), "jacobians"),
        (lambda: lyapunov_spectrum([["a"]]), "jacobians"),
        (lambda: kaplan_yorke_dimension(np.zeros(0)), "spectrum"),
        (lambda: kaplan_yorke_dimension(5.0), "spectrum"),
        (lambda: summarise_spectrum(np.zeros((2, 2))), "spectrum"),
        (lambda: lyapunov_label("x", []), "lambda1"),
        (lambda: lyapunov_label(0.0, ["x"]), "rest"),
    ],
)
def test_validation_names_the_argument(call, field: str) -> None:
    with pytest.raises(SpecError) as e:
        call()
    assert e.value.field == field
    assert f"`{field}`" in str(e.value)
