"""Lyapunov spectra: the reference way vs the fast way, on one briefly trained H = 16 GRU.

    .venv/bin/python benchmarks/lyapunov.py [--sequences 64] [--steps 150] [--warmup 50]
                                            [--train-steps 300] [--device auto] [--threads N]

The network is trained here, briefly, on E3_osc_struct (Adam, lr 1e-3, batch 64, Gaussian
NLL as SCIENCE.md §2) with torch.nn.GRU for speed, then its weights are copied into the
batched-params layout of trainers.cells (nn.GRU has the same gate order). The trainer of the
project is not used so that this benchmark measures only the spectrum code.

reference: one sequence at a time, one autograd backward pass per Jacobian row
           (trainers.jacobians.autograd_step_jacobian), numpy QR per step, float64.
fast:      trainers.dynamics.lyapunov_exponents — analytic Jacobians for all sequences at
           once and one batched float64 QR per step (--qr auto: numpy's serial LAPACK
           loop on the CPU, torch on a GPU; --qr torch / numpy force one).
Both use the same warm-up / measured window and must give the same spectra.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import worlds
from trainers.cells import cell_step, init_params, init_state
from trainers.dynamics import lyapunov_exponents
from trainers.jacobians import autograd_step_jacobian


def resolve(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_gru(hidden: int, steps: int, seed: int = 1234) -> tuple[dict[str, torch.Tensor], worlds.WorldData]:
    data = worlds.make("E3_osc_struct", seed=0, n_train=2048, n_eval=256)
    params = init_params("gru", hidden, 2, [seed], dtype=torch.float32)
    gru = torch.nn.GRU(2, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(params["w_ih"][0])
        gru.weight_hh_l0.copy_(params["w_hh"][0])
        gru.bias_ih_l0.copy_(params["b_ih"][0])
        gru.bias_hh_l0.copy_(params["b_hh"][0])
        head.weight.copy_(params["head_w"][0][None])
        head.bias.copy_(params["head_b"][0][None])
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = data.train.inputs, data.train.obs
    for _ in range(steps):
        idx = torch.randint(0, x_all.shape[0], (64,), generator=gen)
        out, _ = gru(x_all[idx])
        pred = head(out).squeeze(-1)[:, :-1]
        loss = 0.5 * ((pred - y_all[idx, 1:]) ** 2).mean() / 0.05**2
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trained = {
            "w_ih": gru.weight_ih_l0[None].clone(),
            "w_hh": gru.weight_hh_l0[None].clone(),
            "b_ih": gru.bias_ih_l0[None].clone(),
            "b_hh": gru.bias_hh_l0[None].clone(),
            "head_w": head.weight[0][None].clone(),
            "head_b": head.bias.clone(),
        }
    print(f"trained {steps} Adam steps on E3_osc_struct, final train loss {loss.item():.3f} (200·MSE scale)")
    return trained, data


def reference(params: dict[str, torch.Tensor], inputs: torch.Tensor, warmup: int, steps: int) -> np.ndarray:
    """(B, S) spectra, one sequence at a time; inputs (B, T, I)."""
    p = {k: v.detach().double().cpu() for k, v in params.items()}
    out = []
    for b in range(inputs.shape[0]):
        x = inputs[b].double().cpu()[None, None]  # (1, 1, T, I)
        h = init_state("gru", p, 1)
        with torch.no_grad():
            for t in range(warmup):
                h = cell_step("gru", p, x[:, :, t], h)
        n = h.shape[-1]
        q, log_r = np.eye(n), np.zeros(n)
        for t in range(warmup, warmup + steps):
            jac = autograd_step_jacobian("gru", p, x[:, :, t], h)[0, 0].numpy()  # n backward passes
            q, r = np.linalg.qr(jac @ q)
            log_r += np.log(np.abs(np.diag(r)))
            with torch.no_grad():
                h = cell_step("gru", p, x[:, :, t], h)
        out.append(np.sort(log_r / steps)[::-1])
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5, help="fast-path repeats (best is reported)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--qr", default="auto", choices=["auto", "torch", "numpy"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fast path on {device}, qr={args.qr}")

    params, data = train_gru(args.hidden, args.train_steps)
    inputs = data.eval.inputs[: args.sequences]  # (B, T, 2), full_time channel as generated
    assert inputs.shape[1] >= args.warmup + args.steps, "sequences shorter than warm-up + steps"

    t0 = time.perf_counter()
    ref = reference(params, inputs, args.warmup, args.steps)
    t_ref = time.perf_counter() - t0

    p_dev = {k: v.to(device) for k, v in params.items()}
    x_dev = inputs[None].to(device)  # (1, B, T, 2)
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fast = lyapunov_exponents("gru", p_dev, x_dev, warmup=args.warmup, steps=args.steps, qr=args.qr)[0].cpu().numpy()
        times.append(time.perf_counter() - t0)
    t_fast = min(times)

    diff = float(np.abs(fast - ref).max())
    lam = fast.mean(axis=0)
    print(f"H = {args.hidden} GRU, {args.sequences} sequences, {args.warmup} warm-up + {args.steps} measured steps")
    print(f"mean spectrum: λ1 = {lam[0]:.4f}, λ2 = {lam[1]:.4f}, Σλ = {lam.sum():.4f} nats/step")
    print(f"{'reference (per sequence, autograd per row, numpy QR):':<56}{t_ref:9.3f} s")
    print(f"{f'fast (analytic, batched QR, qr={args.qr}):':<56}{t_fast:9.4f} s  (best of {args.repeats})")
    print(f"speed-up: {t_ref / t_fast:.0f}x   max |Δλ| per sequence: {diff:.2e}")
    ok = diff < 1e-8 and math.isfinite(diff)
    print("spectra agree" if ok else "SPECTRA DISAGREE")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
