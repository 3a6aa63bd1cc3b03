"""The ONNX Runtime embedder: exported from the real offline MiniLM, same vectors,
cached, and falling back to torch when it cannot run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from bot.app import build_memory
from bot.config import MemorySettings
from bot.db import Database
from bot.memory import onnx
from bot.memory.embeddings import (
    EmbeddingInputError,
    EmbeddingUnavailable,
    FallbackEmbedder,
    SentenceTransformerEmbedder,
    resolve_model,
)
from bot.memory.ledger import Ledger
from bot.memory.onnx import OnnxEmbedder
from bot.memory.onnx_export import EXPORT_LIMIT_S
from bot.memory.store import SQLiteMemory
from tests.memory.conftest import BrokenEmbedder, say, scope_for

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "My dog Rex turned three last week.",
    "I moved to Berlin in May for the new job",
    "我上周去了北京",
    "",
    "🙂🙂🙂",
    "word " * 2000,  # longer than the model's 256 tokens: truncated, like torch does
]


@dataclass
class Export:
    """What the module's one export left, and what this thread saw meanwhile."""

    folder: Path
    vectors: list[np.ndarray] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stdouts: set[int] = field(default_factory=set)  # ids of every sys.stdout seen


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """One export for the module (it takes half a minute on 2 cores), asked for by two
    embedders at once in two threads while this thread keeps looking at sys.stdout;
    `test_an_export_is_shared_and_leaves_stdout_alone` checks what was seen."""
    seen = Export(tmp_path_factory.mktemp("onnx-cache"))

    def load() -> None:
        try:
            seen.vectors.append(OnnxEmbedder(MODEL, cache_dir=seen.folder).embed(["warm up"]))
        except BaseException as exc:
            seen.errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        seen.stdouts.add(id(sys.stdout))
        threads[0].join(0.005)
    for thread in threads:
        thread.join()
    seen.stdouts.add(id(sys.stdout))
    return seen


@pytest.fixture(scope="module")
def cache(export: Export) -> Path:
    return export.folder


def test_an_export_is_shared_and_leaves_stdout_alone(export: Export) -> None:
    """The export runs in a child process: this process's stdout is never swapped
    (a thread that swaps it swaps it for all, and two such threads can leave a
    closed file behind), and two embedders of one model export it once."""
    assert export.errors == []
    assert len(export.stdouts) == 1
    assert not sys.stdout.closed
    [folder] = export.folder.iterdir()  # one export, no staging left
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.onnx",
        "settings.json",
        "tokenizer.json",
    ]
    first, second = export.vectors
    assert first.shape == (1, 384) and np.allclose(first, second)


def test_a_model_the_recipe_cannot_export_says_why(tmp_path: Path) -> None:
    """A max-pooling copy of the model: the child exits with the reason, which is
    the error, and nothing is cached."""
    source = Path(resolve_model(MODEL))
    model = tmp_path / "max-pooled"
    model.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (model / item.name).symlink_to(item)
    (model / "1_Pooling").mkdir()
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    embedder = OnnxEmbedder(str(model), cache_dir=tmp_path / "cache")
    with pytest.raises(EmbeddingUnavailable, match=r"cannot export .*: pooling 'max'"):
        embedder.embed(["x"])
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder(MODEL).embed(TEXTS)


def test_onnx_vectors_equal_the_torch_models(cache: Path, torch_vectors: np.ndarray) -> None:
    embedder = OnnxEmbedder(MODEL, cache_dir=cache)
    batch = embedder.embed(TEXTS)
    assert batch.shape == torch_vectors.shape and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    assert float((batch * torch_vectors).sum(axis=1).min()) > 0.9999
    # One text at a time goes through the one-thread session: same vectors.
    for text, expected in zip(TEXTS, torch_vectors, strict=True):
        assert float(embedder.embed([text])[0] @ expected) > 0.9999
    assert embedder.embed([]).shape == (0, batch.shape[1])


def test_a_cached_export_is_reused_without_exporting(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(source: str, folder: Path) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx, "_export", no_export)
    embedder = OnnxEmbedder(MODEL, cache_dir=cache)
    assert embedder.embed(["hello"]).shape == (1, 384)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "settings.json").exists()  # no staging left


