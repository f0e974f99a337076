"""The Parquet result store: typed round trip, atomic chunk files, replace-not-duplicate,
concurrent writers, and a writer killed mid-write leaving nothing partial visible."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.store import COLUMNS, SCHEMA, SCHEMA_VERSION, STALE_TEMP_SECONDS, ResultStore
from trainers.config import RESULT_COLUMNS
from worlds.errors import SpecError, StoreError

VALUES = {"str": "E3_osc_struct", "int": 16, "float": 0.125, "bool": True, "list<float>": [0.5, -0.25, -1.5]}


def row(seed: int = 1, config: str = "cfg", **changes) -> dict:
    r = {name: VALUES[kind] for name, kind in COLUMNS.items() if name not in ("chunk_id", "written_at")}
    r.update(seed=seed, config_id=config, spec_hash="h1", experiment="exp", search_sample=-1)
    r.update(changes)
    return r


def test_schema_covers_every_result_column() -> None:
    assert set(RESULT_COLUMNS) < set(SCHEMA.names)
    assert SCHEMA.field("lyap_spectrum").type == pa.list_(pa.float64())
    assert SCHEMA.field("hidden_dim").type == pa.int64() and SCHEMA.field("valid").type == pa.bool_()
    assert SCHEMA.metadata[b"worldsweep.schema_version"] == str(SCHEMA_VERSION).encode()


def test_round_trip_every_column_type(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    rows = [row(1), row(2, delta_nll=math.nan, lyap_spectrum=None, valid=False, invalid_reason="diverged")]
    store.write_rows("exp", "c1", rows)
    df = store.read("exp")
    assert list(df.columns) == SCHEMA.names and len(df) == 2
    first = df[df.seed == 1].iloc[0]
    for name, kind in RESULT_COLUMNS.items():
        if name == "seed":
            continue
        value = first[name]
        if kind == "list<float>":
            assert list(value) == VALUES[kind]
        else:
            assert value == VALUES[kind] and type(value.item() if hasattr(value, "item") else value) is type(VALUES[kind]), name
    second = df[df.seed == 2].iloc[0]
    assert math.isnan(second["delta_nll"]) and second["lyap_spectrum"] is None and not second["valid"]
    assert first["chunk_id"] == "c1" and first["written_at"] > 0
    # the file itself carries the schema and its version
    (path,) = (tmp_path / "experiment=exp").glob("part-*.parquet")
    assert path.name == "part-c1.parquet"
    meta = pq.read_schema(path).metadata
    assert meta[b"worldsweep.schema_version"] == str(SCHEMA_VERSION).encode()
    assert store.done_keys("exp") == {("cfg", 1), ("cfg", 2)}
    assert store.experiments() == ["exp"]


def test_rewrite_replaces_and_read_dedups(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_rows("exp", "c1", [row(1, delta_nll=1.0), row(2, delta_nll=2.0)])
    store.write_rows("exp", "c1", [row(1, delta_nll=10.0), row(2, delta_nll=20.0)])
    assert len(list((tmp_path / "experiment=exp").iterdir())) == 1
    time.sleep(0.01)
    store.write_rows("exp", "c2", [row(2, delta_nll=200.0), row(3, delta_nll=3.0)])  # seed 2 again, newer
    df = store.read("exp")
    assert df.set_index("seed")["delta_nll"].to_dict() == {1: 10.0, 2: 200.0, 3: 3.0}
    # same seed and config under another spec hash is another seed-run
    store.write_rows("exp", "c3", [row(1, spec_hash="h2")])
    assert len(store.read("exp")) == 4


def test_filters_coerce_query_strings(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_rows("exp", "c1", [row(1, hidden_dim=4, model="gru"), row(2, hidden_dim=8, model="rnn_tanh", valid=False)])
    assert store.read("exp", {"hidden_dim": "8"}).seed.tolist() == [2]
    assert store.read("exp", {"model": ["gru", "lstm"]}).seed.tolist() == [1]
    assert store.read("exp", {"valid": "false"}).seed.tolist() == [2]
    assert store.read("exp", {"lr": "0.125"}).seed.tolist() == [1, 2]
    with pytest.raises(SpecError, match="`colour`"):
        store.read("exp", {"colour": "red"})
    with pytest.raises(SpecError, match="`hidden_dim`"):
        store.read("exp", {"hidden_dim": "big"})


def test_empty_unknown_and_bad_input(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.read("nothing").empty and list(store.read("nothing").columns) == SCHEMA.names
    assert store.done_keys("nothing") == set() and store.experiments() == []
    with pytest.raises(StoreError, match="colour"):
        store.write_rows("exp", "c1", [{**row(1), "colour": "red"}])
    with pytest.raises(StoreError, match="schema"):
        store.write_rows("exp", "c1", [row(1, hidden_dim="sixteen")])
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(SpecError):
            store.write_rows(bad, "c1", [row(1)])
        with pytest.raises(SpecError):
            store.write_rows("exp", bad, [row(1)])
    assert not (tmp_path.parent / "escape").exists()
    store.check_writable()


def test_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLDSWEEP_STORE", str(tmp_path / "envstore"))
    assert ResultStore().uri == str(tmp_path / "envstore") and ResultStore().is_local
    monkeypatch.delenv("WORLDSWEEP_STORE")
    monkeypatch.chdir(tmp_path)
    assert ResultStore().uri == str(tmp_path / "worldsweep-data")
    assert ResultStore(f"file://{tmp_path}/x").uri == str(tmp_path / "x")
    assert ResultStore.from_config(ResultStore(tmp_path).to_config()).uri == str(tmp_path)


def test_unwritable_store_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        ResultStore(blocker / "store").check_writable()


def test_concurrent_threads_same_and_different_chunks(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for k in range(5):
                store.write_rows("exp", f"own{i}", [row(100 * i + s, delta_nll=float(k)) for s in range(20)])
                store.write_rows("exp", "shared", [row(s, delta_nll=float(i)) for s in range(20)])
                store.read("exp")  # readers never trip over a half-written file
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    df = store.read("exp")
    assert len(df) == 4 * 20 + 20 and not df.duplicated(["config_id", "seed"]).any()
    assert sorted(p.name for p in (tmp_path / "experiment=exp").iterdir()) == sorted(
        ["part-shared.parquet"] + [f"part-own{i}.parquet" for i in range(1, 5)])


WRITER = textwrap.dedent("""
    import sys
    from service.store import ResultStore
    from tests.service.test_store import row
    store = ResultStore(sys.argv[1])
    n = int(sys.argv[3])
    for k in range(10**6):
        store.write_rows("exp", sys.argv[2], [row(s, delta_nll=float(k)) for s in range(n)])
        print(k, flush=True)
