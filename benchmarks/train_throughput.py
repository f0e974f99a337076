"""Training throughput: a per-seed torch.nn.GRU loop vs the seed-vectorised path.

Same configuration both ways (GRU, H = 16, T = 256, batch 64, E3_osc_struct, Adam lr 1e-3,
Gaussian NLL sigma = 0.05), in one process so both see the same machine load:

  plain     one seed at a time, nn.GRU + nn.Linear + torch.optim.Adam, as a research
            script would write it
  vector    trainers.training.train: K seeds at once (batched weights, per-member Adam),
            with the native fast path (trainers.fastpath) for loss and gradients
  autograd  the same loop with the fast path switched off (WORLDSWEEP_FASTPATH=0)

Prints seed-steps per second and the ratio to the plain loop, then where the time of one
vectorised step goes. Usage:

    python benchmarks/train_throughput.py [--ks 16,32,64,128] [--steps 8] [--plain-steps 30]
        [--repeats 3] [--threads N]

Run it on a quiet machine (check `uptime`): torch's per-op threads stall badly when other
processes load the cores, which hurts the plain loop most.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import torch

from trainers import cells, fastpath, training
from worlds import make

H, B, T, KIND = 16, 64, 256, "gru"
SIGMA = 0.05


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def best(repeats: int, fn: Callable[..., float], *args: object) -> float:
    """Highest rate of `repeats` runs: other processes on the machine only ever slow a run down."""
    return max(fn(*args) for _ in range(max(1, repeats)))


def plain_loop(inputs: torch.Tensor, obs: torch.Tensor, seed: int, steps: int) -> float:
    """Seed-steps per second of the per-seed nn.GRU loop."""
    gru = torch.nn.GRU(inputs.shape[-1], H, batch_first=True)
    head = torch.nn.Linear(H, 1)
    init = cells.init_params_one(KIND, H, inputs.shape[-1], seed)  # SCIENCE.md init, no global RNG
    with torch.no_grad():
        gru.weight_ih_l0.copy_(init["w_ih"])
        gru.weight_hh_l0.copy_(init["w_hh"])
        gru.bias_ih_l0.copy_(init["b_ih"])
        gru.bias_hh_l0.copy_(init["b_hh"])
        head.weight.copy_(init["head_w"][None])
        head.bias.copy_(init["head_b"][None])
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    const = 0.5 * math.log(2 * math.pi * SIGMA**2)

    def step() -> None:
        idx = torch.randint(inputs.shape[0], (B,), generator=gen)
        x, y = inputs[idx], obs[idx, 1:]  # (B, T, 2), (B, T-1)
        out, _ = gru(x)  # (B, T, H)
        pred = head(out).squeeze(-1)[:, :-1]  # (B, T-1)
        loss = (0.5 * (y - pred) ** 2 / SIGMA**2 + const).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def vector_loop(inputs: torch.Tensor, obs: torch.Tensor, k: int, steps: int) -> float:
    """Seed-steps per second of trainers.training.train with K members."""
    seeds = list(range(1234, 1234 + k))

    def run(n: int) -> float:
        params = cells.init_params(KIND, H, inputs.shape[-1], seeds)
        batches = training.Batches([inputs] * k, [obs] * k, seeds, ["full_time"] * k, B)
        lr = torch.full((k,), 1e-3)
        t0 = time.perf_counter()
        training.train(KIND, params, batches, lr, n, training.trainable_keys("full"))
        return time.perf_counter() - t0

    run(1)  # warm-up (and the one-time native build)
    return k * steps / run(steps)


def profile_step(inputs: torch.Tensor, obs: torch.Tensor, k: int, steps: int) -> None:
    """Where one vectorised training step's time goes (the train loop's parts, timed)."""
    seeds = list(range(1234, 1234 + k))
    params = cells.init_params(KIND, H, inputs.shape[-1], seeds)
    batches = training.Batches([inputs] * k, [obs] * k, seeds, ["full_time"] * k, B)
    trainable = training.trainable_keys("full")
    state = training.adam_init(params, trainable, torch.full((k,), 1e-3))
    active = torch.ones(k, dtype=torch.bool)
    parts = dict.fromkeys(
        ["batch", "forward (+head grads)", "backward (BPTT)", "adam", "finite"], 0.0
    )
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        x, y = batches.next()
        t1 = time.perf_counter()
        fastpath.loss_and_grads(KIND, params, x, y, cells.HEAD_KEYS)  # forward only
        t2 = time.perf_counter()
        loss, grads = fastpath.loss_and_grads(KIND, params, x, y, trainable)  # forward + BPTT
        t3 = time.perf_counter()
        ok = training.all_finite(loss, grads)
        t4 = time.perf_counter()
        params = training.adam_step(params, grads, state, active & ok)
        t5 = time.perf_counter()
        if _ == 0:
            continue  # warm-up
        parts["batch"] += t1 - t0
        parts["forward (+head grads)"] += t2 - t1
        parts["backward (BPTT)"] += (t3 - t2) - (t2 - t1)
        parts["finite"] += t4 - t3
        parts["adam"] += t5 - t4
    total = sum(parts.values())
    print(
        f"\nprofile of one vectorised step, K = {k} ({steps} steps, {total / steps * 1e3:.1f} ms/step):"
    )
    for name, sec in parts.items():
        print(f"  {name:24s} {sec / steps * 1e3:8.2f} ms  {100 * sec / total:5.1f} %")
    per_member = (parts["forward (+head grads)"] + parts["backward (BPTT)"]) / steps / k
    threads = torch.get_num_threads()
    print(
        f"  native loss+grads: {per_member * 1e3:.2f} ms per member-step over {threads} threads "
        f"= {per_member * threads * 1e3:.2f} ms of one core"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ks", default="16,32,64,128", help="comma-separated K (seeds per batch)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per vectorised run")
    ap.add_argument("--plain-steps", type=int, default=30, help="timed steps of the per-seed loop")
    ap.add_argument(
        "--autograd-k", type=int, default=16, help="K for the no-fast-path run (0: skip)"
    )
    ap.add_argument("--n-train", type=int, default=4096, help="training sequences in the world")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="best of this many runs per row (load noise)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ks = [int(v) for v in args.ks.split(",") if v]

    world = make("E3_osc_struct", seed=0, n_train=args.n_train, n_eval=16)
    inputs, obs = world.train.inputs, world.train.obs  # (N, T, 2), (N, T)
    assert inputs.shape[1] == T, f"E3_osc_struct has T = {inputs.shape[1]}, benchmark assumes {T}"
    print(
        f"GRU H={H} T={T} batch={B} E3_osc_struct; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"fast path available: {fastpath.available(KIND, torch.device('cpu'), fastpath.PARAM_KEYS)}"
    )
    print(f"load average at start: {load_average()}")

    # the reference gets its best thread count: torch's per-op threading helps it little at
    # this size and hurts it badly when other processes load the cores
    threads = torch.get_num_threads()
    plain_by_threads = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        plain_by_threads[n] = best(args.repeats, plain_loop, inputs, obs, 1234, args.plain_steps)
    torch.set_num_threads(threads)
    plain = max(plain_by_threads.values())
    rows = [(f"plain nn.GRU, {n} thread(s)", 1, r) for n, r in plain_by_threads.items()]
    if args.autograd_k:
        os.environ["WORLDSWEEP_FASTPATH"] = "0"
        try:
            rate = best(args.repeats, vector_loop, inputs, obs, args.autograd_k, 2)
            rows.append(("vectorised, autograd", args.autograd_k, rate))
        finally:
            del os.environ["WORLDSWEEP_FASTPATH"]
    for k in ks:
        rate = best(args.repeats, vector_loop, inputs, obs, k, args.steps)
        rows.append(("vectorised, fast path", k, rate))

    print(f"\n{'path':28s} {'K':>5s} {'seed-steps/s':>13s} {'x plain':>8s}  (plain = best plain)")
    for name, k, rate in rows:
        print(f"{name:28s} {k:5d} {rate:13.1f} {rate / plain:8.1f}")
    best_k = max((r for r in rows if r[0].endswith("fast path")), key=lambda r: r[2], default=None)
    if best_k is not None:
        profile_step(inputs, obs, best_k[1], max(2, args.steps // 2))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
