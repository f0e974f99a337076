"""The experiment spec: every invalid field is named, unknown keys are errors, specs/ validate,
the content hash is stable and sensitive, and the grid expands and packs as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from service.spec import ExperimentSpec, config_id, load_spec
from service.sweep import expand_trials, grid_members
from trainers.config import TrialConfig
from worlds.errors import LimitExceeded, SpecError, UnknownParameter, UnknownWorld

SPECS = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))
BASE = {"name": "t", "worlds": ["E3_osc_struct", "E3_osc_null"]}


def spec_with(**changes) -> dict:
    return {**BASE, **changes}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"hidden_dims": [4, 8, 0]}, "hidden_dims[2]", "must be between 1 and 256, got 0"),
        ({"hidden_dims": 300}, "hidden_dims", "must be between 1 and 256, got 300"),
        ({"models": ["gru", "lsmt"]}, "models[1]", "'lsmt'"),
        ({"modes": ["fullish"]}, "modes[0]", "'fullish'"),
        ({"time_cond": ["sometimes"]}, "time_cond[0]", "'sometimes'"),
        ({"worlds": ["E3_osc_strut"]}, "worlds[0]", "unknown world 'E3_osc_strut'"),
        ({"worlds": ["E3_osc_struct", {"id": "E3_osc_null", "params": {"omegax": 1}}]},
         "worlds[1].params.omegax", "unknown parameter"),
        ({"worlds": [{"id": "E3_osc_struct", "params": {"T": 0}}]}, "worlds[0].params.T", "got 0"),
        ({"worlds": [{"id": "E3_osc_struct", "colour": 1}]}, "worlds[0].colour", "unknown key"),
        ({"worlds": []}, "worlds", "at least one"),
        ({"worlds": ["E3_osc_struct", "E3_osc_struct"]}, "worlds", "twice"),
        ({"train": {"lr": -1}}, "train.lr", "> 0, got -1"),
        ({"train": {"lr": [1e-3, 0]}}, "train.lr[1]", "got 0"),
        ({"train": {"steps": -5}}, "train.steps", "between 0 and"),
        ({"train": {"batch_size": [64, 0]}}, "train.batch_size[1]", "between 1 and"),
        ({"train": {"epochs": 3}}, "train.epochs", "unknown key; valid: ['batch_size', 'lr', 'steps']"),
        ({"data": {"n_train": 0}}, "data.n_train", "got 0"),
        ({"data": {"n_eval": "many"}}, "data.n_eval", "'many'"),
        ({"data": {"data_seed": "sometimes"}}, "data.data_seed", "'per_seed'"),
        ({"data": {"baseline": "oracle"}}, "data.baseline", "'oracle'"),
        ({"seeds": {"count": 0}}, "seeds.count", "got 0"),
        ({"seeds": [1, 2, -3]}, "seeds[2]", "got -3"),
        ({"seeds": {"start": 5}}, "seeds", "count"),
        ({"analysis": {"lyap_steps": 0}}, "analysis.lyap_steps", "got 0"),
        ({"analysis": {"probee": True}}, "analysis.probee", "unknown key"),
        ({"search": {"space": {"lr": {"log_uniform": [0, 1]}}}}, "search.space.lr", "low > 0"),
        ({"search": {"space": {"depth": {"choice": [1, 2]}}}}, "search.space.depth", "cannot be searched"),
        ({"search": {"space": {"hidden_dim": {"uniform": [1, 4]}}}}, "search.space.hidden_dim", "int_uniform"),
        ({"search": {"metric": "accuracy", "space": {"lr": {"uniform": [0.1, 0.2]}}}}, "search.metric", "accuracy"),
        ({"search": {"mode": "maximum", "space": {"lr": {"uniform": [0.1, 0.2]}}}}, "search.mode", "'maximum'"),
        ({"search": {"space": {}}}, "search.space", "at least one"),
        ({"hidden_dims": [4, 8], "search": {"space": {"hidden_dim": {"choice": [2, 4]}}}},
         "search.space.hidden_dim", "`hidden_dims` must be a single value"),
        ({"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial", "fraction"),
        ({"resources": {"cpus_per_trial": 0}}, "resources.cpus_per_trial", "got 0"),
        ({"resources": {"seeds_per_trial": 0}}, "resources.seeds_per_trial", "got 0"),
        ({"device": "tpu"}, "device", "'tpu'"),
        ({"name": "has space"}, "name", "pattern"),
        ({"colour": "blue"}, "colour", "unknown key"),
    ],
)
def test_invalid_field_is_named(changes: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(**changes))
    assert info.value.field == field, str(info.value)
    assert words in info.value.message, str(info.value)
    assert str(info.value).startswith(f"`{field}`")


def test_error_classes_and_all_problems_listed() -> None:
    with pytest.raises(UnknownWorld):
        load_spec(spec_with(worlds=["nope"]))
    with pytest.raises(UnknownParameter):
        load_spec(spec_with(worlds=[{"id": "E3_osc_struct", "params": {"nope": 1}}]))
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(hidden_dims=[0], models=["x"]))
    fields = [p["field"] for p in info.value.problems]
    assert "hidden_dims[0]" in fields and "models[0]" in fields
    with pytest.raises(SpecError, match="`name`: is required"):
        load_spec({"worlds": ["E3_osc_struct"]})


@pytest.mark.parametrize(("text", "ctype", "words"), [
    ("name: [unclosed", "application/yaml", "invalid YAML at line 1"),
    ('{"name": ', "application/json", "invalid JSON"),
    ("- just\n- a list\n", None, "must be a mapping"),
    ("name: x", "text/html", "unsupported content type"),
])
def test_malformed_text(text: str, ctype: str | None, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        load_spec(text, content_type=ctype)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_specs_validate(path: Path) -> None:
    spec = load_spec(path)
    assert spec.n_seed_runs == spec.n_configs * len(spec.seed_list()) > 0
    assert spec.n_trials >= 1
    assert sum(len(p.members) for p in expand_trials(spec)) == spec.n_seed_runs


def test_quick_and_paper_follow_the_issue() -> None:
    quick = load_spec(Path(SPECS[0]).with_name("quick.yaml"))
    assert {"E3_osc_struct", "E3_osc_null"} <= {w.id for w in quick.worlds}
    assert set(quick.models) == {"gru", "rnn_tanh"} and quick.hidden_dims == [16]
    assert quick.seed_list() == [1234, 1235, 1236, 1237]
    paper = load_spec(Path(SPECS[0]).with_name("paper.yaml"))
    defaults = TrialConfig()
    c = paper.configs()[0]
    assert (c.steps, c.batch_size, c.lr, c.n_train, c.n_eval) == (
        defaults.steps, defaults.batch_size, defaults.lr, defaults.n_train, defaults.n_eval)
    assert len(paper.seed_list()) == 20
    assert {w.id.split("_")[0] for w in paper.worlds} == {"E1", "E2", "E3"}


def test_defaults_are_the_trial_config_defaults() -> None:
    (c,) = load_spec({"name": "d", "worlds": ["E3_osc_struct"]}).configs()
    assert c == TrialConfig(world="E3_osc_struct")


def test_yaml_json_dict_and_file_agree(tmp_path: Path) -> None:
    d = spec_with(train={"lr": [1e-3, 3e-3]}, seeds={"count": 3})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "s.json").write_text(json.dumps(d))
    hashes = {
        load_spec(d).content_hash(),
        load_spec(yaml.safe_dump(d)).content_hash(),
        load_spec(json.dumps(d), content_type="application/json").content_hash(),
        load_spec(tmp_path / "s.yaml").content_hash(),
        load_spec(str(tmp_path / "s.json")).content_hash(),
        load_spec(dict(reversed(list(d.items())))).content_hash(),
        # explicit defaults and scalar-for-list give the same canonical spec
        load_spec({**d, "models": "gru", "modes": ["full"]}).content_hash(),
    }
    assert len(hashes) == 1


def test_hash_sensitive_to_results_not_resources() -> None:
    h = load_spec(BASE).content_hash()
    assert len(h) == 64
    for change in ({"train": {"lr": 2e-3}}, {"seeds": {"count": 3}}, {"hidden_dims": [8]},
                   {"worlds": ["E3_osc_struct", {"id": "E3_osc_null", "params": {"omega": 1.1}}]},
                   {"analysis": {"lyap_steps": 100}}, {"device": "cpu"}):
        assert load_spec(spec_with(**change)).content_hash() != h, change
    assert load_spec(spec_with(resources={"seeds_per_trial": 3})).content_hash() == h
    spec = load_spec(BASE)
    assert spec.experiment_id() == f"t-{h[:10]}"


def test_config_id_stable_and_distinct() -> None:
    a = TrialConfig(world="E3_osc_struct", lr=1e-3)
    assert config_id(a) == config_id(TrialConfig(world="E3_osc_struct", lr=0.001))
    assert config_id(a) != config_id(TrialConfig(world="E3_osc_struct", lr=2e-3))
    assert config_id(a) != config_id(TrialConfig(world="E3_osc_struct", world_params={"omega": 1.0}))
    assert len(config_id(a)) == 12


def test_grid_expansion_chunks_and_packing() -> None:
    spec = load_spec(spec_with(models=["gru", "rnn_tanh"], train={"lr": [1e-3, 2e-3]},
                               worlds=["E3_osc_struct", "E3_osc_null", "E2_regime_struct"],
                               seeds={"count": 5}, resources={"seeds_per_trial": 2, "members_per_trial": 8}))
    assert spec.n_configs == 12 and spec.n_seed_runs == 60
    plans = expand_trials(spec)
    keys = [k for p in plans for k in p.keys]
    assert len(keys) == len(set(keys)) == 60
    assert set(keys) == {(config_id(c), s) for c, s in grid_members(spec)}
    for p in plans:
        assert 1 <= len(p.members) <= 8
        assert len({(c.model, c.hidden_dim) for c, _ in p.members}) == 1  # packable only
        assert len({c.world.split("_")[0] for c, _ in p.members}) == 1  # same T
        per_config = {}
        for c, s in p.members:
            per_config.setdefault(config_id(c), []).append(s)
        assert all(len(v) <= 2 for v in per_config.values())
    # packing combines configurations (world + null, several lrs) into one trial
    assert any(len({config_id(c) for c, _ in p.members}) > 1 for p in plans)
    # deterministic chunk ids; done members are left out and never reuse a chunk id wrongly
    assert [p.chunk_id for p in plans] == [p.chunk_id for p in expand_trials(spec)]
    done = set(plans[0].keys[:1])
    rest = expand_trials(spec, done=done)
    assert sum(len(p.members) for p in rest) == 59
    assert plans[0].chunk_id not in {p.chunk_id for p in rest}


def test_search_counts_and_limits() -> None:
    spec = load_spec(spec_with(seeds={"count": 4}, data={"n_train": 500},
                               search={"num_samples": 3, "space": {"lr": {"log_uniform": [1e-4, 1e-2]},
                                                                   "steps": {"int_uniform": [10, 900]}}}))
    assert spec.n_trials == 3 and spec.n_seed_runs == 2 * 4 * 3
    (c,) = spec.configs({"lr": 5e-3, "steps": 20})[:1]
    assert (c.lr, c.steps) == (5e-3, 20)
    spec.check_limits({"seed_runs": 24, "steps": 900, "seq_len": 256, "n_train": 500})
    for key, field in (("seed_runs", "seeds"), ("steps", "search.space.steps"),
                       ("seq_len", "worlds[0].params.T"), ("n_train", "data.n_train")):
        with pytest.raises(LimitExceeded) as info:
            spec.check_limits({key: 1})
        assert info.value.field == field and "limit of 1" in info.value.message


def test_spec_is_frozen_model() -> None:
    spec = load_spec(BASE)
    assert isinstance(spec, ExperimentSpec)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        spec.name = "other"  # type: ignore[misc]
