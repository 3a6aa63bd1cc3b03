"""The deployment files: the Grafana dashboard asks only for metrics bot/metrics/
exports (and shows every family), and deploy/compose.yaml parses, has its services
with a healthcheck each, and passes `docker compose config` where docker is here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.metrics import metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\bpersonabot_[a-z0-9_]+\b")


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "personabot.json").read_text())
    return data


def test_the_dashboard_references_only_metrics_that_exist() -> None:
    dashboard = _dashboard()
    queries = [
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t
    ] + _strings(dashboard["templating"])
    used = {name for q in queries for name in NAME.findall(q)}
    assert used, "no personabot_ metric in the dashboard"
    unknown = used - metric_names()
    assert not unknown, f"the dashboard asks for metrics bot/metrics/ does not export: {unknown}"


def test_the_dashboard_asks_vllm_only_in_its_own_job() -> None:
    queries = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    for query in queries:
        if "vllm:" in query:
            assert 'job="vllm"' in query and "personabot_" not in query, query


def test_the_dashboard_shows_every_metric_family() -> None:
    text = json.dumps(_dashboard())
    families = {
        n for n in metric_names() if not n.endswith(("_created", "_bucket", "_sum", "_count"))
    }
    # A counter's family is shown through its _total samples, a histogram's through
    # its buckets: either spelling counts as shown.
    missing = {f for f in families if f not in text and f"{f}_" not in text}
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_the_dashboard_panels_are_well_formed() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "personabot"
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_has_two_workers_vllm_and_postgresql_each_with_a_healthcheck() -> None:
    services = _compose()["services"]
    assert {"postgres", "vllm", "bot-1", "bot-2"} <= set(services)
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg")
    assert int(services["postgres"]["image"].rpartition(":pg")[2]) >= 15
    # A forget's removed WAL segments must not be recycled with their bytes.
    assert "wal_recycle=off" in services["postgres"]["command"]
    assert "vllm/vllm-openai" in services["vllm"]["image"]
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    workers = [services["bot-1"], services["bot-2"]]
    ids = {w["environment"]["BOT_WORKER_ID"] for w in workers}
    assert ids == {"bot-1", "bot-2"}
    for worker in workers:
        env = worker["environment"]
        assert env["BOT_DATABASE__URL"].startswith("postgresql+psycopg://")
        assert env["BOT_LLM__BASE_URL"] == "http://vllm:8000/v1"
        port = env["BOT_OPS__PORT"]
        assert f"127.0.0.1:{port}/readyz" in " ".join(worker["healthcheck"]["test"])
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert worker["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_compose_mounts_files_that_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith(("./", "../")) and "${" not in source:
                assert (DEPLOY / source).exists(), volume


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed here")
    env = {**os.environ, "POSTGRES_PASSWORD": "pw", "VLLM_API_KEY": "key"}
    for extra in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            [*command, "-f", str(DEPLOY / "compose.yaml"), *extra, "config", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    # Without the passwords it refuses, naming what to set.
    bare = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    result = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=bare,
        timeout=60,
    )
    assert result.returncode != 0 and "set POSTGRES_PASSWORD in deploy/.env" in result.stderr
