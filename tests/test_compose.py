"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The services' commands are parsed by ganhpo's own argument parser, the files the Dockerfile
copies must exist, and the storage URL the containers get must point at the postgres service
with the password the postgres service is given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from ganhpo.artifacts import resolve_artifacts
from ganhpo.cli import build_parser
from ganhpo.spec import load_study_spec

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GANHPO_SERVICES = ("create", "worker", "dashboard")
PROFILES = {
    "postgres": ["db"], "pgbouncer": ["db"], "create": ["db"], "dashboard": ["db"],
    "minio": ["store"], "bucket": ["store"], "worker": ["worker"],
}  # fmt: skip


# What .env.example sets: every value compose needs from .env.
ENV_EXAMPLE = {
    k: v
    for k, _, v in (
        line.partition("=")
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
}


class Unset(Exception):
    """``${VAR:?message}`` without VAR: compose refuses to start."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?message}`` substitution."""

    def sub(m: re.Match[str]) -> str:
        name, kind, rest = m.group(1), m.group(3), m.group(4)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise Unset(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return re.sub(r"\$\{(\w+)(:([-?])([^}]*))?\}", sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def parse(service: dict[str, Any]) -> Any:
    command = service["command"]
    assert command[0] == "ganhpo"
    return build_parser().parse_args(command[1:])  # exits (fails the test) when invalid


def test_services_and_their_profiles(services: dict[str, Any]) -> None:
    # db: the database machine; store: an S3 server for a try; worker: workers only.
    assert {name: s.get("profiles") for name, s in services.items()} == PROFILES


def test_the_database_machine_publishes_postgres_and_pgbouncer_and_minio(
    services: dict[str, Any],
) -> None:
    published = {
        name: [interpolate(p, ENV_EXAMPLE) for p in s.get("ports", [])]
        for name, s in services.items()
    }
    assert published["postgres"] == ["5432:5432"]
    assert published["pgbouncer"] == ["6432:6432"]
    assert published["minio"] == ["9000:9000", "9001:9001"]
    assert published["worker"] == []  # --scale worker=N: no fixed port


def test_passwords_are_checked_with_scram_and_have_no_default(services: dict[str, Any]) -> None:
    pg = services["postgres"]["environment"]
    assert pg["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth-host=scram-sha-256" in pg["POSTGRES_INITDB_ARGS"]
    assert services["pgbouncer"]["environment"]["AUTH_TYPE"] == "scram-sha-256"
    for name in ("postgres", *GANHPO_SERVICES):
        env = services[name]["environment"]
        raw = env.get("POSTGRES_PASSWORD") or env["GANHPO_STORAGE"]
        with pytest.raises(Unset, match="POSTGRES_PASSWORD"):  # the ports are published
            interpolate(raw, {})


def test_a_worker_machine_takes_the_database_and_the_store_from_env(
    services: dict[str, Any],
) -> None:
    worker = services["worker"]
    env = {**ENV_EXAMPLE, "GANHPO_DB_HOST": "db.example.org", "POSTGRES_PASSWORD": "s3cret"}
    url = make_url(interpolate(worker["environment"]["GANHPO_STORAGE"], env))
    assert (url.host, url.port, url.password) == ("db.example.org", 6432, "s3cret")
    assert url.query["sslmode"] == "prefer"
    values = {k: interpolate(str(v), env) for k, v in worker["environment"].items()}
    assert values["GANHPO_ARTIFACTS"] == "s3://ganhpo/artifacts" == ENV_EXAMPLE["GANHPO_ARTIFACTS"]
    assert resolve_artifacts(values["GANHPO_ARTIFACTS"]) == "s3://ganhpo/artifacts"
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert values[key] == ENV_EXAMPLE[key] and "${" + key in worker["environment"][key]
    # Alone on a machine (the worker profile only): what it waits for is not required there.
    assert all(dep.get("required") is False for dep in worker["depends_on"].values())


def test_minio_s_bucket_is_the_store_s_and_its_keys_are_the_workers(
    services: dict[str, Any],
) -> None:
    minio = services["minio"]["environment"]
    assert "${AWS_ACCESS_KEY_ID" in minio["MINIO_ROOT_USER"]
    assert "${AWS_SECRET_ACCESS_KEY" in minio["MINIO_ROOT_PASSWORD"]
    bucket = " ".join(services["bucket"]["command"])
    made = re.search(r"mc mb --ignore-existing store/(\S+)", interpolate(bucket, ENV_EXAMPLE))
    assert made and ENV_EXAMPLE["GANHPO_ARTIFACTS"].startswith(f"s3://{made.group(1)}/")
    assert services["create"]["depends_on"]["bucket"] == {
        "condition": "service_completed_successfully",
        "required": False,
    }


def test_env_example_sets_what_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required <= {k for k, v in ENV_EXAMPLE.items() if v}
    assert set(ENV_EXAMPLE["COMPOSE_PROFILES"].split(",")) == {"db", "store", "worker"}


def test_workers_reach_postgres_through_pgbouncer_in_transaction_mode(
    services: dict[str, Any],
) -> None:
    bouncer = services["pgbouncer"]["environment"]
    pg_env = services["postgres"]["environment"]
    assert bouncer["POOL_MODE"] == "transaction" and bouncer["DB_HOST"] == "postgres"
    assert (bouncer["DB_USER"], bouncer["DB_NAME"], bouncer["DB_PASSWORD"]) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_DB"],
        pg_env["POSTGRES_PASSWORD"],
    )
    assert int(bouncer["DEFAULT_POOL_SIZE"]) < 100  # PostgreSQL's default max_connections
    env = {"POSTGRES_PASSWORD": "pw"}
    url = make_url(interpolate(services["worker"]["environment"]["GANHPO_STORAGE"], env))
    assert (url.host, url.port) == ("pgbouncer", int(bouncer["LISTEN_PORT"]))
    assert services["worker"]["depends_on"]["pgbouncer"] == {
        "condition": "service_started",
        "required": False,
    }


def test_postgres_has_a_healthcheck_and_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    check = pg["healthcheck"]
    assert "pg_isready" in " ".join(check["test"])
    assert all(key in check for key in ("interval", "timeout", "retries"))
    (volume,) = pg["volumes"]
    name, path = volume.split(":")
    assert path == "/var/lib/postgresql/data" and name in compose["volumes"]


def test_create_is_a_one_shot_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    create = services["create"]
    assert create["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert create["restart"] == "no"
    args = parse(create)
    assert (args.command, args.study_command, args.load_if_exists) == ("study", "create", True)
    assert (ROOT / args.spec).is_file()  # the image's WORKDIR holds studies/ as the repo does


def test_workers_scale_and_start_after_the_study_exists(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["depends_on"]["create"] == {
        "condition": "service_completed_successfully",
        "required": False,
    }
    args = parse(worker)
    spec = load_study_spec(ROOT / parse(services["create"]).spec)
    assert (args.command, args.study) == ("worker", spec.name)


def test_dashboard_listens_on_8080_for_everyone(services: dict[str, Any]) -> None:
    dash = services["dashboard"]
    args = parse(dash)
    assert (args.command, args.host, args.port) == ("dashboard", "0.0.0.0", 8080)
    (mapping,) = dash["ports"]
    assert interpolate(mapping, {}) == "8080:8080"
    assert dash["depends_on"] == {"create": {"condition": "service_completed_successfully"}}


def test_one_artifact_volume_at_one_path_named_by_ganhpo_artifacts(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    mounts = set()
    for name in GANHPO_SERVICES:
        service = services[name]
        path = interpolate(service["environment"]["GANHPO_ARTIFACTS"], {})  # no .env: the volume
        volumes = dict(v.split(":")[::-1] for v in service["volumes"])  # path -> volume
        mounts.add((volumes[path], path))
    ((volume, _),) = mounts
    assert volume in compose["volumes"]


@pytest.mark.parametrize("password", ["s3cret-from-env", "0123456789abcdef"])
def test_storage_url_points_at_postgres_with_its_password(
    services: dict[str, Any], password: str
) -> None:
    env = {"POSTGRES_PASSWORD": password}
    pg_env = {k: interpolate(v, env) for k, v in services["postgres"]["environment"].items()}
    for name in GANHPO_SERVICES:
        raw = services[name]["environment"]["GANHPO_STORAGE"]
        assert "${POSTGRES_PASSWORD" in raw  # from the environment / .env, never written here
        url = make_url(interpolate(raw, env))
        # The workers through PgBouncer (which logs in to postgres with the same user).
        expected = ("pgbouncer", 6432) if name == "worker" else ("postgres", 5432)
        assert (url.host, url.port) == expected
        assert url.username == pg_env["POSTGRES_USER"] and url.database == pg_env["POSTGRES_DB"]
        assert url.password == pg_env["POSTGRES_PASSWORD"] == password


def test_gpu_section_is_there_commented_out(services: dict[str, Any]) -> None:
    assert "deploy" not in services["worker"]  # CPU by default
    text = COMPOSE.read_text()
    block = re.search(r"^( *)# deploy:\n((?:\1#.*\n)+)", text, re.M)
    assert block, "a commented deploy section under the worker"
    indent = block.group(1)
    lines = [line[len(indent) + 2 :] for line in block.group(0).splitlines()]
    deploy = yaml.safe_load("\n".join(lines))["deploy"]
    (device,) = deploy["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_dockerfile_copies_existing_files_and_defaults_to_cpu_torch(
    services: dict[str, Any],
) -> None:
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY (.+) \S+$", text, re.M)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (ROOT / source).exists(), source
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    # The dashboard service needs its extra; s3:// artifact stores need boto3.
    assert 'pip install ".[dashboard,s3]"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^dashboard = \[", pyproject, re.M)
    assert re.search(r'^s3 = \["boto3>=1\.28"\]', pyproject, re.M)
    for name in GANHPO_SERVICES:  # compose passes the CUDA index through
        assert "TORCH_INDEX_URL" in services[name]["build"]["args"]


def test_dockerignore_keeps_local_results_out_but_not_what_is_copied() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "*.db", "ganhpo-artifacts", ".env"} <= ignored
    assert not {"ganhpo", "studies", "pyproject.toml", "README.md"} & ignored
