"""The Parquet result store: one row per seed-run, on a local folder or any pyarrow filesystem.

Layout (hive-partitioned by experiment; one file per trial chunk):

    <root>/experiment=<id>/part-<chunk_id>.parquet

* Root: `ResultStore(uri)`; `None` means `$WORLDSWEEP_STORE`, else `./worldsweep-data`. A
  plain path is a local folder; otherwise any URI `pyarrow.fs.FileSystem.from_uri` accepts.
  For `s3://bucket/prefix` the endpoint can be overridden by `$WORLDSWEEP_S3_ENDPOINT` or
  `$AWS_ENDPOINT_URL` (e.g. `http://127.0.0.1:5000`, a MinIO / moto server); credentials
  come from the AWS SDK's usual chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
  `AWS_SESSION_TOKEN`, profile, instance role) and are never logged or stored here.
* Atomic writes. A chunk is serialised to memory first. Locally it goes to a hidden temp
  file in the same folder (`.tmp-...`), is fsync'ed and `os.replace`d onto its final name.
  On object stores it is sent through one output stream that is closed only after the
  whole buffer is written: S3 makes an object (single PUT or completed multipart upload)
  visible only on that close, so a writer killed mid-upload leaves nothing visible.
  Readers only look at `part-*.parquet`, never at temp names. A local writer killed between
  creating and renaming its temp file leaves it behind: every local write (and the driver at
  start, `remove_stale_temp`) deletes `.tmp-*` files of that partition whose mtime is older
  than STALE_TEMP_SECONDS (1 h; a live writer's file is seconds old).
* The same chunk id always maps to the same file name, so re-writing a chunk replaces it.
* This module owns the schema (`SCHEMA`, built from `trainers.config.RESULT_COLUMNS` plus
  the driver and store columns), recorded with `SCHEMA_VERSION` in each file's metadata.
* `read` de-duplicates on (spec_hash, config_id, seed), keeping the newest write.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainers.config import RESULT_COLUMNS
from worlds.errors import SpecError, StoreError

SCHEMA_VERSION = 1
DEFAULT_STORE = "./worldsweep-data"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600.0  # a temp file this old belongs to a dead writer (a live one renames it in seconds)

# Columns the Ray driver adds to every trainer row (issue 4 contract).
DRIVER_COLUMNS: dict[str, str] = {
    "experiment": "str",
    "spec_hash": "str",
    "config_id": "str",
    "trial_id": "str",  # Ray Tune trial id that produced the row ("" for rows the driver wrote)
    "search_sample": "int",  # Optuna sample index; -1 for grid runs
    "node_id": "str",  # Ray node id the trial ran on
    "hostname": "str",
}
# Columns the store itself fills in on write.
STORE_COLUMNS: dict[str, str] = {
    "chunk_id": "str",
    "written_at": "float",  # unix seconds; the newest write of a seed-run wins
}
COLUMNS: dict[str, str] = {**RESULT_COLUMNS, **DRIVER_COLUMNS, **STORE_COLUMNS}
IDENTITY = ("spec_hash", "config_id", "seed")

_ARROW = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list<float>": pa.list_(pa.float64()),
}
SCHEMA = pa.schema(
    [pa.field(name, _ARROW[kind]) for name, kind in COLUMNS.items()],
    metadata={b"worldsweep.schema_version": str(SCHEMA_VERSION).encode()},
)
# Row order of `read`: the grid axes, then the seed.
SORT_COLUMNS = ["world", "model", "hidden_dim", "mode", "time_cond", "lr", "batch_size", "steps",
                "search_sample", "config_id", "seed"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}$")


def check_name(kind: str, value: str) -> str:
    """Experiment / chunk ids become path components: allow no separators and no `..`."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise SpecError(kind, f"must be 1-200 characters of letters, digits, '_', '.', '-' "
                              f"(starting with a letter or digit), got {value!r}")
    return value


