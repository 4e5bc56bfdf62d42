"""infra/compose: the team stack, checked as data (Docker is not needed to run these).

The compose file is parsed with PyYAML (anchors and ``<<`` merges resolved) and its
``${VAR}`` references are substituted the way compose does, with the values of
``.env.example``; the services, their wiring, the published ports and the handling of
secrets are then checked.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml
from tests.infra.infra_files import INFRA, REPO, SECRET_NAME, MissingVariable, interpolate, interpolate_tree, read_env_file

COMPOSE_DIR = INFRA / "compose"
LRFLOW_SERVICES = ("prefect-worker", "dask-scheduler", "dask-worker")
SECRETS = ("POSTGRES_PASSWORD", "PREFECT_AUTH_STRING", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
           "MINIO_KMS_SECRET_KEY", "LRF_S3_ACCESS_KEY", "LRF_S3_SECRET_KEY")


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(COMPOSE_DIR / ".env.example")


@pytest.fixture(scope="module")
def filled_env(env_example) -> dict[str, str]:
    """.env.example with every secret filled in, as a team's .env would be."""
    return {**env_example, **{name: f"value-of-{name.lower()}" for name in SECRETS}}


@pytest.fixture(scope="module")
def services(compose, filled_env) -> dict[str, dict]:
    return interpolate_tree(compose, filled_env)["services"]


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _env(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


def test_compose_defines_the_team_stack(compose):
    assert set(compose["services"]) == {
        "postgres", "prefect-server", "prefect-worker", "minio", "minio-init", "dask-scheduler", "dask-worker",
    }
    assert compose["services"]["dask-worker"]["deploy"]["replicas"] == 2
    assert set(compose["volumes"]) == {"postgres-data", "minio-data", "lrflow-work"}


def test_lrflow_services_run_one_image_built_from_this_repository(services):
    builds = {name: services[name]["build"] for name in LRFLOW_SERVICES}
    images = {services[name]["image"] for name in LRFLOW_SERVICES}
    assert len(images) == 1, images
    for name, build in builds.items():
        assert (COMPOSE_DIR / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]) == COMPOSE_DIR / "Dockerfile", name


def test_dockerfile_installs_the_pinned_set_and_runs_unprivileged():
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    run_lines = " ".join(re.sub(r"\\\n", " ", dockerfile).splitlines())
    assert "pip install -r requirements.in -c constraints.txt" in run_lines
    assert re.search(r"pip install (-c constraints\.txt )?-e \.", run_lines)
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    for variable in ("PREFECT_SERVER_ANALYTICS_ENABLED=false", "DO_NOT_TRACK=1", "LRFLOW_HOME=/opt/lrflow"):
        assert variable in dockerfile


def test_image_build_leaves_secrets_and_local_state_out():
    ignored = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().split()
    for pattern in (".git", ".venv", ".lrflow", "**/.env", ".dvc/config.local", ".dvc/cache"):
        assert pattern in ignored, pattern
    assert (COMPOSE_DIR / ".gitignore").read_text().split()[-1] == ".env"


def test_worker_serves_the_process_pool_of_prefect_yaml(services):
    command = _command(services["prefect-worker"])
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == "lrflow"
    assert command[command.index("--type") + 1] == "process"
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {"lrflow"}
    # prefect.yaml's pull step changes into $LRFLOW_HOME: where the image has the repository.
    assert _env(services["prefect-worker"])["LRFLOW_HOME"] == "/opt/lrflow"


def test_services_find_each_other_through_the_environment(services):
    scheduler = _command(services["dask-scheduler"])
    scheduler_port = scheduler[scheduler.index("--port") + 1]
    for name in ("prefect-worker", "dask-worker"):
        env = _env(services[name])
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["LRF_DASK_ADDRESS"] == f"tcp://dask-scheduler:{scheduler_port}"
        assert env["LRF_REGISTRY_BUCKET"] == "lrflow"
        assert env["PREFECT_API_AUTH_STRING"] == "value-of-prefect_auth_string"
    assert f"tcp://dask-scheduler:{scheduler_port}" in _command(services["dask-worker"])
    server = _command(services["prefect-server"])
    assert server[server.index("--port") + 1] == "4200"
    assert _env(services["prefect-server"])["PREFECT_SERVER_DATABASE_HOST"] == "postgres"


