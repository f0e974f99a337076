"""Evaluation (SCIENCE.md §3): model NLL, trivial baselines, Delta NLL, linear probes.

NLL_model is the mean Gaussian NLL (sigma 0.05) of the prediction made at step t against
obs[t+1], over every evaluation sequence and step, in nats per step. The forward pass
streams over fixed-size chunks of sequences (EVAL_CHUNK, independent of K so a member's
numbers never depend on its batch-mates) and feeds the probe moments as it goes.

Baselines:
  persistence  yhat[t] = y[t]
  mean         yhat[t] = the global mean of the raw TRAINING observations
  smart        the lower-MSE of the two, chosen once over the whole evaluation set (ties:
               persistence)
  batch        the same choice per evaluation batch of REFERENCE_BATCH = 64 consecutive
               sequences (the reference's protocol); nll_baseline is the mean over all
               evaluation steps (batches weighted by their size)
  markov       binary worlds only: a first-order Markov chain fitted on the training data
               (transition counts with add-one smoothing, so no probability is 0), scored
               by its Bernoulli NLL. The model is then scored by Bernoulli NLL too, reading
               its Gaussian-head prediction as a probability p = clip(yhat, 1e-3, 1 - 1e-3)
               (trained with squared error on 0/1 targets, yhat estimates P(y = 1 | past));
               nll_model in such a row is that Bernoulli NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainers.cells import readout, run_cell
from trainers.probe import ProbeMoments, cyclic_derangement, split_mask
from trainers.training import Params, condition, gaussian_nll, member_generator, time_cond_groups
from worlds.errors import SpecError

EVAL_CHUNK = 64  # sequences per forward chunk; a constant so results never depend on K
REFERENCE_BATCH = 64
BERNOULLI_EPS = 1e-3
PROBE_KEYS = ("probe_r2", "probe_r2_untrained", "probe_r2_shuffled", "probe_r2_noise")


@dataclass(frozen=True)
class Baseline:
    kind: str  # smart | batch | persistence | mean | markov
    nll: float
    choice: str  # persistence | mean | mixed | markov


def _sq_errors(train_obs: torch.Tensor, eval_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of squared error (N,) of persistence and of the training mean."""
    y = eval_obs.double()
    target = y[:, 1:]  # (N, T-1)
    persist = ((target - y[:, :-1]) ** 2).sum(dim=1)
    mean = ((target - train_obs.double().mean()) ** 2).sum(dim=1)
    return persist, mean


def _nll_from_sse(sse: float, count: int) -> float:
    """Mean Gaussian NLL (sigma 0.05) of predictions with total squared error `sse`."""
    return 0.5 * sse / count / 0.05**2 + 0.5 * math.log(2.0 * math.pi * 0.05**2)


def markov_nll(train_obs: torch.Tensor, eval_obs: torch.Tensor) -> float:
    """Bernoulli NLL per step of a first-order 2-state Markov chain fitted on `train_obs`
    (N, T) with add-one smoothing, on `eval_obs` (N', T)."""
    a, b = train_obs[:, :-1].round().long().flatten(), train_obs[:, 1:].round().long().flatten()
    counts = torch.bincount(2 * a + b, minlength=4).double().view(2, 2) + 1.0  # [from, to]
    log_p = (counts / counts.sum(dim=1, keepdim=True)).log()  # (2, 2)
    ea, eb = eval_obs[:, :-1].round().long(), eval_obs[:, 1:].round().long()
    return float(-log_p.to(eval_obs.device)[ea, eb].mean())


def baseline(kind: str, train_obs: torch.Tensor, eval_obs: torch.Tensor, binary: bool) -> Baseline:
    """The configured baseline's NLL on the evaluation observations (module docstring)."""
    if kind == "markov":
        if not binary:
            raise SpecError("baseline", "markov needs a binary world (E2_regime_*)")
        return Baseline(kind, markov_nll(train_obs, eval_obs), "markov")
    persist, mean = _sq_errors(train_obs, eval_obs)
    count = eval_obs.shape[0] * (eval_obs.shape[1] - 1)
    if kind == "persistence" or kind == "mean":
        sse = persist if kind == "persistence" else mean
        return Baseline(kind, _nll_from_sse(float(sse.sum()), count), kind)
    if kind == "smart":
        use_mean = float(mean.sum()) < float(persist.sum())
        sse = mean if use_mean else persist
        return Baseline(kind, _nll_from_sse(float(sse.sum()), count), "mean" if use_mean else "persistence")
    if kind == "batch":
        batch_of = torch.arange(eval_obs.shape[0], device=eval_obs.device) // REFERENCE_BATCH
        n_batches = int(batch_of[-1]) + 1
        p_b = torch.zeros(n_batches, dtype=torch.float64, device=eval_obs.device).index_add_(0, batch_of, persist)
        m_b = torch.zeros_like(p_b).index_add_(0, batch_of, mean)
        mean_wins = m_b < p_b
        sse_total = float(torch.where(mean_wins, m_b, p_b).sum())
        choice = "mean" if bool(mean_wins.all()) else "persistence" if not bool(mean_wins.any()) else "mixed"
        return Baseline(kind, _nll_from_sse(sse_total, count), choice)
    raise SpecError("baseline", f"unknown baseline {kind!r}")


