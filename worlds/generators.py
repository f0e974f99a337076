"""The generative processes of SCIENCE.md §1, vectorised over sequences (numpy, float64).

A *process* `simulate(params, n, rng) -> (obs (n, T), latent (n, T))` draws n independent
sequences. A *world generator* (`Structured`, `TimeShuffled`, `PooledIID`, `IIDBernoulli`)
turns a process into a world's raw train and eval data from one integer seed.

Random streams: `np.random.SeedSequence(seed).spawn(4)` gives four independent streams,
always used the same way so that worlds of one family with the same seed share data:
  0  training sequences of the process    1  evaluation sequences of the process
  2  the null transform of the training   3  the null transform of the evaluation
     data (time permutation / resampling)    data
Hence E3_osc_null with seed s is exactly E3_osc_struct with seed s, each sequence permuted,
and a `*_null_iid` world resamples exactly the structured world's training observations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Params = Mapping[str, float | int]
Process = Callable[[Params, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RawWorld:
    """A world's raw arrays (float64). `norm_obs` are the observations normalisation statistics
    come from: the raw, unshuffled training observations of the structured process."""

    train_obs: np.ndarray  # (N_train, T)
    train_latent: np.ndarray | None  # (N_train, T)
    eval_obs: np.ndarray  # (N_eval, T)
    eval_latent: np.ndarray | None  # (N_eval, T)
    norm_obs: np.ndarray  # (N_train, T) or pooled (M,)


def streams(seed: int) -> list[np.random.Generator]:
    """The four independent generators of one seed (see module docstring)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


# ---------------------------------------------------------------------------- processes


def drift(p: Params, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E1: x[0] = x0, x[t+1] = x[t] + v + N(0, s_dyn²); y = x + N(0, s_obs²); latent x."""
    T = int(p["T"])
    steps = p["v"] + p["s_dyn"] * rng.standard_normal((n, T - 1))  # (n, T-1)
    x = np.empty((n, T))
    x[:, 0] = p["x0"]
    x[:, 1:] = p["x0"] + np.cumsum(steps, axis=1)
    y = x + p["s_obs"] * rng.standard_normal((n, T))
    return y, x


def sine(p: Params, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E1 decoy: latent = amp·sin(omega·t + φ), φ ~ U[0, 2π), integer t; y = latent + N(0, s_obs²)."""
    T = int(p["T"])
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, 1))  # (n, 1)
    latent = p["amp"] * np.sin(p["omega"] * np.arange(T) + phase)  # (n, T)
    y = latent + p["s_obs"] * rng.standard_normal((n, T))
    return y, latent


def regime(p: Params, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E2: binary state s whose stay probability depends on a regime r that flips at every
    t ≥ 1 with t mod period = 0; r[0], s[0] ~ U{0, 1}. obs s, latent r.

    Both chains are closed forms, so no time loop is needed: r[t] = r[0] xor parity of
    ⌊t/period⌋, and s[t] = s[0] xor parity of the number of flips up to t.
    """
    T, period = int(p["T"]), int(p["period"])
    r0 = rng.integers(0, 2, size=(n, 1))
    s0 = rng.integers(0, 2, size=(n, 1))
    u = rng.random((n, T - 1))  # u[:, t-1] decides the step t-1 -> t
    r = (r0 + (np.arange(T) // period)) % 2  # (n, T)
    stay = np.where(r[:, 1:] == 0, p["p_stay_0"], p["p_stay_1"])  # (n, T-1)
    flips = (u >= stay).astype(np.int64)
    s = np.concatenate([s0, (s0 + np.cumsum(flips, axis=1)) % 2], axis=1)  # (n, T)
    return s.astype(np.float64), r.astype(np.float64)


def hopf(p: Params, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E3: Hopf limit cycle by explicit Euler; record z[t], then step. y = x + N(0, s_obs²).

    The angular speed of the step t -> t+1 is omega0 + (omega1 - omega0)·t/(T-1): equal
    endpoints give the stationary world (`hopf_stationary` maps `omega` onto both).
    """
    T, dt = int(p["T"]), p["dt"]
    z = p["z0_std"] * rng.standard_normal((n, 2))  # (n, 2)
    x, y = z[:, 0].copy(), z[:, 1].copy()
    xs = np.empty((n, T))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging dt is reported by make()
        for t in range(T):
            xs[:, t] = x
            w = p["omega0"] + (p["omega1"] - p["omega0"]) * t / (T - 1)
            r2 = x * x + y * y
            x, y = x + dt * ((1.0 - r2) * x - w * y), y + dt * ((1.0 - r2) * y + w * x)
    obs = xs + p["s_obs"] * rng.standard_normal((n, T))
    return obs, xs


def hopf_stationary(p: Params, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E3 struct: constant angular speed `omega`."""
    return hopf({**p, "omega0": p["omega"], "omega1": p["omega"]}, n, rng)


# ---------------------------------------------------------------------- null transforms


def shuffle_time(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row independently permuted (argsort of iid uniform keys is a uniform permutation)."""
    order = np.argsort(rng.random(obs.shape), axis=1)  # (n, T)
    return np.take_along_axis(obs, order, axis=1)


def resample(pool: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """iid draws with replacement from the pooled values: the pooled empirical marginal."""
    return pool[rng.integers(0, pool.size, size=shape)]


# ----------------------------------------------------------------------- world generators


@dataclass(frozen=True)
class Structured:
    """The process itself: train from stream 0, eval from stream 1."""

    process: Process

    def __call__(self, p: Params, n_train: int, n_eval: int, seed: int) -> RawWorld:
        g = streams(seed)
        tr_obs, tr_lat = self.process(p, n_train, g[0])
        ev_obs, ev_lat = self.process(p, n_eval, g[1])
        return RawWorld(tr_obs, tr_lat, ev_obs, ev_lat, norm_obs=tr_obs)


@dataclass(frozen=True)
class TimeShuffled:
    """The structured data, each sequence independently permuted in time (reference null)."""

    process: Process

    def __call__(self, p: Params, n_train: int, n_eval: int, seed: int) -> RawWorld:
        g = streams(seed)
        tr_obs, _ = self.process(p, n_train, g[0])
        ev_obs, _ = self.process(p, n_eval, g[1])
        return RawWorld(
            shuffle_time(tr_obs, g[2]), None, shuffle_time(ev_obs, g[3]), None, norm_obs=tr_obs
        )


@dataclass(frozen=True)
class PooledIID:
    """Strict null: every observation (train and eval) an independent draw from the pooled
    training observations of the structured world with the same seed."""

    process: Process

    def __call__(self, p: Params, n_train: int, n_eval: int, seed: int) -> RawWorld:
        g = streams(seed)
        T = int(p["T"])
        pool = self.process(p, n_train, g[0])[0].ravel()  # (n_train * T,)
        return RawWorld(
            resample(pool, (n_train, T), g[2]),
            None,
            resample(pool, (n_eval, T), g[3]),
            None,
            norm_obs=pool,
        )


@dataclass(frozen=True)
class IIDBernoulli:
    """E2 null: s[t] iid Bernoulli(p_one)."""

    def __call__(self, p: Params, n_train: int, n_eval: int, seed: int) -> RawWorld:
        g = streams(seed)
        T = int(p["T"])
        tr = (g[0].random((n_train, T)) < p["p_one"]).astype(np.float64)
        ev = (g[1].random((n_eval, T)) < p["p_one"]).astype(np.float64)
        return RawWorld(tr, None, ev, None, norm_obs=tr)