""")


def _spawn_writer(root: Path, chunk: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), chunk, str(n)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])


def test_concurrent_processes_same_and_different_chunks(tmp_path: Path) -> None:
    procs = [_spawn_writer(tmp_path, chunk, 500) for chunk in ("a", "b")]
    deadline = time.time() + 60
    store = ResultStore(tmp_path)
    seen = 0
    while time.time() < deadline and seen < 3:
        df = store.read("exp")  # concurrent readers see whole chunks only
        assert len(df) in (0, 500)  # chunks a and b hold the same seed-runs: dedup to 500
        seen += len(df) > 0
        time.sleep(0.2)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    for path in (tmp_path / "experiment=exp").glob("part-*.parquet"):
        assert pq.read_table(path).num_rows == 500
    assert seen >= 3


def test_killed_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    # Big chunks so that a kill at a random moment lands mid-write most of the time.
    proc = _spawn_writer(tmp_path, "big", 40000)
    assert proc.stdout is not None
    proc.stdout.readline()  # at least one complete write
    time.sleep(0.37)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    visible = list((tmp_path / "experiment=exp").glob("part-*.parquet"))
    assert [p.name for p in visible] == ["part-big.parquet"]
    assert pq.read_table(visible[0]).num_rows == 40000
    df = ResultStore(tmp_path).read("exp")
    assert len(df) == 40000 and df["valid"].all()


def test_stale_temp_files_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write_rows("exp", "c1", [row(1)])
    part = tmp_path / "experiment=exp"
    stale, fresh = part / ".tmp-dead-abc.parquet", part / ".tmp-live-def.parquet"
    stale.write_bytes(b"half a parquet file")
    fresh.write_bytes(b"being written")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    # an old file that is not a temp file, and an old temp *directory*, are not touched
    other = part / "notes.txt"
    other.write_text("x")
    os.utime(other, (old, old))
    (part / ".tmp-dir").mkdir()
    os.utime(part / ".tmp-dir", (old, old))

    store.write_rows("exp", "c2", [row(2)])  # a write into the partition cleans it
    assert not stale.exists() and fresh.exists() and other.exists() and (part / ".tmp-dir").is_dir()
    assert sorted(store.read("exp").seed) == [1, 2]

    # explicitly, with a shorter age; another experiment's partition and a missing one are fine
    os.utime(fresh, (time.time() - 120, time.time() - 120))
    assert store.remove_stale_temp("exp", max_age_seconds=3600) == []
    assert store.remove_stale_temp("exp", max_age_seconds=60) == [str(fresh)]
    assert store.remove_stale_temp("never-written") == []
    assert sorted(p.name for p in part.iterdir()) == [".tmp-dir", "notes.txt", "part-c1.parquet", "part-c2.parquet"]
