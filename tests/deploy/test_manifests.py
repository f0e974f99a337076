"""deploy/ stays deployable: every manifest parses and has the fields its controller needs,
every version agrees with deploy/versions.env (and that file with the development
environment), every `worldsweep ...` command the manifests run parses with the real CLI,
and every value a user must change is marked CHANGE.

No cluster, no network: these are static checks, so they run in well under a second.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RAYCLUSTER = DEPLOY / "kubernetes" / "raycluster.yaml"
RAYJOB = DEPLOY / "kubernetes" / "rayjob.yaml"
SECRETS = DEPLOY / "kubernetes" / "secrets.example.yaml"
LAUNCHER = DEPLOY / "vm" / "cluster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
YAML_FILES = [RAYCLUSTER, RAYJOB, SECRETS, LAUNCHER]

# Placeholder values a user has to replace; each must sit under a `CHANGE` comment.
PLACEHOLDERS = ("your-org", "your-bucket", "CHANGE-ME", "ami-0123456789abcdef0", "123456789012")
SHELL_OPERATORS = {";", "&", "&&", "||", "|", "\n", "(", ")"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&", "&>"}


# ---------------------------------------------------------------- helpers


def versions() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z_]+", key) and value and " " not in value, line
            out[key] = value
    return out


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every node of a parsed YAML document."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def images(doc: Any) -> list[tuple[str, str]]:
    return [(p, v) for p, v in walk(doc) if p.endswith("image") and isinstance(v, str)]


def pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of the head and every worker group of a RayCluster spec."""
    out = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    out += [(g["groupName"], g["template"]["spec"]) for g in cluster_spec["workerGroupSpecs"]]
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell snippet as argv lists (operators and redirections
    removed; quoted words, `$VAR` and `$(...)` kept as one word each)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace = " \t\r"  # newlines separate commands
    lexer.wordchars += "$:/.-=,{}*~+@%"
    words: list[str] = []
    for token in [*lexer, "\n"]:
        token = "\n" if "\n" in token and not token.strip() else token
        if token in SHELL_OPERATORS:
            if words:
                yield words
            words = []
        else:
            words.append(token)


