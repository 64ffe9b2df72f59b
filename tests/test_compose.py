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

from ganhpo.cli import build_parser
from ganhpo.spec import load_study_spec

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GANHPO_SERVICES = ("create", "worker", "dashboard")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, value)


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


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "pgbouncer", *GANHPO_SERVICES}


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
    url = make_url(interpolate(services["worker"]["environment"]["GANHPO_STORAGE"], {}))
    assert (url.host, url.port) == ("pgbouncer", int(bouncer["LISTEN_PORT"]))
    assert services["worker"]["depends_on"]["pgbouncer"] == {"condition": "service_started"}


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
    assert create["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert create["restart"] == "no"
    args = parse(create)
    assert (args.command, args.study_command, args.load_if_exists) == ("study", "create", True)
    assert (ROOT / args.spec).is_file()  # the image's WORKDIR holds studies/ as the repo does


def test_workers_scale_and_start_after_the_study_exists(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["depends_on"]["create"] == {"condition": "service_completed_successfully"}
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
        path = service["environment"]["GANHPO_ARTIFACTS"]
        volumes = dict(v.split(":")[::-1] for v in service["volumes"])  # path -> volume
        mounts.add((volumes[path], path))
    ((volume, _),) = mounts
    assert volume in compose["volumes"]


@pytest.mark.parametrize("password", [None, "s3cret-from-env"])
def test_storage_url_points_at_postgres_with_its_password(
    services: dict[str, Any], password: str | None
) -> None:
    env = {"POSTGRES_PASSWORD": password} if password else {}
    pg_env = {k: interpolate(v, env) for k, v in services["postgres"]["environment"].items()}
    for name in GANHPO_SERVICES:
        raw = services[name]["environment"]["GANHPO_STORAGE"]
        assert "${POSTGRES_PASSWORD" in raw  # from the environment / .env, never written here
        url = make_url(interpolate(raw, env))
        # The workers through PgBouncer (which logs in to postgres with the same user).
        expected = ("pgbouncer", 6432) if name == "worker" else ("postgres", 5432)
        assert (url.host, url.port) == expected
        assert url.username == pg_env["POSTGRES_USER"] and url.database == pg_env["POSTGRES_DB"]
        assert url.password == pg_env["POSTGRES_PASSWORD"] == (password or "ganhpo-dev")


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
