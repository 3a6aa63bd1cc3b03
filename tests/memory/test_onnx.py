"""The ONNX Runtime embedder: exported from the real offline MiniLM, same vectors,
cached, and falling back to torch when it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from bot.app import build_memory
from bot.config import MemorySettings
from bot.db import Database
from bot.memory import onnx
from bot.memory.embeddings import (
    EmbeddingUnavailable,
    FallbackEmbedder,
    SentenceTransformerEmbedder,
    resolve_model,
)
from bot.memory.onnx import OnnxEmbedder

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


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export for the module (it takes several seconds)."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    OnnxEmbedder(MODEL, cache_dir=folder).embed(["warm up"])
    return folder


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