def strip_redirections(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in REDIRECTIONS:
            skip = True
            continue
        if word.isdigit() and i + 1 < len(argv) and argv[i + 1] in REDIRECTIONS:
            continue  # the fd number of `2>&1`
        out.append(word)
    return out


def worldsweep_invocations(text: str) -> list[list[str]]:
    """Every `worldsweep ...` command in a shell snippet, as the argv after `worldsweep`."""
    found = []
    for argv in shell_commands(text):
        argv = strip_redirections(argv)
        while argv and argv[0] in ("exec", "nohup", "env", "time"):
            argv = argv[1:]
        if argv and argv[0] == "worldsweep":
            found.append(argv[1:])
    return found


COMMAND_FIELD = re.compile(r"(^|\.)(args|command|entrypoint|\w+_commands)(\[\d+\])*$")


def command_strings(doc: Any) -> Iterator[str]:
    """Every string a manifest hands to a shell or exec (container command/args, RayJob
    entrypoint, cluster-launcher *_commands)."""
    for path, v in walk(doc):
        if isinstance(v, str) and COMMAND_FIELD.search(path):
            yield v


# ---------------------------------------------------------------- versions


def test_versions_file_matches_environment_and_pyproject():
    import ray
    import torch
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    tomllib = pytest.importorskip("tomllib")
    v = versions()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert v["RAY_VERSION"] == ray.__version__, "deploy/versions.env RAY_VERSION != installed Ray"
    assert v["TORCH_VERSION"] == torch.__version__.split("+")[0], "TORCH_VERSION != installed torch"
    assert v["WORLDSWEEP_VERSION"] == project["version"]
    assert v["PYTHON_VERSION"] in SpecifierSet(project["requires-python"]) or SpecifierSet(
        project["requires-python"]
    ).contains(v["PYTHON_VERSION"] + ".0")
    deps = {Requirement(d).name: Requirement(d) for d in project["dependencies"]}
    assert deps["ray"].specifier.contains(v["RAY_VERSION"]), "pyproject's ray range excludes RAY_VERSION"
    assert "tune" in deps["ray"].extras
    assert deps["torch"].specifier.contains(v["TORCH_VERSION"])
    assert v["IMAGE_TAG_CPU"] == f"{v['WORLDSWEEP_VERSION']}-ray{v['RAY_VERSION']}-cpu"
    assert v["IMAGE_TAG_GPU"] == f"{v['WORLDSWEEP_VERSION']}-ray{v['RAY_VERSION']}-{v['CUDA_VARIANT']}"
    assert re.fullmatch(r"cu\d{3}", v["CUDA_VARIANT"])
    # Ray token auth (RAY_AUTH_MODE=token, which every manifest relies on) exists from 2.52.
    assert tuple(int(x) for x in v["RAY_VERSION"].split(".")[:2]) >= (2, 52)


def test_dockerfile_defaults_match_versions():
    v = versions()
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    assert args["RAY_VERSION"] == v["RAY_VERSION"]
    assert args["TORCH_VERSION"] == v["TORCH_VERSION"]
    assert args["WORLDSWEEP_VERSION"] == v["WORLDSWEEP_VERSION"]
    assert args["PYTHON_TAG"] == "py" + v["PYTHON_VERSION"].replace(".", "")
    assert args["VARIANT"] == "cpu"
    # the base image is selected by the pinned versions, never a floating tag
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert base == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}"
    # Ray and torch re-pinned in the install step, and the build verifies what it installed
    assert '"ray[default,tune]==${RAY_VERSION}"' in text
    assert '"torch==${TORCH_VERSION}"' in text
    assert "ray.__version__ == '${RAY_VERSION}'" in text
    assert "download.pytorch.org/whl/${VARIANT}" in text
    # every package directory the distribution includes is copied into the image
    for package in ("worlds", "trainers", "stats", "service"):
        assert re.search(rf"^COPY .* {package} \./{package}$", text, flags=re.M), package
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for package in ("worlds", "trainers", "stats", "service", "pyproject.toml"):
        assert f"!{package}" in ignore


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB, LAUNCHER], ids=lambda p: p.name)
def test_every_image_is_the_pinned_image(path):
    v = versions()
    found = [img for doc in load_all(path) for img in images(doc)]
    assert found, f"{path.name} names no image"
    for where, image in found:
        repo, _, tag = image.rpartition(":")
        assert repo == v["IMAGE_REPOSITORY"], f"{path.name} {where}: {image}"
        assert tag in (v["IMAGE_TAG_CPU"], v["IMAGE_TAG_GPU"]), f"{path.name} {where}: {image}"


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_ray_version_fields_match(path):
    v = versions()
    found = [val for doc in load_all(path) for p, val in walk(doc) if p.endswith("rayVersion")]
    assert found and all(str(x) == v["RAY_VERSION"] for x in found), found


# ---------------------------------------------------------------- Kubernetes


