"""Permutation tests and report tables: ours vs scipy.stats.permutation_test, side by side.

    .venv/bin/python benchmarks/stats_tests.py [--repeat 5] [--seeds 20]

sign flip, n = 20, exact:      stats.sign_flip_test (meet in the middle: 2 x 2^10 partial
                               sums + binary search) vs scipy enumerating all 2^20 patterns.
label permutation, 10 vs 9:    C(19, 9) = 92378 partitions, both exact.
report tables:                 stats.report on a synthetic 3000-row experiment (5 worlds x
                               3 models x 5 hidden sizes x 2 lr x 20 seeds), all five tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats as sps

from stats import report, sign_flip_test, two_sample_permutation_test


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic_frame(n_seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    worlds = [("E3_osc_struct", "structured", "E3_osc"), ("E3_osc_null", "null", "E3_osc"),
              ("E3_osc_null_iid", "null_iid", "E3_osc"), ("E2_regime_struct", "structured", "E2_regime"),
              ("E2_regime_null", "null", "E2_regime")]
    rows = []
    for world, role, family in worlds:
        for model in ("rnn_tanh", "gru", "lstm"):
            for hidden in (2, 4, 8, 16, 32):
                for lr in (1e-3, 3e-3):
                    for s in range(n_seeds):
                        rows.append(dict(
                            world=world, world_role=role, world_family=family, world_params="{}",
                            model=model, hidden_dim=hidden, mode="full", time_cond="full_time", lr=lr,
                            batch_size=64, steps=100, n_train=100, n_eval=50, baseline_kind="smart",
                            seed=1234 + s, delta_nll=rng.normal(0.2), valid=bool(rng.random() > 0.05),
                            lyap_1=rng.normal(-0.2, 0.1), lyap_gap=0.1, lyap_sum=-1.0, lyap_ky_dim=0.0,
                            lyap_label="sink", lyap_spectrum=np.sort(rng.normal(size=hidden))[::-1],
                            coast_retention=rng.random(), coast_label="inertial", halluc_var=0.0,
                            halluc_label="nihilism",
                        ))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    gen = np.random.default_rng(1)

    x = gen.normal(0.2, 1.0, 20)
    ours = best_of(lambda: sign_flip_test(x), args.repeat)
    ref = best_of(lambda: sps.permutation_test(
        (x,), np.mean, permutation_type="samples", vectorized=True, n_resamples=np.inf,
        alternative="greater"), max(1, args.repeat // 2))
    assert sign_flip_test(x).exact
    print(f"sign flip n=20 exact      ours {ours * 1e3:8.2f} ms   scipy {ref * 1e3:8.1f} ms   ratio {ref / ours:7.0f}x")

    a, b = gen.normal(0.5, 1, 10), gen.normal(0.0, 1, 9)
    ours = best_of(lambda: two_sample_permutation_test(a, b), args.repeat)
    ref = best_of(lambda: sps.permutation_test(
        (a, b), lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        permutation_type="independent", vectorized=True, n_resamples=np.inf, alternative="greater"),
        max(1, args.repeat // 2))
    print(f"two-sample C(19,9) exact  ours {ours * 1e3:8.2f} ms   scipy {ref * 1e3:8.1f} ms   ratio {ref / ours:7.1f}x")

    df = synthetic_frame(args.seeds)
    print(f"report tables on {len(df)} rows:")
    for name in ("delta_nll_table", "contrasts_table", "lyapunov_table", "lyapunov_comparisons", "dynamics_table"):
        t0 = time.perf_counter()
        out = getattr(report, name)(df)
        print(f"  {name:22s} {len(out):4d} rows  {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
