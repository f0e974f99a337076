"""service.client.Client and the `submit` / `status` / `cancel` verbs against a real server
(paused queue: nothing trains)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from service.cli import main
from service.client import Client, ServerError
from tests.api.conftest import Server, make_server
from tests.raytools import free_port
from worlds.errors import ExperimentNotFound, SpecError

pytestmark = pytest.mark.server
TOKEN = "client-test-token"
SPEC = {"name": "client-test", "worlds": ["E1_drift_struct", "E1_drift_null"], "train": {"steps": 5},
        "data": {"n_train": 32, "n_eval": 16}, "seeds": {"count": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = make_server(tmp_path_factory.mktemp("client"), token=TOKEN, extra_env={"WORLDSWEEP_PAUSED": "1"}).start()
    yield s
    s.stop()


def test_client_round_trip(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    with Client(server.url, token=TOKEN) as c:
        assert c.health()["status"] == "ok" and c.ready()["status"] == "ready"
        created = c.submit(path)
        assert created["status"] == "queued" and created["n_seed_runs"] == 4 and not created["existing"]
        assert c.submit(SPEC)["existing"] and c.submit(json.dumps(SPEC))["id"] == created["id"]
        assert c.submit(SPEC, force=True)["id"] == created["id"] + "-2"
        assert c.get(created["id"])["spec"]["name"] == "client-test"
        assert {e["id"] for e in c.list(status="queued")} >= {created["id"], created["id"] + "-2"}
        assert c.results(created["id"]) == []
        from tests.api.test_http import store_rows

        n = store_rows(server, created["id"], SPEC)
        rows = c.results(created["id"])
        assert len(rows) == n == 4
        assert c.results(created["id"], limit=3) + c.results(created["id"], limit=3, offset=3) == rows
        page = c.results_page(created["id"], limit=1, offset=1, world="E1_drift_null")
        assert page["total"] == 2 and page["count"] == 1
        assert page["data"] == [r for r in rows if r["world"] == "E1_drift_null"][1:]
        with pytest.raises(SpecError) as e:
            c.results(created["id"], limit=0)
        assert e.value.field == "limit"
        assert isinstance(c.results_frame(created["id"], model="gru"), pd.DataFrame)
        assert c.delta_nll(created["id"])["partial"] is True
        assert c.cancel(created["id"])["status"] == "cancelled"
        with pytest.raises(ExperimentNotFound):
            c.get("never-submitted")
        with pytest.raises(SpecError) as e:
            c.submit({**SPEC, "hidden_dims": [0]})
        assert e.value.field == "hidden_dims[0]"
        assert c.cancel(created["id"])["status"] == "cancelled"  # twice: idempotent
        with pytest.raises(SpecError) as e:
            c.results(created["id"], format="xml")
        assert e.value.field == "format"
    with Client(server.url, token="wrong") as bad, pytest.raises(ServerError) as e:
        bad.list()
    assert e.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}") as nobody, pytest.raises(ServerError) as e:
        nobody.health()
    assert e.value.status == 0 and "cannot reach" in str(e.value)


def test_cli_submit_status_cancel(server: Server, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLDSWEEP_API_TOKEN", TOKEN)
    monkeypatch.setenv("WORLDSWEEP_SERVER", server.url)
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "name": "cli-test"}))
    assert main(["submit", str(path)]) == 0
    eid = capsys.readouterr().out.split()[0]
    assert eid.startswith("cli-test-")
    assert main(["status"]) == 0 and eid in capsys.readouterr().out
    assert main(["status", eid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    assert main(["cancel", eid]) == 0 and "cancelled" in capsys.readouterr().out
    # library errors: one line on stderr, exit code 2
    assert main(["status", "no-such-experiment"]) == 2
    assert "not found" in capsys.readouterr().err
    path.write_text("name: cli-test\nworlds: [E9_nope]\n")
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "worlds[0]" in err and "E9_nope" in err and len(err.strip().splitlines()) == 1