def check_ray_cluster_spec(spec: dict, name: str) -> None:
    """What KubeRay and worldsweep need of a RayCluster spec (also the one inside a RayJob)."""
    v = versions()
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in load_all(SECRETS)}
    assert spec["enableInTreeAutoscaling"] is True, name
    auto_env = {e["name"]: e for e in spec["autoscalerOptions"]["env"]}
    assert auto_env["RAY_AUTH_MODE"]["value"] == "token", f"{name}: autoscaler lacks token auth"
    assert "secretKeyRef" in auto_env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "trials must not run on the head"

    gpu_groups = 0
    for group, pod in pod_specs(spec):
        for c in pod["containers"]:
            where = f"{name} {group}/{c['name']}"
            env = env_of(c)
            assert env["RAY_AUTH_MODE"]["value"] == "token", where
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]], f"{where}: unknown Secret {ref}"
            for e in env.values():  # every Secret reference resolves
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                    r = e["valueFrom"]["secretKeyRef"]
                    assert r["key"] in secrets.get(r["name"], set()), f"{where}: {r}"
            assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0", where
            # zero-GPU trials must not see (and silently use) the node's GPUs
            assert env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"]["value"] == "1", where
            store = env["WORLDSWEEP_STORE"]["value"]
            assert "://" in store and not store.startswith("file://"), f"{where}: store must be shared"
            limits = c["resources"]["limits"]
            assert c["resources"]["requests"] == limits, f"{where}: Ray sees limits; keep requests equal"
            if "nvidia.com/gpu" in limits:
                gpu_groups += 1
                assert c["image"].endswith(v["IMAGE_TAG_GPU"]), f"{where}: GPU pod needs the CUDA image"
                assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    assert gpu_groups >= 1, f"{name}: no GPU worker group"
    # the node types declared to the driver are exactly what the worker groups provide
    declared = json.loads(env_of(spec["headGroupSpec"]["template"]["spec"]["containers"][0])
                          ["WORLDSWEEP_AUTOSCALER_NODE_TYPES"]["value"])
    provided = []
    for g in spec["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        shape = {"CPU": float(limits["cpu"])}
        if "nvidia.com/gpu" in limits:
            shape["GPU"] = float(limits["nvidia.com/gpu"])
        provided.append(shape)
    assert [{k: float(v) for k, v in t.items()} for t in declared] == provided, name
    for g in spec["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        assert g["maxReplicas"] > g["minReplicas"], f"{g['groupName']} cannot autoscale"


def test_raycluster_manifest():
    (doc,) = load_all(RAYCLUSTER)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    # our head command replaces KubeRay's, so the annotation must be on
    assert doc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    spec = doc["spec"]
    check_ray_cluster_spec(spec, "RayCluster")
    for group, pod in pod_specs(spec):
        for c in pod["containers"]:
            script = " ".join(c.get("args", []))
            assert "$KUBERAY_GEN_RAY_START_CMD" in script, f"{group}: Ray is never started"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["gcs-server"] == 6379 and ports["worldsweep-api"] == 8000
    (serve,) = [argv for s in head["args"] for argv in worldsweep_invocations(s)]
    assert serve[0] == "serve"
    # a non-loopback bind is refused by the server without an API token
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    assert "secretKeyRef" in env_of(head)["WORLDSWEEP_API_TOKEN"]["valueFrom"]
    assert str(ports["worldsweep-api"]) == serve[serve.index("--port") + 1]
    # the database lives on the mounted state volume
    mount = head["volumeMounts"][0]["mountPath"]
    assert env_of(head)["WORLDSWEEP_DB_PATH"]["value"].startswith(mount + "/")
    for probe in ("readinessProbe", "livenessProbe"):
        assert head[probe]["exec"]["command"][-1].count(":8000/") == 1


def test_rayjob_manifest():
    (doc,) = load_all(RAYJOB)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob")
    (run,) = worldsweep_invocations(spec["entrypoint"])
    assert run[0] == "run"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    # the spec file the entrypoint reads is where the ConfigMap is mounted
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]
    assert run[1].startswith(mount["mountPath"] + "/")
    assert any(vol["name"] == mount["name"] and "configMap" in vol for vol in head["volumes"])
    # the submitter calls the Jobs API, which checks the Ray token as well
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    assert env_of(submitter)["RAY_AUTH_MODE"]["value"] == "token"
    assert "secretKeyRef" in env_of(submitter)["RAY_AUTH_TOKEN"]["valueFrom"]


def test_secrets_example_holds_no_real_secret():
    docs = load_all(SECRETS)
    assert {d["metadata"]["name"] for d in docs} == {"worldsweep-ray-auth", "worldsweep-api", "worldsweep-s3"}
    for d in docs:
        assert d["kind"] == "Secret" and d["apiVersion"] == "v1"
        assert all(str(val).startswith("CHANGE-ME") for val in d["stringData"].values()), d["metadata"]


# ---------------------------------------------------------------- VM cluster launcher


def test_cluster_launcher_config():
    (doc,) = load_all(LAUNCHER)
    v = versions()
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types",
                "head_node_type", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in doc, key
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    assert types[doc["head_node_type"]]["resources"]["CPU"] == 0, "trials must not run on the head"
    workers = {k: t for k, t in types.items() if k != doc["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values()), "no GPU worker type"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= doc["max_workers"], name
    assert doc["docker"]["image"].endswith(v["IMAGE_TAG_GPU"])
    opts = " ".join(doc["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in opts and "RAY_USAGE_STATS_ENABLED=0" in opts
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1" in opts
    declared = re.search(r"'WORLDSWEEP_AUTOSCALER_NODE_TYPES=(.*?)'", opts).group(1)
    assert json.loads(declared) == [t["resources"] for t in workers.values()]
    store = re.search(r"WORLDSWEEP_STORE=(\S+)", opts).group(1)
    assert store.startswith("s3://")
    # the token reaches every node as Ray's default token file
    assert "~/.ray/auth_token" in doc["file_mounts"]
    head_cmds = "\n".join(doc["head_start_ray_commands"])
    assert "ray start --head" in head_cmds
    assert all("--address=$RAY_HEAD_IP:6379" in c for c in doc["worker_start_ray_commands"] if "ray start" in c)
    assert [argv[0] for argv in worldsweep_invocations(head_cmds)] == ["serve"]


# ---------------------------------------------------------------- the commands exist


def manifest_invocations() -> list[tuple[str, list[str]]]:
    out = []
    for path in (RAYCLUSTER, RAYJOB, LAUNCHER):
        for doc in load_all(path):
            for s in command_strings(doc):
                out += [(path.name, argv) for argv in worldsweep_invocations(s)]
    readme = (DEPLOY / "README.md").read_text()
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", readme, flags=re.S):
        block = block.replace("\\\n", " ")
        out += [("README.md", argv) for argv in worldsweep_invocations(block)]
    return out


def test_shell_parsing_helper():
    script = 'ulimit -n 1; $X &\nworldsweep serve --store "$S" --ray-address "$(hostname -I | awk \'{print $1}\'):6379" > log 2>&1 &\nwait -n'
    assert worldsweep_invocations(script) == [
        ["serve", "--store", "$S", "--ray-address", "$(hostname -I | awk '{print $1}'):6379"]
    ]
    assert worldsweep_invocations("nohup worldsweep run a.yaml --json; worldsweepx run") == [["run", "a.yaml", "--json"]]


def test_manifest_commands_exist_in_cli():
    from service.cli import build_parser

    invocations = manifest_invocations()
    verbs = {argv[0] for _, argv in invocations}
    assert {"serve", "run"} <= verbs, f"manifests should run `serve` and `run`, found {verbs}"
    parser = build_parser()
    for where, argv in invocations:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `worldsweep {' '.join(argv)}` is not a valid worldsweep command")
        assert args.verb == argv[0]
        if "--ray-address" in argv:
            assert args.ray_address == argv[argv.index("--ray-address") + 1]
        if "--store" in argv:
            assert args.store == argv[argv.index("--store") + 1]


# ---------------------------------------------------------------- documentation


def test_every_placeholder_is_marked_change():
    for path in [*YAML_FILES, DOCKERFILE]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("#") or not any(p in line for p in PLACEHOLDERS):
                continue
            # the CHANGE comment sits on the line or in the comment block right above it
            j = i - 1
            context = [line]
            # `value:` of an env entry, or the value under a commented mapping key
            if lines[j].lstrip().startswith("- name:") or lines[j].rstrip().endswith(":"):
                context.append(lines[j])
                j -= 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                context.append(lines[j])
                j -= 1
            assert any("CHANGE" in c for c in context), f"{path.name}:{i + 1}: unmarked placeholder: {line.strip()}"


def test_every_yaml_field_is_commented_or_self_evident():
    """KubeRay-samples style: each mapping key that is not a plain Kubernetes/launcher term
    carries a comment in the block it opens or right above it (checked for top-level spec
    keys, where the decisions are)."""
    for path in (RAYCLUSTER, RAYJOB):
        lines = path.read_text().splitlines()
        start = lines.index("spec:")
        for i, line in enumerate(lines[start:], start):
            m = re.match(r"^  (\w+):", line)
            if m and m.group(1) not in ("headGroupSpec", "workerGroupSpecs", "rayClusterSpec"):
                above = lines[i - 1].strip()
                assert above.startswith("#") or "#" in line, f"{path.name}:{i + 1}: `{m.group(1)}` uncommented"


def test_deploy_readme_covers_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(DEPLOY)) in readme, f"deploy/README.md never mentions {path.name}"
    for topic in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE=token", "seeds_per_trial", "gpus_per_trial",
                  "AWS_ENDPOINT_URL", "versions.env"):
        assert topic in readme, topic
