"""The registry of worlds: id -> frozen WorldSpec (Gymnasium-registration style).

Parameters per family (every one overridable by name in `worlds.make`):

E1_drift_struct / E1_drift_null / E1_drift_null_iid
    T = 64        sequence length
    x0 = 0.0      initial latent position
    v = 0.03      drift per step
    s_dyn = 0.005 std of the latent step noise
    s_obs = 0.02  std of the observation noise
E1_drift_decoy_sine
    T = 64, amp = 1.0 (sine amplitude), omega = 0.1 (rad per step), s_obs = 0.02
E2_regime_struct / E2_regime_null_iid
    T = 128, period = 32 (the regime flips at t ≥ 1 with t mod period = 0),
    p_stay_0 = 0.9, p_stay_1 = 0.6 (P(s[t] = s[t-1]) in regime 0 / 1)
E2_regime_null
    T = 128, p_one = 0.5 (s[t] iid Bernoulli(p_one))
E3_osc_struct / E3_osc_null / E3_osc_null_iid
    T = 256, dt = 0.05 (Euler step), omega = 1.0 (angular speed), z0_std = 0.1 (std of each
    initial coordinate), s_obs = 0.05 (observation noise std)
E3_osc_nonstat
    as E3_osc_struct with omega replaced by omega0 = 0.8 and omega1 = 1.2: the step
    t -> t+1 uses omega0 + (omega1 - omega0)·t/(T-1)

Each world's parameters are exactly those its generator uses (a null derived from its
structured twin takes the twin's parameters); any other name is an UnknownParameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from worlds import generators as gen
from worlds.errors import SpecError, UnknownWorld
from worlds.params import Param, noise_std, probability, resolve_params, seq_len

ROLES = ("structured", "null", "null_iid", "decoy")
FAMILIES = ("E1_drift", "E2_regime", "E3_osc")
FEATURES = ("offset", "raw", "zscore")  # y[t] - y[0] | y | (y - mu) / (sigma + 1e-6)

Generator = Callable[[Mapping[str, Any], int, int, int], gen.RawWorld]


@dataclass(frozen=True)
class WorldSpec:
    id: str
    role: str
    family: str
    params: tuple[Param, ...]
    generate: Generator  # (params, n_train, n_eval, seed) -> RawWorld
    feature: str  # how the model's observation feature is built from the raw obs, see FEATURES
    binary: bool = False  # observations are 0/1
    description: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SpecError("role", f"unknown role {self.role!r}; valid: {list(ROLES)}")
        if self.family not in FAMILIES:
            raise SpecError("family", f"unknown family {self.family!r}; valid: {list(FAMILIES)}")
        if self.feature not in FEATURES:
            raise SpecError("feature", f"unknown feature {self.feature!r}; valid: {list(FEATURES)}")

    @property
    def defaults(self) -> Mapping[str, float | int]:
        return MappingProxyType({p.name: p.default for p in self.params})

    @property
    def has_latent(self) -> bool:
        return self.role in ("structured", "decoy")

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, float | int]:
        """Fully resolved, validated parameters (UnknownParameter / SpecError name the field)."""
        return resolve_params(self.id, self.params, overrides)


WORLDS: dict[str, WorldSpec] = {}


def register(world: WorldSpec) -> WorldSpec:
    if world.id in WORLDS:
        raise SpecError("world", f"world {world.id!r} is already registered")
    WORLDS[world.id] = world
    return world


def world_ids() -> list[str]:
    return list(WORLDS)


def spec(world_id: str) -> WorldSpec:
    try:
        return WORLDS[world_id]
    except (KeyError, TypeError):
        raise UnknownWorld("world", f"unknown world {world_id!r}; valid: {world_ids()}") from None


def resolve(world_id: str, overrides: Mapping[str, Any] | None = None) -> dict[str, float | int]:
    """Validate a world id and its overrides without generating data (for checks at the door):
    the fully resolved parameters, or UnknownWorld / UnknownParameter / SpecError."""
    return spec(world_id).resolve(overrides or {})


# ------------------------------------------------------------------------- the worlds

E1_PARAMS = (
    seq_len(64),
    Param("x0", 0.0, "initial latent position"),
    Param("v", 0.03, "drift per step"),
    noise_std("s_dyn", 0.005, "std of the latent step noise"),
    noise_std("s_obs", 0.02, "std of the observation noise"),
)
SINE_PARAMS = (
    seq_len(64),
    Param("amp", 1.0, "sine amplitude"),
    Param("omega", 0.1, "angular frequency, radians per step"),
    noise_std("s_obs", 0.02, "std of the observation noise"),
)
E2_PARAMS = (
    seq_len(128),
    Param("period", 32, "the regime flips at every t >= 1 with t mod period = 0", integer=True, low=1),
    probability("p_stay_0", 0.9, "P(s[t] = s[t-1]) in regime 0"),
    probability("p_stay_1", 0.6, "P(s[t] = s[t-1]) in regime 1"),
)
E2_NULL_PARAMS = (seq_len(128), probability("p_one", 0.5, "P(s[t] = 1), iid"))
_E3_COMMON = (
    Param("dt", 0.05, "explicit Euler step", low=0.0, low_open=True),
    noise_std("z0_std", 0.1, "std of each coordinate of the initial state"),
    noise_std("s_obs", 0.05, "std of the observation noise"),
)
E3_PARAMS = (seq_len(256), Param("omega", 1.0, "angular speed"), *_E3_COMMON)
E3_NONSTAT_PARAMS = (
    seq_len(256),
    Param("omega0", 0.8, "angular speed of the first step"),
    Param("omega1", 1.2, "angular speed reached at t = T-1 (linear in t)"),
    *_E3_COMMON,
)

for _w in (
    WorldSpec("E1_drift_struct", "structured", "E1_drift", E1_PARAMS, gen.Structured(gen.drift), "offset",
              description="noisy linear drift; input y[t] - y[0], latent x[t]"),
    WorldSpec("E1_drift_null", "null", "E1_drift", E1_PARAMS, gen.TimeShuffled(gen.drift), "offset",
              description="E1 data, each sequence permuted in time"),
    WorldSpec("E1_drift_null_iid", "null_iid", "E1_drift", E1_PARAMS, gen.PooledIID(gen.drift), "offset",
              description="iid draws from the pooled E1 training observations"),
    WorldSpec("E1_drift_decoy_sine", "decoy", "E1_drift", SINE_PARAMS, gen.Structured(gen.sine), "offset",
              description="noisy sine with random phase; latent the sine"),
    WorldSpec("E2_regime_struct", "structured", "E2_regime", E2_PARAMS, gen.Structured(gen.regime), "raw",
              binary=True, description="binary chain whose stickiness switches regime every `period` steps; latent r[t]"),
    WorldSpec("E2_regime_null", "null", "E2_regime", E2_NULL_PARAMS, gen.IIDBernoulli(), "raw",
              binary=True, description="s[t] iid Bernoulli(p_one)"),
    WorldSpec("E2_regime_null_iid", "null_iid", "E2_regime", E2_PARAMS, gen.PooledIID(gen.regime), "raw",
              binary=True, description="iid draws from the pooled E2 training observations"),
    WorldSpec("E3_osc_struct", "structured", "E3_osc", E3_PARAMS, gen.Structured(gen.hopf_stationary), "zscore",
              description="Hopf limit cycle (Euler), observed x + noise; latent x[t]"),
    WorldSpec("E3_osc_null", "null", "E3_osc", E3_PARAMS, gen.TimeShuffled(gen.hopf_stationary), "zscore",
              description="E3 data, each sequence permuted in time; mu, sigma from the unshuffled data"),
    WorldSpec("E3_osc_null_iid", "null_iid", "E3_osc", E3_PARAMS, gen.PooledIID(gen.hopf_stationary), "zscore",
              description="iid draws from the pooled E3 training observations"),
    WorldSpec("E3_osc_nonstat", "structured", "E3_osc", E3_NONSTAT_PARAMS, gen.Structured(gen.hopf), "zscore",
              description="Hopf oscillator whose angular speed ramps from omega0 to omega1"),
):
    register(_w)
