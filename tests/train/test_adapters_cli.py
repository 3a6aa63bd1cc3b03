"""`bot adapters ...` in-process through the CLI's own entry (`run_app`), against the
fake vLLM and a real SQLite file: the whole life of an adapter, and a person's
mistakes each ending with its exit code and one line on stderr."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from bot.cli import app
from bot.cli_errors import run_app
from tests.fakes.openai_server import FakeOpenAIServer, Reply

GATE_PASSED = {"gate": {"passed": True, "checks": []}}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_app(app, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def adapter(tiny_lora_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "adapter"
    shutil.copytree(tiny_lora_dir, out)
    (out / "train_report.json").write_text(json.dumps(GATE_PASSED), encoding="utf-8")
    return out


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "bot.db"
    assert run(capsys, "db", "upgrade", "--db", str(path))[0] == 0
    return path


@pytest.fixture
def server(tiny_model_dir: Path) -> object:
    with FakeOpenAIServer(base_root=str(tiny_model_dir.resolve())) as fake:
        yield fake


def test_an_adapters_life(
    capsys: pytest.CaptureFixture[str], db: Path, adapter: Path, server: FakeOpenAIServer
) -> None:
    url = server.base_url
    code, out, err = run(
        capsys, "adapters", "deploy", "--persona", "sam", "--adapter", str(adapter),
        "--base-url", url, "--canary", "0.3", "--name", "sam-v1", "--db", str(db),
    )  # fmt: skip
    assert code == 0, err
    assert "deployed sam-v1 for sam on tiny: canary, 30% of conversations" in out
    assert "sam-v1" in server.adapters

    code, out, _ = run(capsys, "adapters", "list", "--json", "--db", str(db))
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["name"], row["status"], row["canary_share"], row["gate_passed"]) == (
        "sam-v1", "canary", 0.3, True,
    )  # fmt: skip

    code, out, _ = run(capsys, "adapters", "compare", "--db", str(db))
    assert code == 0 and "sam-v1 (sam): canary 0 replies" in out and "too little feedback" in out

    assert run(capsys, "adapters", "promote", "sam-v1", "--db", str(db))[0] == 0
    code, out, _ = run(capsys, "adapters", "list", "--db", str(db))
    assert "sam-v1" in out and "serving" in out

    server.restart()
    code, out, _ = run(capsys, "adapters", "reload", "--base-url", url, "--db", str(db))
    assert code == 0 and "loaded again: sam-v1" in out and "sam-v1" in server.adapters

    code, out, _ = run(
        capsys, "adapters", "rollback", "--persona", "sam", "--unload", "--base-url", url,
        "--db", str(db),
    )  # fmt: skip
    assert code == 0 and "rolled back sam-v1; sam is answered by the base model" in out
    assert server.adapters == {}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], db: Path, adapter: Path, server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    def deploy(*extra: str, url: str | None = None, path: Path = adapter) -> tuple[int, str]:
        code, _, err = run(
            capsys, "adapters", "deploy", "--persona", "sam", "--adapter", str(path),
            "--base-url", url or server.base_url, "--db", str(db), *extra,
        )  # fmt: skip
        return code, err

    (adapter / "train_report.json").write_text(json.dumps({"gate": {"passed": False}}))
    cases = [
        (deploy(path=tmp_path / "nowhere"), 2, "adapter file error: ", "no such adapter"),
        (deploy(), 2, "usage error: ", "the gate failed"),
        (deploy("--name", "../../etc"), 2, "usage error: ", "adapter name"),
        (deploy("--canary", "2"), 2, "usage error: ", "--canary"),
        (deploy("--force", url=f"http://127.0.0.1:{_closed_port()}/v1"), 3, "backend error: ",
         "cannot be reached"),
        (deploy("--force", url="not a url"), 2, "usage error: ", "--base-url"),
    ]  # fmt: skip
    server.script_admin(Reply.http_error(400, message="bad adapter \x1b[2J"))
    cases.append((deploy("--force"), 3, "backend error: ", "HTTP 400: bad adapter"))
    cases.append(
        (run(capsys, "adapters", "promote", "nope", "--db", str(db))[::2], 2, "usage error: ",
         "no adapter named 'nope'")
    )  # fmt: skip
    cases.append(
        (run(capsys, "adapters", "rollback", "--persona", "Bad Id", "--db", str(db))[::2], 2,
         "usage error: ", "persona id")
    )  # fmt: skip
    cases.append(
        (run(capsys, "adapters", "list", "--db", str(tmp_path / "missing.db"))[::2], 3,
         "storage error: ", "")
    )  # fmt: skip
    for (code, err), want_code, label, text in cases:
        assert code == want_code, err
        assert err.startswith(label) and text in err, err
        assert err.count("\n") == 1 and "Traceback" not in err and "\x1b" not in err
    assert server.adapters == {}  # none of them loaded anything
