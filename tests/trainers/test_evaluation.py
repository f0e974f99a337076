"""Baselines and model NLL against hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.cells import init_params
from trainers.evaluation import EvalMember, baseline, bernoulli_nll, evaluate, markov_nll
from trainers.training import predict
from worlds.errors import SpecError

C = 0.5 * math.log(2 * math.pi * 0.05**2)


def nll(sse: float, count: int) -> float:
    return 0.5 * sse / count / 0.0025 + C


TRAIN = torch.tensor([[1.0, 2.0, 3.0]])  # global training mean 2
EVAL = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
# persistence squared errors: (1-0)^2 + (3-1)^2 = 5 and 0; mean: (1-2)^2 + (3-2)^2 = 2 and 0


def test_persistence_mean_and_smart_by_hand() -> None:
    assert baseline("persistence", TRAIN, EVAL, False).nll == pytest.approx(nll(5.0, 4))
    assert baseline("mean", TRAIN, EVAL, False).nll == pytest.approx(nll(2.0, 4))
    smart = baseline("smart", TRAIN, EVAL, False)
    assert (smart.nll, smart.choice) == (pytest.approx(nll(2.0, 4)), "mean")
    smooth = torch.tensor([[0.0, 0.1, 0.2, 0.3]])  # persistence wins on a slow ramp
    s = baseline("smart", TRAIN, smooth, False)
    assert (s.nll, s.choice) == (pytest.approx(nll(3 * 0.01, 3), rel=1e-5), "persistence")


def test_batch_granularity_chooses_per_64_sequences() -> None:
    ramp = torch.tensor([0.0, 0.1, 0.2])  # persistence error 0.02, mean (2) error 1.9^2 + 1.8^2
    jump = torch.tensor([2.0, 0.0, 2.0])  # persistence error 8, mean error 4
    eval_obs = torch.cat([ramp.expand(64, 3), jump.expand(10, 3)])
    b = baseline("batch", TRAIN, eval_obs, False)
    count = 74 * 2
    expected = nll(64 * 0.02 + 10 * 4.0, count)
    assert b.choice == "mixed" and b.nll == pytest.approx(expected, rel=1e-6)
    whole = baseline("smart", TRAIN, eval_obs, False)  # one choice for all: persistence
    assert whole.choice == "persistence"
    assert whole.nll == pytest.approx(nll(64 * 0.02 + 10 * 8.0, count), rel=1e-6)
    assert whole.nll > b.nll


def test_markov_chain_nll_by_hand() -> None:
    train = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0, 1.0]])
    # transitions: 0->0 x3, 0->1 x2, 1->1 x2, 1->0 x1; add-one: P(0->0)=4/7, P(0->1)=3/7,
    # P(1->1)=3/5, P(1->0)=2/5
    eval_obs = torch.tensor([[0.0, 1.0, 1.0, 0.0]])  # 0->1, 1->1, 1->0
    expected = -(math.log(3 / 7) + math.log(3 / 5) + math.log(2 / 5)) / 3
    assert markov_nll(train, eval_obs) == pytest.approx(expected, rel=1e-9)
    b = baseline("markov", train, eval_obs, True)
    assert (b.choice, b.nll) == ("markov", pytest.approx(expected, rel=1e-9))
    with pytest.raises(SpecError) as e:
        baseline("markov", TRAIN, EVAL, False)
    assert e.value.field == "baseline"


def test_bernoulli_nll_clips_predictions() -> None:
    got = bernoulli_nll(torch.tensor([0.25, 1.7, -0.3]), torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(got, torch.tensor([math.log(4), -math.log(1 - 1e-3), -math.log(1e-3)]))


def test_evaluate_nll_matches_direct_computation_across_chunks() -> None:
    """130 sequences span three evaluation chunks; the mean is over all of them."""
    g = torch.Generator().manual_seed(3)
    params = init_params("gru", 4, 2, [1, 2])
    inputs = torch.randn(130, 6, 2, generator=g)
    obs = torch.randn(130, 6, generator=g)
    members = [EvalMember(s, inputs, obs, None, "full_time", False) for s in (1, 2)]
    from worlds import apply_time_cond

    got = evaluate("gru", params, members, probe=False)
    pred = predict("gru", params, apply_time_cond(inputs, "full_time").expand(2, -1, -1, -1))[:, :, :-1]
    direct = (0.5 * (pred - obs[:, 1:]) ** 2 / 0.0025 + C).double().mean(dim=(1, 2))
    for k in range(2):
        assert got[k]["nll_model"] == pytest.approx(float(direct[k]), rel=1e-6)
        assert math.isnan(got[k]["probe_r2"]) and math.isnan(got[k]["probe_margin"])
