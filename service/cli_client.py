"""CLI verbs of the HTTP service: `serve`, `submit`, `status`, `cancel`.

The token comes from WORLDSWEEP_API_TOKEN (never a flag: flags end up in shell history and
`ps`); the server URL from --server, else WORLDSWEEP_SERVER, else http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.client import DEFAULT_SERVER, FINAL, Client, default_server


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP API (uvicorn) and its experiment queue",
                              description="Run the HTTP API. Binds 127.0.0.1 unless told otherwise; "
                                          "binding any other address requires WORLDSWEEP_API_TOKEN.")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or WORLDSWEEP_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, or WORLDSWEEP_PORT)")
    p.add_argument("--store", default=None, help="result store URI (default WORLDSWEEP_STORE or ./worldsweep-data)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to run on (default RAY_ADDRESS; "
                                                       "none: each experiment starts a local Ray)")
    p.add_argument("--db", default=None, help="experiment database file (default <store>/_server/worldsweep.db)")
    p.add_argument("--max-concurrent", type=int, default=None, help="experiments run at once (default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    server_help = f"server URL (default WORLDSWEEP_SERVER or {DEFAULT_SERVER})"
    p = subparsers.add_parser("submit", help="submit a spec to a worldsweep server")
    p.add_argument("spec", help="spec file (.yaml / .json)")
    p.add_argument("--server", default=None, help=server_help)
    p.add_argument("--wait", action="store_true", help="follow progress, then print the results tables")
    p.add_argument("--force", action="store_true", help="queue a new experiment even if this spec ran before")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--connect-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="keep trying to reach a server that is still starting for this long (default 0)")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="list experiments, or show one")
    p.add_argument("id", nargs="?", help="experiment id (omit to list all)")
    p.add_argument("--server", default=None, help=server_help)
    p.add_argument("--status", dest="only", default=None, help="list only experiments in this state")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("cancel", help="cancel a queued or running experiment (stored rows are kept)")
    p.add_argument("id", help="experiment id")
    p.add_argument("--server", default=None, help=server_help)
    p.set_defaults(func=cmd_cancel)


# -- serve -----------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from service.settings import Settings, is_loopback

    overrides: dict[str, Any] = {k: v for k, v in {
        "host": args.host, "port": args.port, "store": args.store, "ray_address": args.ray_address,
        "db_path": args.db, "max_concurrent": args.max_concurrent}.items() if v is not None}
    settings = Settings(**overrides)
    if not is_loopback(settings.host) and settings.token() is None:
        print(f"worldsweep serve: error: refusing to bind {settings.host!r} without an API token: "
              "anyone who can reach it could run and cancel sweeps. Set WORLDSWEEP_API_TOKEN "
              "(e.g. `export WORLDSWEEP_API_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')`) "
              "or bind 127.0.0.1.", file=sys.stderr)
        return 2
    import logging

    import uvicorn

    from service.api import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"worldsweep: API on http://{settings.host}:{settings.port} (docs at /docs), "
          f"store {settings.resolved_store()}, database {settings.resolved_db_path()}, "
          f"Ray {settings.ray_address or 'embedded (local per experiment)'}", file=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=30)
    return 0


# -- client verbs ----------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Client:
    return Client(args.server or default_server())


def _progress_line(exp: dict[str, Any]) -> str:
    p = exp["progress"]
    eta = f", eta {p['eta_seconds']:.0f} s" if p.get("eta_seconds") is not None else ""
    return (f"{exp['id']}  {exp['status']:<9}  {p['seed_runs_done']}/{p['seed_runs_total']} seed-runs"
            f"{', ' + str(p['seed_runs_failed']) + ' failed' if p['seed_runs_failed'] else ''}{eta}")


def _await_server(client: Client, timeout: float) -> None:
    import time

    from service.client import ServerError

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.health()
            return
        except ServerError as e:
            if e.status != 0 or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.connect_timeout > 0:
            _await_server(client, args.connect_timeout)
        created = client.submit(args.spec, force=args.force)
        if not args.wait:
            if args.json:
                print(json.dumps(created, indent=2))
            else:
                note = " (this spec was submitted before)" if created["existing"] else ""
                print(f"{created['id']}  {created['status']}  {created['n_seed_runs']} seed-runs "
                      f"in {created['n_trials']} trials{note}")
            return 0
        print(f"{created['id']}: {created['n_seed_runs']} seed-runs in {created['n_trials']} trials "
              f"({'existing' if created['existing'] else 'new'}, {created['status']})", file=sys.stderr)
        final = _follow(client, created["id"])
        if final["status"] != "succeeded":
            print(f"experiment {final['id']} {final['status']}" + (f": {final['error']}" if final["error"] else ""),
                  file=sys.stderr)
        tables = {"delta_nll": client.delta_nll(final["id"]), "contrasts": client.contrasts(final["id"]),
                  "lyapunov": client.lyapunov(final["id"])}
        if args.json:
            print(json.dumps({"experiment": final, **tables}, indent=2))
        else:
            print(render_tables(tables))
        return 0 if final["status"] == "succeeded" else 1


def _follow(client: Client, experiment_id: str) -> dict[str, Any]:
    from tqdm import tqdm

    bar = tqdm(total=None, unit="seed-run", desc=experiment_id, file=sys.stderr, dynamic_ncols=True)

    def update(exp: dict[str, Any]) -> None:
        p = exp["progress"]
        bar.total = p["seed_runs_total"]
        bar.n = p["seed_runs_done"] + p["seed_runs_failed"]
        bar.set_postfix(status=exp["status"], failed=p["seed_runs_failed"], refresh=False)
        bar.refresh()

    try:
        return client.wait(experiment_id, progress=update, poll=1.0)
    finally:
        bar.close()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


KEEP = ("world", "struct_world", "null_world", "model")  # always shown, even when constant


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(no rows yet)"
    columns = [c for c in columns if any(c in r for r in rows)]
    if len(rows) > 1:  # an axis with a single value says nothing per row
        columns = [c for c in columns if c in KEEP or c not in GROUP
                   or len({json.dumps(r.get(c), default=str) for r in rows}) > 1]
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


GROUP = ["world", "model", "hidden_dim", "mode", "time_cond", "lr"]


def render_tables(tables: dict[str, dict[str, Any]]) -> str:
    """The server's ΔNLL, contrast and Lyapunov tables as text (the `worldsweep run` summary)."""
    d, c, ly = tables["delta_nll"], tables["contrasts"], tables["lyapunov"]
    out = [f"ΔNLL per group ({d['n_valid']} valid of {d['n_seed_runs']} seed-runs"
           f"{', partial' if d['partial'] else ''}):",
           _table(d["data"], GROUP + ["n", "n_invalid", "mean", "ci95", "p_value", "p_holm"])]
    if c["data"]:
        out += ["", "struct − null contrasts (paired by seed):",
                _table(c["data"], ["struct_world", "null_world", "model", "hidden_dim", "mode", "time_cond", "lr",
                                   "n_pairs", "mean_diff", "ci95", "p_value", "p_holm", "cohen_dz"])]
    if any(r.get("lambda1_mean") is not None for r in ly["data"]):
        out += ["", "Lyapunov λ1 per group:",
                _table(ly["data"], GROUP + ["n", "lambda1_mean", "lambda1_ci95", "ky_dim_mean"])]
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.id:
            exp = client.get(args.id)
            if args.json:
                print(json.dumps(exp, indent=2))
                return 0
            print(_progress_line(exp))
            for key in ("created_at", "started_at", "finished_at"):
                if exp.get(key):
                    print(f"  {key:<12} {exp[key]}")
            if exp.get("error"):
                print(f"  error        {exp['error']}")
            return 0
        experiments = client.list(status=args.only)
        if args.json:
            print(json.dumps(experiments, indent=2))
        elif not experiments:
            print("no experiments")
        for exp in experiments if not args.json else []:
            print(_progress_line(exp))
        return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        exp = client.cancel(args.id)
        print(f"{exp['id']}  {exp['status']}  (kept {exp['progress']['seed_runs_done']} stored seed-runs)")
        return 0 if exp["status"] in FINAL else 1