def test_a_killed_exports_staging_is_swept_and_a_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 during an export leaves its staging folder (90 MB of model): the next
    export removes those older than an export may run, never a younger one (another
    process may be exporting into it)."""
    cache_dir = tmp_path / "cache"
    killed, live = cache_dir / ".export-killed", cache_dir / ".export-live"
    for folder in (killed, live):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half an export")
    old = time.time() - 3 * EXPORT_LIMIT_S
    os.utime(killed, (old, old))

    def refused(source: str, folder: Path) -> None:
        raise EmbeddingUnavailable("not this time")

    monkeypatch.setattr(onnx, "_export", refused)
    with pytest.raises(EmbeddingUnavailable, match="not this time"):
        OnnxEmbedder(MODEL, cache_dir=cache_dir).embed(["x"])
    assert sorted(p.name for p in cache_dir.iterdir()) == [".export-live"]


def test_the_export_child_ends_itself_at_its_limit(tmp_path: Path) -> None:
    """The child bounds its own time (a parent killed by -9 cannot stop it), and
    refuses arguments it does not understand."""
    child = [sys.executable, "-m", "bot.memory.onnx_export"]
    source = resolve_model(MODEL)
    done = subprocess.run(
        [*child, source, str(tmp_path), "1"], capture_output=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGALRM
    assert not (tmp_path / "settings.json").exists()
    for bad in ([], [source], [source, str(tmp_path), "soon"], [source, str(tmp_path), "-1"]):
        refused = subprocess.run(
            [*child, *bad], capture_output=True, text=True, timeout=120, check=False
        )
        assert refused.returncode == 2 and "usage:" in refused.stderr


def test_a_broken_cache_or_model_is_unavailable_once(cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cache"
    (folder := broken / onnx._cache_key(MODEL, resolve_model(MODEL))).mkdir(parents=True)
    for name in ("settings.json", "tokenizer.json"):
        (folder / name).write_bytes((next(cache.iterdir()) / name).read_bytes())
    (folder / "model.onnx").write_bytes(b"not a model")
    embedder = OnnxEmbedder(MODEL, cache_dir=broken)
    with pytest.raises(EmbeddingUnavailable, match="unavailable"):
        embedder.embed(["x"])
    with pytest.raises(EmbeddingUnavailable):  # the same error, not a second attempt
        embedder.embed(["x"])
    missing = OnnxEmbedder(str(tmp_path / "no-such-model"), cache_dir=tmp_path / "c2")
    with pytest.raises(EmbeddingUnavailable):
        missing.embed(["x"])
    assert not any((tmp_path / "c2").glob("*/settings.json"))  # nothing half-exported


def test_fallback_switches_to_torch_once_and_logs_it(tmp_path: Path) -> None:
    broken = OnnxEmbedder(MODEL, cache_dir=tmp_path / "cache")
    broken._error = EmbeddingUnavailable("onnxruntime refused")  # as after a failed load
    fallback = FallbackEmbedder(broken, SentenceTransformerEmbedder(MODEL))
    with capture_logs() as logs:
        first = fallback.embed(["my dog Rex"])
        second = fallback.embed(["my dog Rex"])
    assert first.shape == (1, 384) and np.allclose(first, second)
    assert [e["event"] for e in logs].count("memory.embedder_fallback") == 1
    assert fallback.reason == "onnxruntime refused"
    with pytest.raises(ValueError, match="disagree"):
        FallbackEmbedder(OnnxEmbedder("a"), SentenceTransformerEmbedder("b"))


async def test_the_runtime_setting_picks_the_embedder(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path}/m.db")
    auto = build_memory(db, MemorySettings(embedding_cache_dir=tmp_path / "c"))
    assert isinstance(auto.embedder, FallbackEmbedder)
    assert isinstance(auto.embedder.first, OnnxEmbedder)
    assert auto.embedder.first.cache_dir == tmp_path / "c"
    plain = build_memory(db, MemorySettings(embedding_runtime="torch"))
    assert isinstance(plain.embedder, SentenceTransformerEmbedder)
    gpu = build_memory(db, MemorySettings(embedding_device="cuda"))
    assert isinstance(gpu.embedder, SentenceTransformerEmbedder)
    assert gpu.embedder.device == "cuda"
    off = build_memory(db, MemorySettings(embedding_model="none"))
    assert off.embedder is None
    for memory in (auto, plain, gpu, off):
        await memory.aclose()
    await db.aclose()


#: Text as it arrives from undecodable bytes (argv, a file read with surrogateescape),
#: control characters, and nothing but them.
HOSTILE_QUERIES = [
    "my dog " + os.fsdecode(b"\xff\xfe"),
    "\udcff",
    "\ud800 Rex \udfff",
    "\x00\x01\x7f dog",
    "",
    "\u200b\u2028\ufeff",
]


class NoTorch(BrokenEmbedder):
    """The fallback's second: fails, so a switch to it could not go unnoticed."""

    name = MODEL


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_bad_bytes_in_a_query_never_turn_onnx_off(
    cache: Path, tmp_path: Path, query: str
) -> None:
    embedder = FallbackEmbedder(OnnxEmbedder(MODEL, cache_dir=cache), NoTorch())
    db = Database.open(f"sqlite:///{tmp_path}/m.db")
    memory = SQLiteMemory(db, embedder=embedder, embed_delay_s=0)
    scope, mid, _ = await say(Ledger(db), scope_for("ann"), "My dog Rex turned three")
    memory.enqueue([("message", mid)])
    await memory.flush()
    with capture_logs() as logs:
        await memory.search(scope, query)
        hits = await memory.search(scope, "how old is my dog")
    assert embedder.first is not None and embedder.reason is None  # still ONNX
    assert "memory.embedder_fallback" not in [e["event"] for e in logs]
    assert [h.id for h in hits] == [mid]
    await memory.aclose()
    await db.aclose()


def test_both_runtimes_embed_hostile_text(cache: Path) -> None:
    for embedder in (OnnxEmbedder(MODEL, cache_dir=cache), SentenceTransformerEmbedder(MODEL)):
        vectors = embedder.embed(HOSTILE_QUERIES)
        assert vectors.shape == (len(HOSTILE_QUERIES), 384)
        assert np.isfinite(vectors).all()


def test_a_tokenizer_failure_is_the_inputs_not_the_runtimes(cache: Path) -> None:
    onnx_embedder = OnnxEmbedder(MODEL, cache_dir=cache)
    fallback = FallbackEmbedder(onnx_embedder, NoTorch())
    fallback.embed(["warm"])

    class Refusing:
        def encode_batch(self, texts: list[str]) -> None:
            raise TypeError("not a sequence of str")

    real, onnx_embedder._tokenizer = onnx_embedder._tokenizer, Refusing()
    with pytest.raises(EmbeddingInputError):
        fallback.embed(["x"])
    onnx_embedder._tokenizer = real
    assert fallback.first is onnx_embedder and fallback.embed(["x"]).shape == (1, 384)
