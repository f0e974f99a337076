"""`worldsweep run` (run or resume a sweep on Ray, then print its results) and
`worldsweep results` (re-read an experiment from the store, or from a server)."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

FORMATS = ("table", "csv", "json", "parquet")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run (or resume) the sweep of a spec file on Ray and print its results",
        description="Run the sweep of SPEC on Ray Tune (a local Ray unless --ray-address / "
                    "RAY_ADDRESS names a cluster), store one row per seed, then print the "
                    "results. The experiment id is <name>-<spec hash>: re-running the same "
                    "spec resumes it, training only what is not stored yet.")
    p.add_argument("spec", help="experiment spec, YAML or JSON (e.g. specs/quick.yaml)")
    p.add_argument("--store", help="result store URI (default $WORLDSWEEP_STORE or ./worldsweep-data)")
    p.add_argument("--ray-address", help="join this Ray cluster (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the summary and tables as JSON")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser(
        "results", help="print an experiment's results from the store (or a server)",
        description="`table` prints the ΔNLL, contrast and Lyapunov tables; csv / json / parquet "
                    "give the per-seed rows.")
    p.add_argument("experiment", help="experiment id (as printed by `worldsweep run`)")
    p.add_argument("--store", help="result store URI (default $WORLDSWEEP_STORE or ./worldsweep-data)")
    p.add_argument("--server", help="ask this worldsweep server instead of reading the store")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", help="write to this file instead of stdout (required for parquet on a terminal)")
    p.set_defaults(func=cmd_results)


# ---- run -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from service.spec import load_spec
    from service.store import ResultStore

    spec = load_spec(Path(args.spec))
    store = ResultStore(args.store)
    experiment_id = spec.experiment_id()
    from service.driver import run_experiment  # imports ray: only once the input is known good

    print(f"experiment {experiment_id}: {spec.n_seed_runs} seed-runs in {spec.n_trials} trials; "
          f"store {store.uri}", file=sys.stderr)
    bar = _ProgressBar(spec.n_seed_runs, experiment_id)
    try:
        summary = run_experiment(spec, experiment_id, store, ray_address=args.ray_address,
                                 progress=bar.update, num_cpus=args.cpus)
    finally:
        bar.close()
    df = store.read(experiment_id)
    tables = result_tables(df, planned=spec.n_seed_runs)
    incomplete = summary.seed_runs_done + summary.seed_runs_failed < summary.seed_runs_total
    if args.json:
        print(json.dumps(_clean({"experiment": experiment_id, "summary": summary.to_dict(), **tables}),
                         indent=2))
    else:
        print(f"{experiment_id}: {summary.seed_runs_done} seed-runs valid, {summary.seed_runs_failed} "
              f"failed, {summary.seed_runs_skipped} already stored; {summary.elapsed_seconds:.1f} s")
        print(render(tables))
    if incomplete:
        print(f"worldsweep run: stopped before the end; re-run `worldsweep run {args.spec}` to resume",
              file=sys.stderr)
        return 130
    return 0


class _ProgressBar:
    """tqdm on stderr: seed-runs finished / total, failures, ETA from the driver."""

    def __init__(self, total: int, label: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="seed-run", desc=label, file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def update(self, p: Any) -> None:
        self.bar.n = p.seed_runs_done + p.seed_runs_failed
        eta = "?" if p.eta_seconds is None else _duration(p.eta_seconds)
        training = getattr(p, "train_fraction", None)
        now = "" if training is None else f", training {getattr(p, 'seed_runs_training', 0)} at {training:.0%}"
        self.bar.set_postfix_str(f"failed={p.seed_runs_failed}{now}, eta={eta}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---- results ---------------------------------------------------------------------------------


def cmd_results(args: argparse.Namespace) -> int:
    if args.server:
        return _results_from_server(args)
    from service.store import ResultStore
    from worlds.errors import ExperimentNotFound

    store = ResultStore(args.store)
    if args.experiment not in store.experiments():
        raise ExperimentNotFound(args.experiment)
    df = store.read(args.experiment)
    if args.format == "table":
        return _emit(render(result_tables(df)) + "\n", args.out)
    if args.format == "json":
        return _emit(json.dumps(_clean(records(df)), indent=2) + "\n", args.out)
    if args.format == "csv":
        return _emit(csv_text(df), args.out)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return _emit(buf.getvalue(), args.out)


def _results_from_server(args: argparse.Namespace) -> int:
    from service.client import Client

    with Client(args.server) as client:
        if args.format == "table":
            tables = {"delta_nll": client.delta_nll(args.experiment),
                      "contrasts": client.contrasts(args.experiment),
                      "lyapunov": client.lyapunov(args.experiment)}
            return _emit(render(tables) + "\n", args.out)
        data = client.results(args.experiment, args.format)
        if args.format == "json":
            data = json.dumps(data, indent=2) + "\n"
        return _emit(data, args.out)


def _emit(data: str | bytes, out: str | None) -> int:
    if out:
        Path(out).write_bytes(data if isinstance(data, bytes) else data.encode())
        return 0
    if isinstance(data, bytes):
        if sys.stdout.isatty():
            from worlds.errors import SpecError

            raise SpecError("--out", "parquet is binary: give --out FILE or redirect stdout")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    sys.stdout.write(data)
    return 0


# ---- tables shared by `run` and `results` ----------------------------------------------------


def result_tables(df: Any, planned: int | None = None) -> dict[str, dict[str, Any]]:
    """The ΔNLL, contrast and Lyapunov tables (stats.report) with the server's envelope fields."""
    n_valid = int(df["valid"].fillna(False).astype(bool).sum()) if len(df) else 0
    envelope = {"n_seed_runs": len(df), "n_valid": n_valid,
                "partial": planned is not None and len(df) < planned}

    def table(name: str) -> list[dict[str, Any]]:
        if not n_valid:
            return []
        from stats import report

        return _clean(getattr(report, name)(df))

    return {
        "delta_nll": {**envelope, "data": table("delta_nll_table")},
        "contrasts": {**envelope, "data": table("contrasts_table")},
        "lyapunov": {**envelope, "data": table("lyapunov_table"), "comparisons": table("lyapunov_comparisons")},
    }


def render(tables: dict[str, dict[str, Any]]) -> str:
    """The same text tables `worldsweep submit --wait` prints (service.cli_client)."""
    from service.cli_client import render_tables

    return render_tables(tables)


def records(df: Any) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def csv_text(df: Any) -> str:
    out = df.copy()
    if "lyap_spectrum" in out.columns:  # a JSON array per cell, not a numpy repr
        out["lyap_spectrum"] = out["lyap_spectrum"].map(lambda v: json.dumps(_plain(v)))
    return out.to_csv(index=False)


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN / inf -> null, numpy -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return _plain(obj)
