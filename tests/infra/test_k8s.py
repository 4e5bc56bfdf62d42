"""infra/k8s: the Prefect worker and the Dask cluster, checked as data (no cluster needed).

Every manifest is parsed; the tests check what `kubectl apply -k` would need (kinds, names,
selectors that match, ports that exist) and what the namespace's "restricted" Pod Security
Standard demands, plus lrflow's own rules: resources on every container, secrets only
through Secret references, the Dask ports closed to everything but lrflow's pods.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.infra.infra_files import INFRA, SECRET_NAME

NAMESPACE = "lrflow"


def _objects(documents, kind=None):
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents if kind in (None, doc["kind"])}


def _pod_templates(documents):
    return {name: doc["spec"]["template"] for (kind, name), doc in _objects(documents, "Deployment").items()}


def _containers(documents):
    for name, template in _pod_templates(documents).items():
        for container in template["spec"]["containers"]:
            yield name, template, container


def _quantity(value) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in (*units, ""), value
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_manifests_declare_the_worker_and_the_dask_cluster(k8s_documents):
    objects = _objects(k8s_documents)
    assert set(objects) == {
        ("Namespace", "lrflow"), ("ServiceAccount", "lrflow"), ("ConfigMap", "lrflow-env"),
        ("Deployment", "lrflow-prefect-worker"), ("Deployment", "lrflow-dask-scheduler"),
        ("Service", "lrflow-dask-scheduler"), ("Deployment", "lrflow-dask-worker"),
        ("NetworkPolicy", "lrflow-default-deny-ingress"), ("NetworkPolicy", "lrflow-dask-from-lrflow-only"),
    }
    for (kind, name), doc in objects.items():
        assert doc["apiVersion"], (kind, name)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lrflow", (kind, name)
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, (kind, name)
    assert objects["Deployment", "lrflow-dask-worker"]["spec"]["replicas"] == 2
    assert objects["Namespace", "lrflow"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kustomization_applies_every_manifest_and_sets_the_image(k8s_documents):
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    files = {path.name for path in (INFRA / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == NAMESPACE
    images = {image["name"] for image in kustomization["images"]}
    assert {container["image"] for _, _, container in _containers(k8s_documents)} == images == {"lrflow"}


def test_deployment_selectors_match_their_pod_templates(k8s_documents):
    for (_, name), doc in _objects(k8s_documents, "Deployment").items():
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
        assert labels["app.kubernetes.io/part-of"] == "lrflow", name


def test_every_container_requests_and_limits_cpu_and_memory(k8s_documents):
    for name, _, container in _containers(k8s_documents):
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < _quantity(request) <= _quantity(limit), (name, resource, request, limit)


def test_every_pod_runs_as_non_root_with_a_read_only_root_filesystem(k8s_documents):
    for name, template, container in _containers(k8s_documents):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert template["spec"]["automountServiceAccountToken"] is False, name
        assert template["spec"]["serviceAccountName"] == "lrflow", name
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in context["capabilities"], name
        # A read-only root needs somewhere to write: /tmp (HOME, PREFECT_HOME, ...) on an emptyDir.
        volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, (name, mount)


def test_secrets_reach_pods_only_through_secret_references(k8s_documents):
    config = _objects(k8s_documents)["ConfigMap", "lrflow-env"]["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    assert not _objects(k8s_documents, "Secret"), "ship no Secret: create it from your secret store"
    for name, _, container in _containers(k8s_documents):
        for variable in container.get("env", []):
            if SECRET_NAME.search(variable["name"]):
                assert "value" not in variable, (name, variable["name"])
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "lrflow-credentials" and ref["key"] == variable["name"], (name, ref)
                # Optional: with IRSA / Pod Identity there are no AWS keys at all.
                assert ref["optional"] is True, (name, ref)
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, f"{name}: reference secret keys one by one"


def test_worker_serves_the_lrflow_process_pool_and_every_pod_finds_the_services(k8s_documents):
    objects = _objects(k8s_documents)
    worker = objects["Deployment", "lrflow-prefect-worker"]["spec"]["template"]["spec"]["containers"][0]
    args = worker["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert args[args.index("--pool") + 1] == "lrflow" and args[args.index("--type") + 1] == "process"
    config = objects["ConfigMap", "lrflow-env"]["data"]
    assert config["PREFECT_API_URL"].endswith("/api")
    assert config["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and config["DO_NOT_TRACK"] == "1"
    assert "AWS_ENDPOINT_URL" not in config, "AWS S3 by default; MinIO sets it"
    service = objects["Service", "lrflow-dask-scheduler"]
    comm = next(port["port"] for port in service["spec"]["ports"] if port["name"] == "tcp-comm")
    assert config["LRF_DASK_ADDRESS"] == f"tcp://lrflow-dask-scheduler.{NAMESPACE}.svc.cluster.local:{comm}"
    dask_worker = objects["Deployment", "lrflow-dask-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert f"tcp://lrflow-dask-scheduler:{comm}" in dask_worker["args"]
    for name, _, container in _containers(k8s_documents):
        assert {"configMapRef": {"name": "lrflow-env"}} in container["envFrom"], name


def test_scheduler_service_selects_the_scheduler_and_its_named_ports(k8s_documents):
    objects = _objects(k8s_documents)
    service = objects["Service", "lrflow-dask-scheduler"]["spec"]
    template = objects["Deployment", "lrflow-dask-scheduler"]["spec"]["template"]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    ports = {port["name"]: port["containerPort"] for port in template["spec"]["containers"][0]["ports"]}
    for port in service["ports"]:
        assert port["targetPort"] in ports, port
    args = template["spec"]["containers"][0]["args"]
    assert str(ports["comm"]) == args[args.index("--port") + 1]


@pytest.mark.parametrize("deployment", ["lrflow-prefect-worker", "lrflow-dask-scheduler", "lrflow-dask-worker"])
def test_probes_use_declared_ports(k8s_documents, deployment):
    container = _objects(k8s_documents)["Deployment", deployment]["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"] for port in container["ports"]}
    probes = [container[key] for key in ("livenessProbe", "readinessProbe") if key in container]
    assert probes, deployment
    for probe in probes:
        assert probe["httpGet"]["port"] in ports and probe["httpGet"]["path"] == "/health"


def test_dask_accepts_connections_only_from_lrflow_pods(k8s_documents):
    objects = _objects(k8s_documents)
    deny = objects["NetworkPolicy", "lrflow-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    dask = objects["NetworkPolicy", "lrflow-dask-from-lrflow-only"]["spec"]
    [expression] = dask["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In"
    components = {t["metadata"]["labels"]["app.kubernetes.io/component"] for t in _pod_templates(k8s_documents).values()}
    assert set(expression["values"]) == {c for c in components if c.startswith("dask-")}
    [rule] = dask["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "lrflow"}}}]
