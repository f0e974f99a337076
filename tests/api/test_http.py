"""The HTTP surface on a real uvicorn server (paused queue: no Ray, no training).

Auth, limits, bad input, ids, dedupe, cancel of queued work and the OpenAPI schema.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.api.conftest import ROOT, Server, make_server

pytestmark = pytest.mark.server

TOKEN = "s3cret-token-for-tests"
LIMITS = {"WORLDSWEEP_MAX_SEED_RUNS": "50", "WORLDSWEEP_MAX_STEPS": "1000", "WORLDSWEEP_MAX_SEQ_LEN": "512",
          "WORLDSWEEP_MAX_N_TRAIN": "5000", "WORLDSWEEP_MAX_BODY_BYTES": "20000", "WORLDSWEEP_PAUSED": "1"}
SPEC = {"name": "http-test", "worlds": ["E3_osc_struct", "E3_osc_null"], "models": ["gru"], "hidden_dims": [4],
        "train": {"steps": 5}, "data": {"n_train": 64, "n_eval": 32}, "seeds": {"count": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = make_server(tmp_path_factory.mktemp("http"), token=TOKEN, extra_env=LIMITS).start()
    yield s
    s.stop()


@pytest.fixture
def api(server: Server) -> httpx.Client:
    with server.client() as c:
        yield c


def assert_error(r: httpx.Response, status: int, field: str | None, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail", "field"}
    assert body["field"] == field
    for w in words:
        assert w in body["detail"], body["detail"]
    assert "Traceback" not in r.text


# -- auth ------------------------------------------------------------------------------
def test_probes_and_docs_are_public(server: Server) -> None:
    with server.client(token="") as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        ready = anon.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"]["ok"] and ready.json()["ray"]["ok"]
        assert anon.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic " + TOKEN, "Bearer " + TOKEN + "x", "Bearer"])
def test_missing_or_wrong_token_is_401(server: Server, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "/experiments"), ("GET", "/experiments/x-1"), ("POST", "/experiments"),
                         ("DELETE", "/experiments/x-1"), ("GET", "/experiments/x-1/delta-nll")]:
        r = httpx.request(method, server.url + path, headers=headers, json=SPEC)
        assert_error(r, 401, None)
        assert r.headers["www-authenticate"] == "Bearer"


def test_right_token_is_accepted(api: httpx.Client) -> None:
    r = api.get("/experiments")
    assert r.status_code == 200 and set(r.json()) == {"data", "count"}


def test_non_loopback_bind_without_token_is_refused(tmp_path) -> None:
    s = make_server(tmp_path, host="0.0.0.0")
    out = subprocess.run([sys.executable, "-m", "service.cli", "serve", *s.args], cwd=ROOT, env=s.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "WORLDSWEEP_API_TOKEN" in out.stderr and "0.0.0.0" in out.stderr


def test_a_second_server_on_the_same_database_is_refused(server: Server) -> None:
    other = make_server(server.db.parent, extra_env=LIMITS)  # same store and database files
    out = subprocess.run([sys.executable, "-m", "service.cli", "serve", *other.args], cwd=ROOT, env=other.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "another worldsweep server is already using the database" in out.stdout + out.stderr
    assert server.proc.poll() is None


# -- submitting ------------------------------------------------------------------------
def test_submit_json_then_yaml_dedupes_and_force_makes_a_new_one(api: httpx.Client) -> None:
    spec = {**SPEC, "name": "dedupe"}
    r = api.post("/experiments", json=spec)
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["status"] == "queued" and first["n_seed_runs"] == 4 and first["n_trials"] >= 1
    assert r.headers["location"] == f"/experiments/{first['id']}" == first["location"]
    assert first["id"].startswith("dedupe-") and not first["existing"]

    again = api.post("/experiments", content=yaml.safe_dump(spec), headers={"Content-Type": "application/yaml"})
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["existing"]

    forced = api.post("/experiments", params={"force": "true"}, json=spec)
    assert forced.status_code == 202 and forced.json()["id"] == first["id"] + "-2"

    got = api.get(first["location"]).json()
    assert got["status"] == "queued" and got["spec"]["name"] == "dedupe" and got["spec_hash"] == first["spec_hash"]
    assert got["progress"] == {"seed_runs_total": 4, "seed_runs_done": 0, "seed_runs_failed": 0,
                               "eta_seconds": None, "fraction": 0.0}
    listed = api.get("/experiments", params={"status": "queued"}).json()
    assert {first["id"], first["id"] + "-2"} <= {e["id"] for e in listed["data"]}
    assert listed["count"] == len(listed["data"])
    assert api.get("/experiments", params={"status": "succeeded"}).json() == {"data": [], "count": 0}


def test_cancel_queued_then_resubmit_requeues(api: httpx.Client) -> None:
    created = api.post("/experiments", json={**SPEC, "name": "cancel-me"}).json()
    r = api.delete(created["location"])
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert api.delete(created["location"]).json()["status"] == "cancelled"  # idempotent
    again = api.post("/experiments", json={**SPEC, "name": "cancel-me"})
    assert again.status_code == 202 and again.json()["existing"] and again.json()["status"] == "queued"
    assert again.json()["id"] == created["id"]


def test_stats_of_an_experiment_without_rows_are_empty_and_partial(api: httpx.Client) -> None:
    created = api.post("/experiments", json={**SPEC, "name": "empty"}).json()
    for path in ("delta-nll", "contrasts", "lyapunov", "dynamics"):
        body = api.get(f"{created['location']}/{path}").json()
        assert body["data"] == [] and body["n_seed_runs"] == 0 and body["partial"] is True
        assert body["n_seed_runs_planned"] == 4
    res = api.get(f"{created['location']}/results").json()
    assert res["count"] == 0 and res["data"] == [] and "delta_nll" in res["columns"]
    csv = api.get(f"{created['location']}/results", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv") and "delta_nll" in csv.text.splitlines()[0]


# -- bad input -------------------------------------------------------------------------
def _post(api: httpx.Client, body: str | bytes | dict, ctype: str = "application/json") -> httpx.Response:
    if isinstance(body, dict):
        return api.post("/experiments", json=body)
    return api.post("/experiments", content=body, headers={"Content-Type": ctype})


BAD_SPECS = [
    # (body, content type, status, field, words in the message)
    ('{"name": "x", "worlds": [', "application/json", 422, "body", ["malformed JSON", "line 1"]),
    ("name: x\nworlds: [E3_osc_struct\n", "application/yaml", 422, "body", ["malformed YAML", "line"]),
    ("x: &a [1]\ny: *a\n", "application/yaml", 422, "body", ["alias"]),
    ("- just\n- a list\n", "application/yaml", 422, "body", ["mapping"]),
    ("", "application/json", 422, "body", ["empty"]),
    ("name=x", "application/x-www-form-urlencoded", 415, None, ["Content-Type", "application/yaml"]),
    ({**SPEC, "worlds": ["E9_nope"]}, "", 422, "worlds[0]", ["unknown world", "E9_nope"]),
    ({**SPEC, "seeds": {"count": -3}}, "", 422, "seeds.count", ["-3"]),
    ({**SPEC, "seeds": [1, -2]}, "", 422, "seeds[1]", ["-2"]),
    ({**SPEC, "colour": "blue"}, "", 422, "colour", ["unknown key"]),
    ({**SPEC, "name": "a..b"}, "", 422, "name", [".."]),
    ({**SPEC, "seeds": {"count": 30}}, "", 422, "seeds", ["60", "limit of 50"]),
    ({**SPEC, "train": {"steps": 5000}}, "", 422, "train.steps", ["5000", "limit of 1000"]),
    ({**SPEC, "data": {"n_train": 9000}}, "", 422, "data.n_train", ["9000", "limit of 5000"]),
    ({**SPEC, "worlds": [{"id": "E3_osc_struct", "params": {"T": 1024}}]}, "", 422, "worlds[0].params.T",
     ["1024", "limit of 512"]),
]


@pytest.mark.parametrize("body,ctype,status,field,words", BAD_SPECS,
                         ids=["json", "yaml", "yaml-alias", "not-mapping", "empty", "form", "unknown-world",
                              "negative-count", "negative-seed", "unknown-key", "dotdot-name", "seed-runs", "steps", "n_train",
                              "seq_len"])
def test_bad_specs_are_4xx_naming_the_problem(server: Server, api: httpx.Client, body, ctype, status, field,
                                              words) -> None:
    assert_error(_post(api, body, ctype), status, field, *words)
    assert server.proc.poll() is None and api.get("/healthz").status_code == 200


def test_oversized_body_is_413_declared_or_streamed(server: Server, api: httpx.Client) -> None:
    big = json.dumps({**SPEC, "description": "x" * 50_000})
    assert_error(_post(api, big), 413, "body", "20000 bytes")

    def chunks():  # no Content-Length: the server must count while reading
        for _ in range(10):
            yield b" " * 5000

    r = api.post("/experiments", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "body", "20000 bytes")
    assert api.get("/healthz").status_code == 200


@pytest.mark.parametrize("path,status", [
    ("/experiments/no-such-experiment-0123", 404),
    ("/experiments/..%2F..%2Fetc%2Fpasswd", 404),  # decoded "/" never matches one path segment
    ("/experiments/%2e%2e", 422),
    ("/experiments/.hidden", 422),
    ("/experiments/a%00b", 422),
    ("/experiments/a%20b/results", 422),
    ("/experiments/" + "a" * 200, 422),
])
def test_unknown_or_malicious_ids(api: httpx.Client, path: str, status: int) -> None:
    for suffix in ("", "/results", "/delta-nll"):
        p = path if path.endswith("/results") else path + suffix
        r = api.get(p)
        assert r.status_code == status, (p, r.text)
        assert set(r.json()) == {"detail", "field"}
    if status == 404 and "%2F" not in path:
        assert "not found" in api.get(path).json()["detail"]
        assert api.delete(path).status_code == 404


def test_bad_query_parameters(api: httpx.Client) -> None:
    created = api.post("/experiments", json={**SPEC, "name": "filters"}).json()
    assert_error(api.get(f"{created['location']}/results", params={"bogus": "1"}), 422, "bogus", "unknown filter")
    assert_error(api.get(f"{created['location']}/results", params={"hidden_dim": "x"}), 422, "hidden_dim", "'x'")
    assert_error(api.get(f"{created['location']}/results", params={"format": "xml"}), 422, "format")
    assert_error(api.get("/experiments", params={"status": "exploded"}), 422, "status")


def store_rows(server: Server, experiment_id: str, spec: dict) -> int:
    """Rows for every seed-run of `spec` written straight into the server's store (as a
    worker would; invalid rows need no training). Returns how many."""
    from service.driver import _invalid_rows
    from service.spec import config_id, load_spec
    from service.store import ResultStore
    from service.sweep import grid_members

    loaded = load_spec(spec)
    members = grid_members(loaded)
    rows = _invalid_rows(members, "written by the test")
    for row, (c, _s) in zip(rows, members, strict=True):
        row.update(experiment=experiment_id, spec_hash=loaded.content_hash(), config_id=config_id(c))
    ResultStore(server.store).write_rows(experiment_id, "test-chunk", rows)
    return len(rows)


def test_results_pages(server: Server, api: httpx.Client) -> None:
    spec = {**SPEC, "name": "pages", "seeds": {"count": 5}}
    created = api.post("/experiments", json=spec).json()
    n = store_rows(server, created["id"], spec)
    url = f"{created['location']}/results"
    full = api.get(url).json()
    assert full["count"] == full["total"] == n == 10 and full["offset"] == 0 and full["limit"] is None
    keys = [(r["world"], r["seed"]) for r in full["data"]]
    assert len(set(keys)) == n and api.get(url).json()["data"] == full["data"]  # stable order
    pages = []
    for offset in range(0, n + 3, 3):
        page = api.get(url, params={"limit": 3, "offset": offset}).json()
        assert page["total"] == n and page["count"] == len(page["data"]) == max(0, min(3, n - offset))
        assert page["limit"] == 3 and page["offset"] == offset
        pages += page["data"]
    assert pages == full["data"]
    # paging composes with column filters; total counts the filtered rows
    some = api.get(url, params={"world": "E3_osc_null", "limit": 2, "offset": 1}).json()
    assert some["total"] == 5 and some["count"] == 2 and some["filters"] == {"world": ["E3_osc_null"]}
    assert some["data"] == [r for r in full["data"] if r["world"] == "E3_osc_null"][1:3]
    # without limit, offset alone skips
    assert api.get(url, params={"offset": 7}).json()["data"] == full["data"][7:]
    assert len(api.get(url, params={"format": "csv"}).text.strip().splitlines()) == n + 1
    for bad in ({"limit": 0}, {"limit": 100_001}, {"limit": "x"}):
        assert_error(api.get(url, params=bad), 422, "limit")
    assert_error(api.get(url, params={"offset": -1}), 422, "offset")


# -- schema ----------------------------------------------------------------------------
ENDPOINTS = {
    ("get", "/healthz"): "Health", ("get", "/readyz"): "Readiness",
    ("post", "/experiments"): "ExperimentCreated", ("get", "/experiments"): "ExperimentList",
    ("get", "/experiments/{experiment_id}"): "Experiment", ("delete", "/experiments/{experiment_id}"): "Experiment",
    ("get", "/experiments/{experiment_id}/results"): "ResultsResponse",
    ("get", "/experiments/{experiment_id}/delta-nll"): "DeltaNllResponse",
    ("get", "/experiments/{experiment_id}/contrasts"): "ContrastsResponse",
    ("get", "/experiments/{experiment_id}/lyapunov"): "LyapunovResponse",
    ("get", "/experiments/{experiment_id}/dynamics"): "DynamicsResponse",
}


def test_openapi_describes_every_endpoint_with_typed_responses(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    ops = {(m, p): op for p, methods in schema["paths"].items() for m, op in methods.items()}
    assert set(ops) == set(ENDPOINTS)
    components = schema["components"]["schemas"]
    for key, model in ENDPOINTS.items():
        op = ops[key]
        ok = op["responses"].get("202") or op["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}, key
        assert components[model]["properties"], model
        assert op["summary"] and not op["summary"].istitle(), key  # a docstring line, not "Get Results"
        if key[1].startswith("/experiments"):
            assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    body = ops[("post", "/experiments")]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/ExperimentSpec"}
    assert "application/yaml" in body and "worlds" in components["ExperimentSpec"]["properties"]
    # the stats rows carry the documented field names
    assert {"n", "n_invalid", "mean", "std", "ci95", "ci95_bca", "p_value", "exact", "p_holm", "p_bh"} <= set(
        components["DeltaNllRow"]["properties"])
    assert {"n_pairs", "mean_diff", "ci95", "p_value", "p_two_sample", "p_holm", "p_bh", "cohen_dz",
            "seeds_for_80pct_power"} <= set(components["ContrastRow"]["properties"])
    assert {"lambda1_mean", "lambda1_ci95", "gap_mean", "sum_mean", "ky_dim_mean", "label_counts",
            "mean_spectrum"} <= set(components["LyapunovRow"]["properties"])
    assert {"p_welch", "p_permutation"} <= set(components["LyapunovComparison"]["properties"])
    assert components["Progress"]["required"] == ["seed_runs_total", "seed_runs_done", "seed_runs_failed",
                                                  "eta_seconds", "fraction"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_ray_readiness_is_a_tcp_connect_to_the_gcs() -> None:
    import socket

    from service.api.routes.health import check_ray
    from service.settings import Settings
    from tests.raytools import free_port

    assert check_ray(Settings()).ok and "embedded" in check_ray(Settings()).detail
    closed = check_ray(Settings(ray_address=f"127.0.0.1:{free_port()}"))
    assert not closed.ok and "unreachable" in closed.detail
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert check_ray(Settings(ray_address=f"127.0.0.1:{port}")).ok
        assert check_ray(Settings(ray_address=f"ray://127.0.0.1:{port}")).ok


# -- failures inside the server --------------------------------------------------------
def test_unreadable_store_is_503_and_the_server_keeps_serving(server: Server, api: httpx.Client) -> None:
    created = api.post("/experiments", json={**SPEC, "name": "broken-store"}).json()
    part = server.store / f"experiment={created['id']}" / "part-garbage.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"this is not parquet")
    for path in ("results", "delta-nll", "contrasts"):
        assert_error(api.get(f"{created['location']}/{path}"), 503, None, created["id"])
    part.unlink()
    assert api.get(f"{created['location']}/results").status_code == 200


def test_unexpected_exceptions_are_a_generic_500_and_the_connection_survives(tmp_path) -> None:
    import asyncio

    from service.api import create_app
    from service.settings import Settings

    app = create_app(Settings(store=str(tmp_path / "store"), db_path=tmp_path / "x.db", paused=True))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.get(p) for p in ("/boom", "/boom", "/healthz")]

    first, second, health = asyncio.run(calls())
    for r in (first, second):
        assert r.status_code == 500
        assert r.json() == {"detail": "internal server error; see the server log", "field": None}
    assert health.status_code == 200