def bernoulli_nll(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise Bernoulli NLL of 0/1 targets under p = clip(pred, eps, 1 - eps)."""
    p = pred.clamp(BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
    return -(target * p.log() + (1.0 - target) * (1.0 - p).log())


@dataclass
class EvalMember:
    """What evaluation needs to know about one member."""

    seed: int
    inputs: torch.Tensor  # (N, T, I) evaluation inputs (full_time channel, unconditioned)
    obs: torch.Tensor  # (N, T) raw evaluation observations
    latent: torch.Tensor | None  # (N, T) or None (null worlds)
    time_cond: str
    bernoulli: bool  # score the model by Bernoulli NLL (markov baseline)


def eval_inputs(members: list[EvalMember], start: int, stop: int, gens: list[torch.Generator]) -> torch.Tensor:
    """Time-conditioned inputs (K, C, T, I) of sequences [start, stop) of every member."""
    from worlds import apply_time_cond

    x = torch.stack([m.inputs[start:stop] for m in members])
    groups = time_cond_groups([m.time_cond for m in members], x.device)
    return condition(x, [m.time_cond for m in members], groups, gens, apply_time_cond)


@torch.no_grad()
def evaluate(
    kind: str,
    params: Params,
    members: list[EvalMember],
    *,
    probe: bool = True,
    ridge: float = 1e-3,
    untrained: Params | None = None,
) -> list[dict[str, float]]:
    """nll_model and the four probe R^2 per member.

    `untrained` holds the members' initial parameters for the untrained-network control;
    None means the core never changed (modes untrained / readout_only), so the trained
    states are the untrained ones.
    """
    k = len(members)
    n, t = members[0].obs.shape
    device = members[0].obs.device
    h = params["w_hh"].shape[-1]
    gens = [member_generator(m.seed, "eval_time") for m in members]
    noise_gens = [member_generator(m.seed, "probe_noise") for m in members]
    has_latent = [m.latent is not None for m in members]
    do_probe = probe and any(has_latent)
    if do_probe:
        fit_seqs = torch.stack([split_mask(n, member_generator(m.seed, "probe_split")) for m in members]).to(device)
        seq_perm = [cyclic_derangement(n, member_generator(m.seed, "probe_shuffle")) for m in members]
        time_perm = [1 + torch.randperm(t - 1, generator=member_generator(m.seed, "probe_shuffle_t")) for m in members]
        latents = [m.latent if m.latent is not None else m.obs.new_zeros(n, t) for m in members]
        # trained states serve two targets (latent, shuffled latent): one design matrix
        trained = ProbeMoments(k, h, 2, device)
        untrained_m, noise_m = ProbeMoments(k, h, 1, device), ProbeMoments(k, h, 1, device)
    nll_sum = torch.zeros(k, dtype=torch.float64, device=device)
    bern = torch.tensor([m.bernoulli for m in members], device=device)

    for start in range(0, n, EVAL_CHUNK):
        stop = min(n, start + EVAL_CHUNK)
        x = eval_inputs(members, start, stop, gens)  # (K, C, T, I)
        y = torch.stack([m.obs[start:stop, 1:] for m in members])  # (K, C, T-1)
        hs, _ = run_cell(kind, params, x)  # (K, C, T, H)
        pred = readout(params, hs)[:, :, :-1]  # (K, C, T-1)
        per_step = torch.where(bern[:, None, None], bernoulli_nll(pred, y), gaussian_nll(pred, y))
        nll_sum += per_step.double().sum(dim=(1, 2))
        if not do_probe:
            continue
        c = stop - start
        rows = (k, c * (t - 1))
        fit_rows = fit_seqs[:, start:stop, None].expand(k, c, t - 1).reshape(rows)
        target = torch.stack([lat[start:stop, 1:] for lat in latents]).reshape(rows)
        states = hs[:, :, 1:].reshape(*rows, h)
        shuffled = torch.stack(
            [lat[sp[start:stop]][:, tp] for lat, sp, tp in zip(latents, seq_perm, time_perm, strict=True)]
        ).reshape(rows)
        trained.add(states, torch.stack([target, shuffled], dim=-1), fit_rows)
        noise = torch.stack([torch.randn(c * (t - 1), h, generator=g) for g in noise_gens]).to(device)
        noise_m.add(noise.to(states.dtype), target.unsqueeze(-1), fit_rows)
        if untrained is not None:  # else the untrained states are the trained ones
            hs0, _ = run_cell(kind, untrained, x)
            untrained_m.add(hs0[:, :, 1:].reshape(*rows, h), target.unsqueeze(-1), fit_rows)

    nll = (nll_sum / (n * (t - 1))).tolist()
    out = [{"nll_model": v} for v in nll]
    r2s = {key: [math.nan] * k for key in PROBE_KEYS}
    if do_probe:
        both = trained.r2(ridge)
        r2s["probe_r2"], r2s["probe_r2_shuffled"] = both[:, 0].tolist(), both[:, 1].tolist()
        r2s["probe_r2_untrained"] = (
            untrained_m.r2(ridge)[:, 0].tolist() if untrained is not None else r2s["probe_r2"]
        )
        r2s["probe_r2_noise"] = noise_m.r2(ridge)[:, 0].tolist()
    for key in PROBE_KEYS:
        r2 = r2s[key]
        for row, v, ok in zip(out, r2, has_latent, strict=True):
            row[key] = v if ok else math.nan
    for row in out:
        controls = [row["probe_r2_untrained"], row["probe_r2_shuffled"], row["probe_r2_noise"]]
        finite = all(math.isfinite(v) for v in [row["probe_r2"], *controls])
        row["probe_margin"] = row["probe_r2"] - max(controls) if finite else math.nan
    return out
