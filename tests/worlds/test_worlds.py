"""Contract and science tests of `worlds`: one contract test over every registered id
(Gymnasium's test_envs pattern), then the statistical properties SCIENCE.md §1 promises,
each checked against an oracle (an independent loop, exact membership, scipy's KS test)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

import worlds
from worlds import generators as gen
from worlds.errors import SpecError, UnknownParameter, UnknownWorld

N_TRAIN, N_EVAL = 64, 32
EXPECTED_IDS = {
    "E1_drift_struct": ("structured", "E1_drift"),
    "E1_drift_null": ("null", "E1_drift"),
    "E1_drift_null_iid": ("null_iid", "E1_drift"),
    "E1_drift_decoy_sine": ("decoy", "E1_drift"),
    "E2_regime_struct": ("structured", "E2_regime"),
    "E2_regime_null": ("null", "E2_regime"),
    "E2_regime_null_iid": ("null_iid", "E2_regime"),
    "E3_osc_struct": ("structured", "E3_osc"),
    "E3_osc_null": ("null", "E3_osc"),
    "E3_osc_null_iid": ("null_iid", "E3_osc"),
    "E3_osc_nonstat": ("structured", "E3_osc"),
}
ALL_IDS = worlds.world_ids()


@functools.cache
def made(world_id: str, seed: int = 0, **overrides) -> worlds.WorldData:
    """Cached: tests only read the tensors."""
    return worlds.make(world_id, seed=seed, n_train=N_TRAIN, n_eval=N_EVAL, **overrides)


def np_obs(world_id: str, split: str = "train", **kw) -> np.ndarray:
    return getattr(made(world_id, **kw), split).obs.numpy().astype(np.float64)


def lag1_autocorr(x: np.ndarray) -> float:
    """Mean over sequences of the within-sequence lag-1 autocorrelation (sequence mean removed)."""
    a = x - x.mean(axis=1, keepdims=True)
    return float(np.mean((a[:, 1:] * a[:, :-1]).sum(1) / (a * a).sum(1)))


def seq_mean_ratio(x: np.ndarray) -> float:
    """var(per-sequence means) / (pooled var / T): about 1 when every value is iid."""
    return float(x.mean(axis=1).var() / (x.var() / x.shape[1]))


# ---------------------------------------------------------------------- registry contract


def test_registry_has_every_world_with_its_role_and_family():
    assert set(ALL_IDS) == set(EXPECTED_IDS)
    for wid, (role, family) in EXPECTED_IDS.items():
        s = worlds.spec(wid)
        assert (s.id, s.role, s.family) == (wid, role, family)
        assert worlds.WORLDS[wid] is s
    with pytest.raises(SpecError, match="already registered"):
        worlds.register(worlds.spec("E3_osc_struct"))


@pytest.mark.parametrize("world_id", ALL_IDS)
def test_world_contract(world_id):
    s = worlds.spec(world_id)
    d = made(world_id)
    T = s.defaults["T"]
    m = d.meta
    assert (m.world_id, m.role, m.family, m.seq_len) == (world_id, s.role, s.family, T)
    assert m.params == dict(s.defaults) and (m.seed, m.n_train, m.n_eval) == (0, N_TRAIN, N_EVAL)
    assert m.binary == (s.family == "E2_regime")
    assert set(m.norm) == ({"mu", "sigma"} if s.family == "E3_osc" else set())

    for split, n in ((d.train, N_TRAIN), (d.eval, N_EVAL)):
        assert split.inputs.shape == (n, T, 2) and split.obs.shape == (n, T) and len(split) == n
        assert split.inputs.dtype == split.obs.dtype == torch.float32
        assert torch.isfinite(split.inputs).all() and torch.isfinite(split.obs).all()
        if s.role in ("null", "null_iid"):
            assert split.latent is None
        else:
            assert split.latent.shape == (n, T) and split.latent.dtype == torch.float32
            assert torch.isfinite(split.latent).all()
        # channel 1 is the full_time channel
        assert torch.equal(split.inputs[..., 1], torch.from_numpy(worlds.time_values(T)).expand(n, T))
        # channel 0 is the model's observation feature built from the raw observations
        obs = split.obs.double()
        if s.family == "E1_drift":
            feat = obs - obs[:, :1]
        elif s.family == "E2_regime":
            feat = obs
            assert set(obs.unique().tolist()) <= {0.0, 1.0}
        else:
            feat = (obs - m.norm["mu"]) / (m.norm["sigma"] + 1e-6)
        torch.testing.assert_close(split.inputs[..., 0].double(), feat, atol=1e-5, rtol=1e-5)

    # same seed -> same bits (fresh, uncached generation); another seed -> other data
    again = worlds.make(world_id, seed=0, n_train=N_TRAIN, n_eval=N_EVAL)
    for a, b in ((d.train, again.train), (d.eval, again.eval)):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.obs, b.obs)
        assert (a.latent is None and b.latent is None) or torch.equal(a.latent, b.latent)
    assert again.meta == d.meta
    other = made(world_id, seed=1)
    assert not torch.equal(other.train.obs, d.train.obs)
    assert not torch.equal(other.eval.obs, d.eval.obs)
    # train and eval are independent streams of the seed, not the same sequences
    assert not torch.equal(d.train.obs[:N_EVAL], d.eval.obs)


def test_split_to_device_keeps_values():
    d = made("E3_osc_struct")
    moved = d.train.to("cpu")
    assert torch.equal(moved.inputs, d.train.inputs) and torch.equal(moved.latent, d.train.latent)
    assert made("E3_osc_null").train.to("cpu").latent is None


# ---------------------------------------------------------------------- time conditioning


@pytest.mark.parametrize("mode", worlds.TIME_CONDS)
@pytest.mark.parametrize("world_id", ALL_IDS)
def test_time_conditioning(world_id, mode):
    inputs = made(world_id).train.inputs
    before = inputs.clone()
    g = torch.Generator().manual_seed(7)
    out = worlds.apply_time_cond(inputs, mode, g)
    assert torch.equal(inputs, before), "apply_time_cond must not modify its input"
    assert out.shape == inputs.shape and out.dtype == inputs.dtype
    assert torch.equal(out[..., 0], inputs[..., 0])
    n, T, _ = inputs.shape
    full = torch.from_numpy(worlds.time_values(T))
    ch = out[..., 1]
    if mode == "full_time":
        assert torch.equal(ch, full.expand(n, T))
    elif mode == "no_time":
        assert torch.equal(ch, torch.zeros(n, T))
    elif mode == "constant_time":
        assert torch.equal(ch, torch.full((n, T), 0.5))
    else:
        # a permutation of the t/(T-1) values in every sequence, different across sequences
        assert torch.equal(ch.sort(dim=-1).values, full.expand(n, T))
        assert not torch.equal(ch[0], full) and not torch.equal(ch[0], ch[1])
        # fresh per call, reproducible per generator seed
        assert not torch.equal(worlds.apply_time_cond(inputs, mode, g)[..., 1], ch)
        again = worlds.apply_time_cond(inputs, mode, torch.Generator().manual_seed(7))
        assert torch.equal(again, out)


def test_random_time_on_batched_inputs_and_errors():
    x = made("E1_drift_struct").train.inputs[:8].expand(3, 8, 64, 2)  # (K, N, T, 2)
    out = worlds.apply_time_cond(x, "random_time", torch.Generator().manual_seed(0))
    assert out.shape == (3, 8, 64, 2)
    assert torch.equal(out[..., 1].sort(-1).values, torch.from_numpy(worlds.time_values(64)).expand(3, 8, 64))
    assert not torch.equal(out[0, :, :, 1], out[1, :, :, 1])  # independent per member too
    with pytest.raises(SpecError) as e:
        worlds.apply_time_cond(x, "sometimes_time")
    assert e.value.field == "time_cond" and "full_time" in str(e.value)
    with pytest.raises(SpecError) as e:
        worlds.apply_time_cond(x, "random_time")
    assert e.value.field == "generator"
    with pytest.raises(SpecError) as e:
        worlds.apply_time_cond(torch.zeros(4, 10, 3), "no_time")
    assert e.value.field == "inputs"


# ------------------------------------------------------------- temporal structure of nulls


@pytest.mark.parametrize(
    "family, struct, threshold",
    [("E1_drift", "E1_drift_struct", 0.9), ("E2_regime", "E2_regime_struct", 0.3),
     ("E3_osc", "E3_osc_struct", 0.9), ("E3_osc", "E3_osc_nonstat", 0.9),
     ("E1_drift", "E1_drift_decoy_sine", 0.9)],
)
def test_structured_worlds_are_autocorrelated_and_nulls_are_not(family, struct, threshold):
    assert lag1_autocorr(np_obs(struct)) > threshold
    for null in (f"{family}_null", f"{family}_null_iid"):
        for split in ("train", "eval"):
            assert abs(lag1_autocorr(np_obs(null, split))) < 0.05, (null, split)


def test_e1_drift_moves_by_v_per_step_and_its_nulls_do_not():
    v = worlds.spec("E1_drift_struct").defaults["v"]
    inc = np.diff(np_obs("E1_drift_struct"), axis=1).mean()
    assert abs(inc - v) < 0.002
    for null in ("E1_drift_null", "E1_drift_null_iid"):
        assert abs(np.diff(np_obs(null), axis=1).mean()) < 0.01
    latent = made("E1_drift_struct").train.latent.numpy()
    assert np.all(latent[:, 0] == 0.0)
    assert abs(latent[:, -1].mean() - 63 * v) < 0.01


def test_time_shuffled_nulls_permute_the_structured_sequences():
    """Same seed: each null sequence is a permutation of the structured one (oracle: sorting)."""
    for family in ("E1_drift", "E3_osc"):
        for split in ("train", "eval"):
            s, n = np_obs(f"{family}_struct", split), np_obs(f"{family}_null", split)
            assert np.array_equal(np.sort(s, axis=1), np.sort(n, axis=1))
            assert not np.array_equal(s, n)
    # E1 null input is y_shuf[t] - y_shuf[0]
    d = made("E1_drift_null").train
    torch.testing.assert_close(d.inputs[..., 0], d.obs - d.obs[:, :1])


# ----------------------------------------------------------------------- E3 normalisation


def test_e3_zscore_uses_training_statistics():
    for wid in ("E3_osc_struct", "E3_osc_nonstat", "E3_osc_null"):
        x = made(wid).train.inputs[..., 0].double()
        assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4, wid
    # the iid twin resamples the pool it is normalised by: moments within sampling error
    x = made("E3_osc_null_iid").train.inputs[..., 0].double()
    tol = 4 / math.sqrt(x.numel())
    assert abs(x.mean().item()) < tol and abs(x.std(unbiased=False).item() - 1) < 2 * tol
    struct = made("E3_osc_struct")
    raw = struct.train.obs.double()
    assert math.isclose(struct.meta.norm["mu"], raw.mean().item(), rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(struct.meta.norm["sigma"], raw.std(unbiased=False).item(), rel_tol=1e-5)
    # eval uses the TRAIN statistics, so its own moments are not exactly 0 / 1
    assert abs(struct.eval.inputs[..., 0].double().mean().item()) > 1e-4
    # nulls are normalised with the statistics of the unshuffled structured training data
    assert made("E3_osc_null").meta.norm == struct.meta.norm
    assert made("E3_osc_null_iid").meta.norm == struct.meta.norm


# ----------------------------------------------------------------------------- E2 regimes


@pytest.mark.parametrize("period, p0, p1", [(32, 0.9, 0.6), (10, 0.75, 0.3)])
def test_e2_regime_flips_at_period_and_stays_with_the_right_probability(period, p0, p1):
    d = worlds.make("E2_regime_struct", seed=3, n_train=128, n_eval=4, period=period, p_stay_0=p0, p_stay_1=p1)
    r, s = d.train.latent.numpy(), d.train.obs.numpy()
    T = s.shape[1]
    flips = r[:, 1:] != r[:, :-1]  # (N, T-1): flip at t = 1..T-1
    expected = (np.arange(1, T) % period == 0)
    assert np.array_equal(flips, np.broadcast_to(expected, flips.shape))
    assert 0.4 < r[:, 0].mean() < 0.6 and 0.35 < s[:, 0].mean() < 0.65  # r0, s0 ~ U{0,1}
    stay = s[:, 1:] == s[:, :-1]
    for regime, p in ((0, p0), (1, p1)):
        sel = r[:, 1:] == regime
        n = sel.sum()
        assert abs(stay[sel].mean() - p) < 4.5 * math.sqrt(p * (1 - p) / n), (regime, stay[sel].mean())


def test_e2_regime_closed_form_matches_a_plain_loop():
    p = {"T": 40, "period": 7, "p_stay_0": 0.85, "p_stay_1": 0.4}
    s, r = gen.regime(p, 50, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    r0, s0, u = rng.integers(0, 2, (50, 1)), rng.integers(0, 2, (50, 1)), rng.random((50, 39))
    for i in range(50):
        rr, ss = [int(r0[i, 0])], [int(s0[i, 0])]
        for t in range(1, 40):
            rr.append(1 - rr[-1] if t % 7 == 0 else rr[-1])
            stay = u[i, t - 1] < (0.85 if rr[-1] == 0 else 0.4)
            ss.append(ss[-1] if stay else 1 - ss[-1])
        assert r[i].tolist() == rr and s[i].tolist() == ss


def test_e2_null_is_iid_bernoulli():
    s = np_obs("E2_regime_null")
    assert abs(s.mean() - 0.5) < 0.03
    stay = (s[:, 1:] == s[:, :-1]).mean()
    assert abs(stay - 0.5) < 0.03
    s = worlds.make("E2_regime_null", seed=0, n_train=64, n_eval=2, p_one=0.2).train.obs.numpy()
    assert abs(s.mean() - 0.2) < 0.03


# ------------------------------------------------------------------------------ E3 Hopf


def test_hopf_matches_a_scalar_euler_loop_and_nonstat_reduces_to_struct():
    p = {"T": 60, "dt": 0.05, "omega0": 0.8, "omega1": 1.2, "z0_std": 0.3, "s_obs": 0.05}
    obs, lat = gen.hopf(p, 5, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    z0 = 0.3 * rng.standard_normal((5, 2))
    for i in range(5):
        x, y = z0[i]
        for t in range(60):
            assert lat[i, t] == pytest.approx(x, abs=1e-12)
            w = 0.8 + 0.4 * t / 59
            r2 = x * x + y * y
            x, y = x + 0.05 * ((1 - r2) * x - w * y), y + 0.05 * ((1 - r2) * y + w * x)
    assert abs((obs - lat).std() - 0.05) < 0.005
    # the stationary world is the nonstationary one with a flat schedule, bit for bit
    a = worlds.make("E3_osc_nonstat", seed=4, n_train=8, n_eval=8, omega0=1.3, omega1=1.3)
    b = worlds.make("E3_osc_struct", seed=4, n_train=8, n_eval=8, omega=1.3)
    assert torch.equal(a.train.obs, b.train.obs) and torch.equal(a.eval.latent, b.eval.latent)
    # the limit cycle has radius 1: late x oscillates with amplitude ~1
    late = made("E3_osc_struct").train.latent[:, -60:]
    assert 0.9 < late.abs().max(dim=1).values.mean().item() < 1.1


def test_decoy_sine_latent_and_noise():
    d = made("E1_drift_decoy_sine").train
    lat, obs = d.latent.numpy().astype(np.float64), d.obs.numpy().astype(np.float64)
    assert np.abs(lat).max() <= 1.0 + 1e-6 and np.abs(lat).max() > 0.95
    assert abs((obs - lat).std() - 0.02) < 0.002
    # a sine sampled at integer t with frequency omega: s[t+1] + s[t-1] = 2 cos(omega) s[t]
    np.testing.assert_allclose(lat[:, 2:] + lat[:, :-2], 2 * np.cos(0.1) * lat[:, 1:-1], atol=1e-5)
    # with phases uniform on [0, 2π)
    phase = np.arcsin(np.clip(lat[:, 0], -1, 1))
    assert phase.min() < -1.0 and phase.max() > 1.0


# ---------------------------------------------------------------------------- iid nulls


@pytest.mark.parametrize("family", ["E1_drift", "E2_regime", "E3_osc"])
def test_iid_twins_draw_from_the_pooled_structured_marginal(family):
    pool = np_obs(f"{family}_struct")  # same seed: the pool the twin resamples
    for split in ("train", "eval"):
        iid = np_obs(f"{family}_null_iid", split)
        assert np.isin(iid, pool).all()  # every value is one of the structured training values
        if family == "E2_regime":
            p = pool.mean()
            assert abs(iid.mean() - p) < 4 * math.sqrt(p * (1 - p) / iid.size)
        else:
            assert sps.ks_2samp(iid.ravel(), pool.ravel()).pvalue > 0.01
        # no per-sequence structure survives: sequence means vary as for iid values
        assert 0.6 < seq_mean_ratio(iid) < 1.6, seq_mean_ratio(iid)
    # ... whereas the time-shuffled E3 null keeps per-sequence statistics (its known leak)
    if family == "E3_osc":
        assert seq_mean_ratio(np_obs("E3_osc_null")) > 1.8


# ------------------------------------------------------------------------- overrides


def _other_value(p: worlds.Param):
    if p.name == "T":
        return 16
    if p.integer:
        return max(int(p.default) // 2, 1)
    if p.high == 1.0:
        return p.default / 2
    return p.default * 1.5 if p.default else 0.5


@pytest.mark.parametrize("world_id", ALL_IDS)
def test_every_parameter_is_overridable_and_changes_the_data(world_id):
    base = worlds.make(world_id, seed=0, n_train=8, n_eval=4, T=40)
    for p in worlds.spec(world_id).params:
        value = _other_value(p)
        kw = {"T": 40, p.name: value}
        d = worlds.make(world_id, seed=0, n_train=8, n_eval=4, **kw)
        assert d.meta.params[p.name] == value and d.meta.seq_len == kw["T"]
        assert torch.isfinite(d.train.inputs).all()
        if p.name != "T":
            assert not torch.equal(d.train.obs, base.train.obs), p.name
    assert worlds.make(world_id, seed=0, n_train=2, n_eval=2, T=32.0).meta.params["T"] == 32


@given(
    world_id=st.sampled_from(ALL_IDS),
    seed=st.integers(0, 2**63),
    n_train=st.integers(1, 5),
    n_eval=st.integers(1, 5),
    T=st.integers(2, 40),
)
def test_make_any_valid_size(world_id, seed, n_train, n_eval, T):
    d = worlds.make(world_id, seed=seed, n_train=n_train, n_eval=n_eval, T=T)
    assert d.train.inputs.shape == (n_train, T, 2) and d.eval.obs.shape == (n_eval, T)
    assert torch.isfinite(d.train.inputs).all() and torch.isfinite(d.eval.inputs).all()
    assert d.train.inputs[0, -1, 1].item() == 1.0 and d.train.inputs[0, 0, 1].item() == 0.0
    assert worlds.resolve(world_id, {"T": T}) == d.meta.params


def test_unknown_world_lists_the_valid_ids():
    with pytest.raises(UnknownWorld) as e:
        worlds.make("E4_nope", seed=0)
    assert e.value.field == "world"
    assert all(wid in str(e.value) for wid in ALL_IDS)


def test_unknown_parameter_names_it_and_lists_the_valid_ones():
    with pytest.raises(UnknownParameter) as e:
        worlds.make("E3_osc_struct", seed=0, n_train=2, n_eval=2, omgea=2.0)
    assert e.value.field == "omgea"
    assert all(name in str(e.value) for name in ("T", "omega", "dt", "z0_std", "s_obs"))
    with pytest.raises(UnknownParameter) as e:  # a parameter of another world
        worlds.make("E2_regime_null", seed=0, n_train=2, n_eval=2, period=16)
    assert e.value.field == "period"


@pytest.mark.parametrize(
    "world_id, kwargs, field",
    [("E1_drift_struct", {"T": 1}, "T"), ("E3_osc_null", {"T": 3.5}, "T"),
     ("E1_drift_struct", {"s_obs": -0.1}, "s_obs"), ("E1_drift_null_iid", {"s_dyn": float("nan")}, "s_dyn"),
     ("E3_osc_struct", {"z0_std": -1}, "z0_std"), ("E3_osc_struct", {"dt": 0.0}, "dt"),
     ("E3_osc_struct", {"omega": "fast"}, "omega"), ("E2_regime_struct", {"p_stay_0": 1.5}, "p_stay_0"),
     ("E2_regime_struct", {"period": 0}, "period"), ("E2_regime_struct", {"period": True}, "period"),
     ("E2_regime_null", {"p_one": -0.1}, "p_one"), ("E1_drift_struct", {"n_train": 0}, "n_train"),
     ("E1_drift_struct", {"n_eval": 0}, "n_eval"), ("E1_drift_struct", {"n_eval": 2.5}, "n_eval"),
     ("E1_drift_struct", {"seed": -1}, "seed"), ("E1_drift_struct", {"seed": 1.5}, "seed"),
     ("E3_osc_struct", {"dt": 50.0}, "world_params")],
)
def test_bad_values_name_the_field(world_id, kwargs, field):
    kw = {"seed": 0, "n_train": 4, "n_eval": 4, **kwargs}
    with pytest.raises(SpecError) as e:
        worlds.make(world_id, **kw)
    assert e.value.field == field
    assert f"`{field}`" in str(e.value)


@pytest.mark.parametrize(
    "error",
    [
        worlds.errors.SpecError("hidden_dims[2]", "must be between 1 and 256, got 0"),
        worlds.errors.UnknownWorld("world", "unknown world 'X'"),
        worlds.errors.LimitExceeded("steps", "at most 100"),
        worlds.errors.ExperimentNotFound("exp-1"),
        worlds.errors.StoreError("store unreachable"),
    ],
)
def test_errors_survive_pickling(error):
    # Ray and the server's worker processes pickle errors across process boundaries.
    import pickle

    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert getattr(back, "field", None) == getattr(error, "field", None)