class ResultStore:
    """Rows of seed-runs, partitioned by experiment. See the module docstring."""

    def __init__(self, uri: str | os.PathLike | None = None, *, s3_endpoint: str | None = None) -> None:
        raw = os.fspath(uri) if uri is not None else os.environ.get("WORLDSWEEP_STORE") or DEFAULT_STORE
        self.s3_endpoint = s3_endpoint or os.environ.get("WORLDSWEEP_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        parsed = urlparse(raw)
        if "://" not in raw or parsed.scheme == "file":
            local = parsed.path if parsed.scheme == "file" else raw
            self.root = str(Path(local).expanduser().resolve())
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self.uri = self.root
            self.is_local = True
        else:
            self.is_local = False
            self.uri = raw.rstrip("/")
            try:
                if parsed.scheme == "s3" and self.s3_endpoint and "endpoint_override" not in parsed.query:
                    self.fs = _s3_filesystem(self.s3_endpoint)
                    self.root = (parsed.netloc + parsed.path).rstrip("/")
                else:
                    self.fs, root = pafs.FileSystem.from_uri(raw)
                    self.root = root.rstrip("/")
            except (pa.ArrowException, ValueError, OSError) as e:
                raise StoreError(f"cannot open result store {self.uri!r}: {e}") from None

    def __repr__(self) -> str:
        return f"ResultStore({self.uri!r})"

    # ---- what travels to the workers ---------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """How a trial process re-opens this store (no credentials: workers use their own env)."""
        return {"uri": self.uri, "s3_endpoint": self.s3_endpoint}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResultStore:
        return cls(config["uri"], s3_endpoint=config.get("s3_endpoint"))

    # ---- paths ------------------------------------------------------------------------------
    def _dir(self, experiment: str) -> str:
        return f"{self.root}/experiment={check_name('experiment', experiment)}"

    def _files(self, experiment: str) -> list[str]:
        sel = pafs.FileSelector(self._dir(experiment), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(sel)
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"cannot list result store {self.uri!r}: {e}") from None
        return sorted(i.path for i in infos
                      if i.type == pafs.FileType.File and i.base_name.startswith("part-")
                      and i.base_name.endswith(".parquet"))

    # ---- writing ----------------------------------------------------------------------------
    def write_rows(self, experiment: str, chunk_id: str, rows: list[dict[str, Any]]) -> None:
        """Store one trial chunk's rows atomically; the same chunk id replaces its file."""
        check_name("chunk_id", chunk_id)
        directory = self._dir(experiment)
        table = self.to_table(rows, experiment=experiment, chunk_id=chunk_id)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue()
        final = f"{directory}/part-{chunk_id}.parquet"
        try:
            if self.is_local:
                os.makedirs(directory, exist_ok=True)
                self.remove_stale_temp(experiment)
                tmp = f"{directory}/{TEMP_PREFIX}{chunk_id}-{uuid.uuid4().hex}.parquet"
                try:
                    with open(tmp, "wb") as f:
                        f.write(data.to_pybytes())
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, final)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            else:
                # One stream, closed only after the complete buffer was written: the object
                # appears at close (single PUT / completed multipart upload) or not at all.
                with self.fs.open_output_stream(final) as out:
                    out.write(data)
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"cannot write to result store {self.uri!r}: {e}") from None

    def remove_stale_temp(self, experiment: str, max_age_seconds: float = STALE_TEMP_SECONDS) -> list[str]:
        """Delete the `.tmp-*` files a killed local writer left in the experiment's partition,
        if their mtime is more than `max_age_seconds` ago; younger ones may belong to a live
        writer and stay. Object stores have no temp files (nothing to do). Best effort: a file
        that vanishes or cannot be removed meanwhile is skipped. Returns the removed paths."""
        if not self.is_local:
            return []
        removed: list[str] = []
        cutoff = time.time() - max_age_seconds
        try:
            entries = list(os.scandir(self._dir(experiment)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise StoreError(f"cannot list result store {self.uri!r}: {e}") from None
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.path)
            except OSError:
                continue  # renamed by its writer or removed by another cleaner meanwhile
        return removed

    @staticmethod
    def to_table(rows: Iterable[Mapping[str, Any]], *, experiment: str, chunk_id: str) -> pa.Table:
        """Rows as an Arrow table of exactly SCHEMA (missing columns null; unknown ones an error)."""
        now = time.time()
        clean = []
        for i, row in enumerate(rows):
            unknown = sorted(set(row) - set(COLUMNS))
            if unknown:
                raise StoreError(f"row {i} has columns the store schema does not know: {unknown}")
            r = dict(row)
            r.setdefault("experiment", experiment)
            r["chunk_id"] = chunk_id
            r["written_at"] = now
            if r.get("lyap_spectrum") is not None:
                r["lyap_spectrum"] = [float(x) for x in r["lyap_spectrum"]]
            clean.append(r)
        try:
            return pa.Table.from_pylist(clean, schema=SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StoreError(f"rows do not fit the store schema: {e}") from None

    # ---- reading ----------------------------------------------------------------------------
    def _dataset_table(self, experiment: str, columns: list[str] | None = None) -> pa.Table:
        files = self._files(experiment)
        if not files:
            return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
        try:
            dataset = pads.dataset(files, schema=SCHEMA, format="parquet", filesystem=self.fs)
            return dataset.to_table(columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"cannot read experiment {experiment!r} from {self.uri!r}: {e}") from None

    def read(self, experiment: str, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """All rows of an experiment (newest write per seed-run), optionally filtered.

        `filters` maps a column to a value or a list of values; string values are converted
        to the column's type ("16" for hidden_dim, "true" for valid), so query strings work.
        No stored rows -> an empty frame with every column.
        """
        table = self._dataset_table(experiment)
        df = table.to_pandas()
        if len(df):
            df = (df.sort_values("written_at", ascending=False, kind="stable")
                  .drop_duplicates(list(IDENTITY), keep="first"))
        for column, wanted in (filters or {}).items():
            if column not in COLUMNS:
                raise SpecError(column, f"unknown result column; valid: {sorted(COLUMNS)}")
            values = wanted if isinstance(wanted, list | tuple | set) else [wanted]
            values = [_coerce(column, v) for v in values]
            df = df[df[column].isin(values)] if COLUMNS[column] != "float" else df[
                df[column].apply(lambda x, vs=values: any(math.isclose(x, v) for v in vs))]
        return df.sort_values(SORT_COLUMNS, kind="stable").reset_index(drop=True)

    def done_keys(self, experiment: str) -> set[tuple[str, int]]:
        """(config_id, seed) of every seed-run already stored (valid or not)."""
        t = self._dataset_table(experiment, columns=["config_id", "seed"])
        return set(zip(t.column("config_id").to_pylist(), t.column("seed").to_pylist(), strict=True))

    def experiments(self) -> list[str]:
        """Ids of the experiments that have stored rows."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"cannot list result store {self.uri!r}: {e}") from None
        return sorted(i.base_name.split("=", 1)[1] for i in infos
                      if i.type == pafs.FileType.Directory and i.base_name.startswith("experiment="))

    def check_writable(self) -> None:
        """Write and delete a small probe object; StoreError (naming the store) if that fails."""
        probe = f"{self.root}/_probe/{uuid.uuid4().hex}"
        try:
            if self.is_local:
                os.makedirs(os.path.dirname(probe), exist_ok=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"ok")
            self.fs.delete_file(probe)
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"result store {self.uri!r} is not writable: {e}") from None

    def tune_storage(self) -> tuple[str, pafs.FileSystem]:
        """Where Ray Tune keeps its experiment state: `<root>/_tune` on the same filesystem."""
        return f"{self.root}/_tune", self.fs


def _s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    u = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(endpoint_override=u.netloc, scheme=u.scheme or "https", region=region)


def _coerce(column: str, value: Any) -> Any:
    kind = COLUMNS[column]
    if not isinstance(value, str) or kind == "str":
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool" and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    except ValueError:
        pass
    raise SpecError(column, f"must be a {kind} value, got {value!r}")
