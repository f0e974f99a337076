"""run_trial / run_packed end to end on tiny configurations: columns, seed independence,
packing, modes, devices, progress, and the scientific sanity checks of issue 2."""

from __future__ import annotations

import math

import pytest
import torch

import trainers
from trainers.config import RESULT_COLUMNS, TrialConfig
from worlds.errors import SpecError

TINY = dict(
    world="E3_osc_struct", world_params={"T": 24}, hidden_dim=4, n_train=128, n_eval=64,
    batch_size=16, steps=50, lr=1e-2, lyap_sequences=2, lyap_warmup=4, lyap_steps=12,
    coast_cut=10, coast_len=10, halluc_cut=8, halluc_len=10,
)  # fmt: skip
TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list<float>": list}
VOLATILE = ("train_seconds",)


def same_numbers(a: dict, b: dict) -> None:
    """Rows equal to float tolerance, except wall-clock columns."""
    assert a.keys() == b.keys()
    for name in a:
        if name in VOLATILE:
            continue
        x, y = a[name], b[name]
        if isinstance(x, float):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=2e-4, abs=2e-5), name
        elif isinstance(x, list):
            assert x == pytest.approx(y, rel=2e-4, abs=2e-5), name
        else:
            assert x == y, name


def test_row_has_every_result_column_with_its_type() -> None:
    calls = []
    rows = trainers.run_trial(TINY, [3, 4], progress=lambda s, t: calls.append((s, t)))
    assert len(rows) == 2 and [r["seed"] for r in rows] == [3, 4]
    for row in rows:
        assert list(row) == list(RESULT_COLUMNS)
        for name, kind in RESULT_COLUMNS.items():
            assert isinstance(row[name], TYPES[kind]), (name, row[name])
        assert row["valid"] and row["invalid_reason"] == ""
        assert row["world_params"] == '{"T": 24}' and row["seq_len"] == 24 and row["data_seed"] == 0
        assert row["device"] == "cpu" and row["baseline_kind"] == "smart"
        assert row["delta_nll"] == pytest.approx(row["nll_baseline"] - row["nll_model"])
        assert row["lyap_spectrum"] and math.isfinite(row["lyap_1"])
    assert calls[-1] == (50, 50) and len(calls) == 50  # every 1% of 50 steps = every step
    assert [s for s, _ in calls] == sorted(s for s, _ in calls)


@pytest.mark.parametrize("path", ["fastpath", "autograd"])
@pytest.mark.parametrize(
    "kind, time_cond", [("rnn_tanh", "full_time"), ("gru", "random_time"), ("lstm", "no_time")]
)
def test_seed_alone_equals_seed_among_fifteen_others(
    kind: str, time_cond: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "autograd":  # trainers.fastpath reads this switch on every call
        monkeypatch.setenv("WORLDSWEEP_FASTPATH", "0")
    config = {**TINY, "model": kind, "time_cond": time_cond}
    alone = trainers.run_trial(config, [1240])[0]
    crowd = trainers.run_trial(config, [1234 + i for i in range(16)])
    same_numbers(alone, crowd[6])
    assert crowd[5]["nll_model"] != crowd[6]["nll_model"]


def test_packed_worlds_and_lrs_equal_separate_trials() -> None:
    a = TrialConfig.from_dict({**TINY, "lr": 1e-2, "data_seed": 5})
    b = TrialConfig.from_dict({**TINY, "world": "E3_osc_null", "lr": 3e-3, "baseline": "batch"})
    c = TrialConfig.from_dict({**TINY, "data_seed": "per_seed", "time_cond": "random_time"})
    assert trainers.pack_key(a) == trainers.pack_key(b) == trainers.pack_key(c)
    packed = trainers.run_packed([(a, 1), (b, 1), (c, 2), (a, 7)])
    separate = [
        trainers.run_trial(a, [1])[0],
        trainers.run_trial(b, [1])[0],
        trainers.run_trial(c, [2])[0],
        trainers.run_trial(a, [7])[0],
    ]
    for p, s in zip(packed, separate, strict=True):
        same_numbers(p, s)
    assert packed[1]["world_role"] == "null" and math.isnan(packed[1]["probe_r2"]) and packed[1]["valid"]
    assert packed[2]["data_seed"] == 2 and packed[0]["data_seed"] == 5


def test_unpackable_members_are_refused() -> None:
    a = TrialConfig.from_dict(TINY)
    with pytest.raises(SpecError) as e:
        trainers.run_packed([(a, 1), (TrialConfig.from_dict({**TINY, "hidden_dim": 5}), 2)])
    assert e.value.field == "members[1]"
    with pytest.raises(SpecError) as e:
        trainers.run_trial(a, [1, -2])
    assert e.value.field == "seeds[1]"
    assert trainers.run_packed([]) == []


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainers.resolve_device("auto").type == expected
    assert trainers.resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "gpu:0") + (() if torch.cuda.is_available() else ("cuda", "cuda:0")):
        with pytest.raises(SpecError) as e:
            trainers.resolve_device(bad)
        assert e.value.field == "device"


