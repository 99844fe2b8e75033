"""The Dockerfile (linted by hadolint, checked stage by stage) and compose.yaml (validated against the Compose
Specification's JSON schema, then checked for what fluxserve needs). No image is built: no container engine here."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib

from fluxserve.config import Settings
from fluxserve.gateway.served import build_registry
from tests.deploy.files import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    compose,
    dockerfile_stages,
    healthcheck_argv,
    interpolate,
    named,
    service_env,
    stage_base,
    stage_env,
    stage_exec_form,
    stage_healthcheck,
    stage_instructions,
    the_container,
    tool,
)

TARGETS = ("api", "worker")
#: An exact release tag (digits and dots, any suffix such as -slim-bookworm) or a digest.
PINNED = re.compile(r"^[\w./-]+(:(v?\d+(\.\d+)+[\w.-]*|RELEASE\.[\w.-]+)(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$")


def _requirements() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    return extras


def _pin(requirements: list[str], package: str) -> str:
    (pin,) = [r for r in requirements if re.match(rf"^{package}\s*==", r)]
    return pin.replace(" ", "")


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0


def test_the_api_and_worker_targets_exist_on_pinned_bases() -> None:
    stages = dockerfile_stages()
    assert set(TARGETS) <= set(stages)
    for stage in stages:
        base = stage_base(stage)
        if base in stages:
            continue
        assert PINNED.match(base), f"stage {stage}: pin {base} to an exact version"
    assert stage_base("api").startswith("python:3.11.")
    assert stage_base("worker").startswith("nvidia/cuda:") and "runtime" in stage_base("worker")


def test_each_target_runs_as_an_unprivileged_numeric_user_with_a_healthcheck() -> None:
    for target in TARGETS:
        user = stage_instructions(target, "USER")[-1]
        uid = user.split(":")[0]
        # Numeric, so Kubernetes can check runAsNonRoot; the same uid the manifests run as.
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user}"
        assert int(uid) == 10001
        options, argv = stage_healthcheck(target)
        assert argv[:2] == ["python", "-c"] and "/health" in argv[2], target
        assert {"interval", "timeout", "start-period", "retries"} <= set(options)
        assert stage_exec_form(target, "ENTRYPOINT") == ["tini", "--", "fluxserve"]


def test_the_api_image_has_no_model_stack_and_the_worker_image_has_cuda_torch() -> None:
    extras = _requirements()
    api_installs = " ".join(i for s in ("api-build", "api") for i in stage_instructions(s, "RUN"))
    assert "torch" not in api_installs and "[models" not in api_installs
    assert "pip install --no-cache-dir '.[s3]'" in api_installs
    assert stage_exec_form("api", "CMD") == ["serve", "--no-worker"]
    assert stage_env("api")["FLUXSERVE_WORKER"] == "false"

    worker_runs = stage_instructions("worker-build", "RUN")
    torch_run = next(r for r in worker_runs if "--index-url" in r)
    args = dict(arg.split("=", 1) for arg in stage_instructions("worker-build", "ARG"))
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    # torch (and torchvision) exactly as pyproject pins them, installed from the CUDA index before the extras.
    assert _pin(extras["models"], "torch") in torch_run.split()
    assert _pin(extras["gpu"], "torchvision") in torch_run.split()
    extras_run = next(r for r in worker_runs if "'.[models,gpu" in r)
    assert worker_runs.index(torch_run) < worker_runs.index(extras_run)
    assert stage_exec_form("worker", "CMD") == ["worker"]


def test_caches_and_data_live_on_volumes_named_by_real_settings() -> None:
    for target, paths in (("api", ["FLUXSERVE_DATA_DIR"]), ("worker", ["FLUXSERVE_DATA_DIR", "HF_HOME"])):
        env = stage_env(target)
        volumes = {v for value in stage_instructions(target, "VOLUME") for v in json.loads(value)}
        for name in [*paths, *(["FLUXSERVE_COMPILE_CACHE_DIR"] if target == "worker" else [])]:
            assert env[name] in volumes, f"{target}: {name}={env[name]} is not a VOLUME"
        for name in env:
            if name.startswith("FLUXSERVE_"):
                assert name.removeprefix("FLUXSERVE_").lower() in Settings.model_fields, f"{name} is no setting"
    worker_env = stage_env("worker")
    # The worker serves /health only with a metrics port; on 0.0.0.0 so that probes from outside reach it.
    assert worker_env["FLUXSERVE_WORKER_METRICS_PORT"].isdigit()
    assert worker_env["FLUXSERVE_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert str(worker_env["FLUXSERVE_WORKER_METRICS_PORT"]) in stage_instructions("worker", "EXPOSE")


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_local_state() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    copied = {
        word
        for stage in dockerfile_stages()
        for value in stage_instructions(stage, "COPY")
        if not value.startswith("--from")
        for word in value.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "src"}
    for path in [*copied, "src/fluxserve/store/migrations/env.py"]:
        assert not _ignored(path, patterns), f".dockerignore drops {path}, which the image needs"
    for path in [".git", ".venv", ".venv-replicate2", "tests/js/node_modules", "src/fluxserve/__pycache__", "data"]:
        assert _ignored(path, patterns), f".dockerignore should drop {path}"


def test_compose_validates_against_the_compose_specification() -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_postgres_migrations_api_and_a_gpu_worker_in_order() -> None:
    services = compose()["services"]
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == {"postgres", "migrate", "api", "worker"}
    assert {name for name, s in services.items() if "s3" in s.get("profiles", [])} == {"minio", "minio-init"}
    for name in ("api", "worker"):
        service = services[name]
        assert service["build"] == {"context": ".", "target": name}
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        # The S3 profile's bucket setup is waited for only when that profile runs.
        assert service["depends_on"]["minio-init"]["required"] is False
        assert "healthcheck" in service
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["build"]["target"] == "api"
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"] == stage_exec_form("api", "CMD")
    assert services["api"]["command"] == the_container(named("Deployment", "fluxserve-api"))["args"]
    (gpu,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and gpu["capabilities"] == ["gpu"]
    for name, service in services.items():
        if name not in ("migrate", "minio-init"):
            assert service["healthcheck"]["test"], name


def test_compose_settings_are_real_and_the_worker_outlasts_its_longest_prediction() -> None:
    for name in ("migrate", "api", "worker"):
        env = service_env(name)
        assert env["FLUXSERVE_DATABASE_URL"].startswith("postgresql://fluxserve:")
        assert env["FLUXSERVE_DATABASE_URL"].endswith("@postgres:5432/fluxserve")
        for key in env:
            if key.startswith("FLUXSERVE_"):
                assert key.removeprefix("FLUXSERVE_").lower() in Settings.model_fields, f"{name}: {key}"
    worker = compose()["services"]["worker"]
    env = service_env("worker")
    grace = float(env["FLUXSERVE_SHUTDOWN_GRACE_SECONDS"])
    assert grace >= float(env["FLUXSERVE_MAX_RUN_SECONDS"])
    assert int(worker["stop_grace_period"].removesuffix("s")) > grace
    # The default model of the one worker is served with the default (commercial-only) settings.
    command = [str(word) for word in worker["command"]]
    model = interpolate(command[command.index("--model") + 1])
    spec = build_registry(Settings(accept_noncommercial_licenses=False, demo=False)).get(model)
    assert spec is not None and not spec.refused, model


def test_compose_and_dockerfile_health_checks_agree() -> None:
    services = compose()["services"]
    for target in TARGETS:
        _, argv = stage_healthcheck(target)
        assert healthcheck_argv(services[target]["healthcheck"]["test"]) == argv, target