def test_start_order_waits_for_health_and_the_bucket(compose):
    worker = compose["services"]["prefect-worker"]["depends_on"]
    assert worker["prefect-server"]["condition"] == "service_healthy"
    assert worker["minio-init"]["condition"] == "service_completed_successfully"
    assert compose["services"]["dask-worker"]["depends_on"]["minio-init"]["condition"] == (
        "service_completed_successfully")
    assert compose["services"]["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert compose["services"]["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("postgres", "prefect-server", "minio"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_no_telemetry_from_any_service_that_runs_prefect_or_lrflow(services):
    for name in ("prefect-server", *LRFLOW_SERVICES):
        env = _env(services[name])
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false", name
        assert env["DO_NOT_TRACK"] == "1", name


def test_published_ports_bind_loopback_by_default(compose, env_example):
    defaults = {key: value for key, value in env_example.items() if key != "LRF_BIND_ADDRESS"}
    published = {}
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            assert isinstance(spec, str), f"{name}: use the HOST_IP:HOST:CONTAINER string form"
            host_ip, host_port, container_port = interpolate(spec, defaults).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {spec} beyond loopback"
            published[name, int(container_port)] = int(host_port)
    assert set(published) == {("prefect-server", 4200), ("minio", 9000), ("minio", 9001),
                              ("dask-scheduler", 8786), ("dask-scheduler", 8787)}
    assert env_example["LRF_BIND_ADDRESS"] == "127.0.0.1"


def test_compose_refuses_to_start_without_the_secrets(compose, env_example):
    assert {name: env_example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    with pytest.raises(MissingVariable):
        interpolate_tree(compose, env_example)


def test_secrets_are_only_references_to_the_env_file(compose):
    required = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}$")
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                match = required.match(value)
                assert match, f"{name}: {key} must be ${{VAR:?...}} from .env, found {value!r}"
                assert match.group("name") in SECRETS
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    assert not re.search(r"minioadmin|changeme|password123|AKIA[0-9A-Z]{16}", text, re.IGNORECASE)


def test_pipeline_gets_its_own_minio_user_not_the_root_credentials(compose):
    for name in LRFLOW_SERVICES:
        env = _env(compose["services"][name])
        assert not any(key.startswith("MINIO_ROOT") for key in env), name
    for name in ("prefect-worker", "dask-worker"):
        env = _env(compose["services"][name])
        assert env["AWS_ACCESS_KEY_ID"].startswith("${LRF_S3_ACCESS_KEY:?")
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${LRF_S3_SECRET_KEY:?")


def test_minio_init_makes_a_versioned_encrypted_private_bucket(services):
    script = _command(services["minio-init"])[-1]
    steps = [line.strip() for line in script.splitlines()]
    for step in ("mc mb --ignore-existing local/lrflow", "mc version enable local/lrflow",
                 "mc encrypt set sse-s3 local/lrflow", "mc anonymous set none local/lrflow"):
        assert step in steps, step
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in services["minio-init"]["volumes"]}
    policy_file = mounted[re.search(r"policy create local lrflow-pipeline (\S+)", script).group(1)]
    assert (COMPOSE_DIR / policy_file).is_file()


def test_minio_pipeline_policy_reads_and_writes_the_registry_and_never_deletes():
    policy = json.loads((COMPOSE_DIR / "minio-pipeline-policy.json").read_text())
    allowed, denied = set(), set()
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in action for action in actions), statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(r == "arn:aws:s3:::lrflow" or r.startswith("arn:aws:s3:::lrflow/") for r in resources)
        (allowed if statement["Effect"] == "Allow" else denied).update(actions)
    assert allowed == {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketVersioning"} <= denied


def test_lrflow_containers_are_unprivileged_with_a_read_only_root(services):
    for name in LRFLOW_SERVICES:
        service = services[name]
        assert service["user"].split(":")[0] not in ("0", "root"), name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