def test_untrained_is_zero_steps_and_readout_only_keeps_the_core() -> None:
    lean = {**TINY, "lyapunov": False, "coasting": False}
    untrained = trainers.run_trial({**lean, "mode": "untrained"}, [3])[0]
    zero = trainers.run_trial({**lean, "steps": 0}, [3])[0]
    assert untrained["steps"] == 50  # the configured value is recorded; the mode trains 0 steps
    assert untrained["nll_model"] == zero["nll_model"]
    assert untrained["probe_r2"] == untrained["probe_r2_untrained"]
    readout = trainers.run_trial({**lean, "mode": "readout_only"}, [3])[0]
    assert readout["probe_r2"] == untrained["probe_r2"]  # same core, same hidden states
    assert readout["nll_model"] < untrained["nll_model"]
    assert math.isnan(untrained["lyap_1"]) and untrained["lyap_label"] == ""


def test_markov_baseline_on_binary_world_and_refused_elsewhere() -> None:
    cfg = {**TINY, "world": "E2_regime_struct", "world_params": {"T": 24, "period": 8}, "baseline": "markov"}
    row = trainers.run_trial(cfg, [1])[0]
    assert row["baseline_choice"] == "markov" and row["valid"]
    assert 0.2 < row["nll_baseline"] < math.log(2) + 0.05  # Bernoulli nats, not Gaussian
    assert 0.0 < row["nll_model"] < 7.0
    with pytest.raises(SpecError) as e:
        trainers.run_trial({**TINY, "baseline": "markov"}, [1])
    assert e.value.field == "baseline"


# -------------------------------------------------------------------- scientific sanity

SANITY = dict(
    world="E3_osc_struct", world_params={"T": 32}, model="gru", hidden_dim=8, n_train=256,
    n_eval=64, batch_size=32, steps=150, lr=1e-2, lyapunov=False, coasting=False,
)  # fmt: skip
SEEDS = [1234, 1235, 1236]


def test_trained_gru_beats_the_baseline_on_e3_struct() -> None:
    for row in trainers.run_trial(SANITY, SEEDS):
        assert row["delta_nll"] > 0.15, row  # ceiling ~0.72 nats at full size
        assert row["probe_r2"] > 0.9
        assert row["probe_r2_shuffled"] < 0.1 and row["probe_r2_noise"] < 0.1


@pytest.mark.parametrize("mode", ["untrained", "scramble_core"])
def test_untrained_and_scrambled_do_not_beat_the_baseline(mode: str) -> None:
    for row in trainers.run_trial({**SANITY, "mode": mode}, SEEDS):
        assert row["delta_nll"] < 0.0, row


def test_e2_null_gives_delta_nll_near_zero() -> None:
    rows = trainers.run_trial({**SANITY, "world": "E2_regime_null", "n_eval": 256, "steps": 200}, SEEDS)
    for row in rows:
        assert row["baseline_choice"] == "mean"
        assert abs(row["delta_nll"]) < 0.15, row  # on a scale of ~48 nats per step
        assert math.isnan(row["probe_r2"]) and row["valid"]


def test_validity_reasons() -> None:
    from trainers.trial import _validity

    cfg = TrialConfig()
    row = {name: 0.5 for name in RESULT_COLUMNS if RESULT_COLUMNS[name] == "float"}
    row["lyap_spectrum"] = [0.1]
    assert _validity(row, -1, True, cfg) == (True, "")
    assert _validity(row, 7, True, cfg) == (False, "diverged: non-finite loss or gradient at step 7")
    nan_probe = {**row, "probe_r2": math.nan, "probe_margin": math.nan}
    assert _validity(nan_probe, -1, False, cfg)[0]  # null world: NaN probe expected
    assert _validity(nan_probe, -1, True, cfg) == (False, "non-finite probe_r2 (nan)")
    assert _validity({**row, "nll_model": math.inf}, -1, True, cfg) == (False, "non-finite nll_model (inf)")
    assert _validity({**row, "lyap_1": math.nan}, -1, True, cfg)[1] == "non-finite lyap_1 (nan)"


@pytest.mark.parametrize(
    "field, value",
    [("lr", math.inf), ("lr", 0.0), ("probe_ridge", -1.0), ("world_params", [1]), ("mode", "half")],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(SpecError) as e:
        TrialConfig.from_dict({field: value})
    assert e.value.field == field
