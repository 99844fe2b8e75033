"""deploy/kubernetes: a kustomize base whose core objects validate against Kubernetes' own schemas (offline, with
kubernetes-validate) and whose KEDA objects use the fields KEDA documents, consistent with what fluxserve reads."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from fluxserve.config import Settings
from fluxserve.gateway.served import build_registry
from tests.deploy.files import (
    KEDA_API,
    env_values,
    kustomization,
    manifest_files,
    named,
    objects,
    pod_spec,
    postgresql_trigger,
    rendered_base,
    scaled_objects,
    the_container,
    worker_deployments,
    worker_models,
)

#: The oldest Kubernetes still in wide use that the base must apply to, and the newest schemas bundled.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# Fields KEDA documents for its objects (https://keda.sh/docs/latest/reference/scaledobject-spec/,
# https://keda.sh/docs/latest/scalers/postgresql/, https://keda.sh/docs/latest/concepts/authentication/); the
# postgresql metadata keys match postgreSQLMetadata in kedacore/keda pkg/scalers/postgresql_scaler.go.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
POSTGRESQL_METADATA = {
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "connectionFromEnv",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "passwordFromEnv",
}
#: TriggerAuthentication parameters the postgresql scaler reads (its "authParams" fields).
POSTGRESQL_AUTH_PARAMS = {"connection", "host", "port", "userName", "dbName", "sslmode", "password"}
TRIGGER_AUTHENTICATION_SPEC = {"secretTargetRef", "env", "configMapTargetRef", "podIdentity", "hashiCorpVault"}


def _core_objects() -> list[dict[str, Any]]:
    return [obj for obj in rendered_base() if not obj["apiVersion"].startswith("keda.sh/")]


def test_kustomization_lists_every_manifest_once() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == manifest_files(), "deploy/kubernetes and kustomization.yaml's resources differ"


def test_the_base_renders_with_kustomize_and_names_are_unique() -> None:
    rendered = rendered_base()
    assert {obj["kind"] for obj in rendered} >= {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "ScaledObject",
        "TriggerAuthentication",
    }
    keys = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered]
    assert len(keys) == len(set(keys))
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fluxserve"
        assert "namespace" not in obj["metadata"], "a base leaves the namespace to the overlay"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(version: str) -> None:
    core = _core_objects()
    assert len(core) >= 8
    errors = []
    for obj in core:
        # Strict: a misspelt field (an unknown property) fails, as `kubectl apply --validate=strict` would. A kind
        # without a bundled schema raises SchemaNotFoundError: every core object must be checked.
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_scaled_objects_use_the_documented_keda_fields() -> None:
    deployments = {d["metadata"]["name"] for d in objects("Deployment")}
    auths = {a["metadata"]["name"] for a in objects("TriggerAuthentication")}
    assert scaled_objects()
    for scaled in scaled_objects():
        name = scaled["metadata"]["name"]
        assert scaled["apiVersion"] == KEDA_API and scaled["kind"] == "ScaledObject"
        spec = scaled["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC, f"{name}: unknown spec fields {set(spec) - SCALED_OBJECT_SPEC}"
        ref = spec["scaleTargetRef"]
        assert set(ref) <= SCALE_TARGET_REF
        assert ref.get("kind", "Deployment") == "Deployment" and ref.get("apiVersion", "apps/v1") == "apps/v1"
        assert ref["name"] in deployments, f"{name} scales {ref['name']}, which the base does not define"
        # Scale to zero: no GPU is held while nothing is queued.
        assert spec["minReplicaCount"] == 0
        assert spec["maxReplicaCount"] >= 1
        for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            assert isinstance(spec[key], int) and spec[key] >= 0
        for trigger in spec["triggers"]:
            assert set(trigger) <= TRIGGER
        trigger = postgresql_trigger(scaled)
        metadata = trigger["metadata"]
        assert set(metadata) <= POSTGRESQL_METADATA, f"{name}: unknown metadata {set(metadata) - POSTGRESQL_METADATA}"
        # KEDA reads every metadata value as a string; the numbers parse as floats (targetQueryValue > 0 required).
        assert all(isinstance(value, str) for value in metadata.values())
        assert metadata["query"].strip()
        assert float(metadata["targetQueryValue"]) > 0
        assert float(metadata["activationTargetQueryValue"]) == 0, "one queued prediction must wake the workers"
        assert trigger["authenticationRef"]["name"] in auths


def test_trigger_authentication_reads_the_database_url_secret() -> None:
    pods_secret = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for workload in (*objects("Deployment"), *objects("Job"))
        for e in the_container(workload).get("env", [])
        if e["name"] == "FLUXSERVE_DATABASE_URL"
    }
    assert len(pods_secret) == 1, f"every pod should read FLUXSERVE_DATABASE_URL from one Secret: {pods_secret}"
    for auth in objects("TriggerAuthentication"):
        assert auth["apiVersion"] == KEDA_API
        assert set(auth["spec"]) <= TRIGGER_AUTHENTICATION_SPEC
        refs = auth["spec"]["secretTargetRef"]
        assert {ref["parameter"] for ref in refs} <= POSTGRESQL_AUTH_PARAMS
        connection = [(ref["name"], ref["key"]) for ref in refs if ref["parameter"] == "connection"]
        assert connection == sorted(pods_secret), "KEDA should connect with the URL the pods use"


def test_each_worker_deployment_has_one_scaled_object_and_the_groups_are_disjoint() -> None:
    workers = {d["metadata"]["name"] for d in worker_deployments()}
    assert len(workers) >= 1
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in scaled_objects()]
    assert sorted(targets) == sorted(workers), "one ScaledObject per worker Deployment, and only those"
    seen: dict[str, str] = {}
    for deployment in worker_deployments():
        for model in worker_models(deployment):
            # A model in two groups would be counted by two ScaledObjects and claimed by both.
            assert model not in seen, f"{model} is served by {seen.get(model)} and {deployment['metadata']['name']}"
            seen[model] = deployment["metadata"]["name"]


def test_worker_models_are_served_under_the_configmap_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in named("ConfigMap", "fluxserve-config")["data"].items():
        monkeypatch.setenv(key, value)
    registry = build_registry(Settings())
    for deployment in worker_deployments():
        for model in worker_models(deployment):
            spec = registry.get(model)
            assert spec is not None, f"{model} is not a model this build serves"
            assert not spec.refused, f"{model} would be refused: {spec.refused}"


def test_fluxserve_settings_are_real_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    values = dict(named("ConfigMap", "fluxserve-config")["data"])
    for workload in (*objects("Deployment"), *objects("Job")):
        values |= env_values(the_container(workload))
    names = [k for k in values if k.startswith("FLUXSERVE_")]
    assert names
    for key in names:
        assert key.removeprefix("FLUXSERVE_").lower() in Settings.model_fields, f"{key} is no fluxserve setting"
    for key in names:
        monkeypatch.setenv(key, values[key])
    Settings()  # every value parses as its setting


def test_worker_pods_ask_for_a_gpu_node_and_outlast_their_longest_prediction() -> None:
    defaults = Settings.model_fields
    for deployment in worker_deployments():
        name = deployment["metadata"]["name"]
        spec = pod_spec(deployment)
        container = the_container(deployment)
        resources = container["resources"]
        assert str(resources["limits"]["nvidia.com/gpu"]) == "1", name
        assert spec["nodeSelector"], f"{name} should pick GPU nodes"
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), name
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
        env = env_values(container)
        max_run = float(env.get("FLUXSERVE_MAX_RUN_SECONDS", defaults["max_run_seconds"].default))
        grace = float(env.get("FLUXSERVE_SHUTDOWN_GRACE_SECONDS", defaults["shutdown_grace_seconds"].default))
        # The worker waits up to the shutdown grace for its running prediction, which runs at most max_run; the
        # kubelet must wait longer still, or it kills the worker before the prediction's result is written.
        assert grace >= max_run, f"{name}: a stop would cut predictions that run longer than {grace:.0f} s"
        assert spec["terminationGracePeriodSeconds"] > grace, name


def test_probes_point_at_the_ports_the_processes_listen_on() -> None:
    api = the_container(named("Deployment", "fluxserve-api"))
    api_ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert api["args"][:2] == ["serve", "--no-worker"], "the api image has no torch: no in-process worker"
    assert api_ports["http"] == int(env_values(api)["FLUXSERVE_PORT"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    service = named("Service", "fluxserve-api")
    assert (
        service["spec"]["selector"].items()
        <= named("Deployment", "fluxserve-api")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] in api_ports
    pdb = named("PodDisruptionBudget", "fluxserve-api")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < named("Deployment", "fluxserve-api")["spec"]["replicas"]
    for deployment in worker_deployments():
        container = the_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = env_values(container)
        # `fluxserve worker` serves /health only when FLUXSERVE_WORKER_METRICS_PORT is set, on that port.
        assert ports["metrics"] == int(env["FLUXSERVE_WORKER_METRICS_PORT"])
        assert env["FLUXSERVE_WORKER_METRICS_HOST"] == "0.0.0.0", "the kubelet probes the pod's IP"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "metrics"}, probe


def test_pods_run_as_the_images_unprivileged_user() -> None:
    for workload in (*objects("Deployment"), *objects("Job")):
        security = pod_spec(workload)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001, "the uid the Dockerfile creates"
        container = the_container(workload)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["image"].split(":")[0] in ("fluxserve-api", "fluxserve-worker")
