"""Shared fixtures: the tiny local model, the fake OpenAI server, the real vLLM server.

The test process never reaches the Hugging Face hub (HF_HUB_OFFLINE is set below,
before anything imports huggingface_hub).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.postgres import PostgresServer, postgres_available, start_postgres

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The first reply to a person starts with the persona's AI disclosure (bot/safety):
# off for tests about other things, whose replies are compared word for word;
# tests/safety turns it on.
os.environ.setdefault("BOT_SAFETY__DISCLOSE_FIRST_CONTACT", "false")
# A burst from one person is answered once (bot/safety/coalesce.py): off for tests
# that count a reply per message (delivery, recovery, workers); the tests of bursts
# (tests/safety, the adapters' burst tests) turn it on.
os.environ.setdefault("BOT_ENGINE__COALESCE_BURSTS", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Apps opened by tests embed with the default model, which is exported to ONNX once
# into the cache: keep that export in the checkout (ignored), not in the home folder.
os.environ.setdefault("XDG_CACHE_HOME", str(REPO_ROOT / ".cache"))

#: The name the vLLM fixture serves the tiny model under.
VLLM_MODEL_NAME = "tiny"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults: a test that ran the CLI in-process
    configured logging for the process (a WARNING level, its stderr), and a later
    test's `capture_logs` would miss every info event behind that level."""
    yield
    import structlog

    structlog.reset_defaults()


# -- databases: the contract suite runs on SQLite and on a real PostgreSQL ----------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL 18 server (pgvector, pg_trgm) for the whole test session.

    Its data folder is a temporary folder of its own, not under pytest's base temp:
    pytest prunes old base temps when another session starts, which would delete a
    running server's files under it."""
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="bot-pg-"))
    server = start_postgres(folder / "data")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database (extensions installed, no tables) for one test."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for one test, once on a SQLite file and once on PostgreSQL:
    how a store's tests become the contract both backends must keep."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/contract.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- the tiny model -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the tiny random Llama model and its ChatML tokenizer."""
    from bot.llm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (r=4, q_proj/v_proj) for the tiny model that changes its output."""
    from bot.llm.tiny import build_tiny_lora

    return build_tiny_lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "tiny-lora")


# -- the fake OpenAI server -----------------------------------------------------------


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A scriptable OpenAI-compatible server on 127.0.0.1 (runs in its own thread, so
    it serves tests on any event loop)."""
    with FakeOpenAIServer(models=(VLLM_MODEL_NAME,)) as server:
        yield server


# -- the real vLLM server -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _vllm_python() -> Path:
    venv = Path(os.environ.get("BOT_VLLM_VENV", REPO_ROOT / ".venv-vllm"))
    return venv / "bin" / "python"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def vllm_model_name() -> str:
    """The served model name of the tiny model on `vllm_server`."""
    return VLLM_MODEL_NAME


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT/v1`) of a real vLLM OpenAI server on the CPU.

    Serves the tiny model as `tiny`, with runtime LoRA loading enabled (max rank 8).
    Needs the venv from `scripts/setup_vllm.sh` at `$BOT_VLLM_VENV` (default
    `.venv-vllm`): skipped without it, except under CI (`$CI` set), where it fails.
    """
    python = _vllm_python()
    if not python.exists():
        venv = python.parent.parent
        reason = f"no vLLM venv at {venv} (run scripts/setup_vllm.sh or set BOT_VLLM_VENV)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the vLLM tests: {reason}")
        pytest.skip(reason)
    # Built only now, so that a skip costs nothing.
    tiny_model_dir: Path = request.getfixturevalue("tiny_model_dir")
    work: Path = request.getfixturevalue("tmp_path_factory").mktemp("vllm")
    port = _free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CACHE_ROOT": str(work / "cache"),
        "TMPDIR": str(work),
    }
    # The project's venv must not leak into vLLM's interpreter.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model_dir), "--served-model-name", VLLM_MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "512", "--dtype", "float32", "--enforce-eager",
        "--distributed-executor-backend", "uni",
        "--enable-lora", "--max-lora-rank", "8",
    ]  # fmt: skip
    log_path = work / "vllm.log"
    with log_path.open("wb") as log:
        # Own session, so the whole process group can be stopped at the end.
        proc = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after 120 s; log {log_path}:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        _stop(proc)
        if not os.environ.get("BOT_KEEP_VLLM_LOG"):
            shutil.rmtree(work / "cache", ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def pytest_report_header(config: pytest.Config) -> str:
    python = _vllm_python()
    state = "found" if python.exists() else "missing (vllm tests skip; CI fails)"
    return f"vLLM venv: {python.parent.parent} ({state}); python {sys.version.split()[0]}"
