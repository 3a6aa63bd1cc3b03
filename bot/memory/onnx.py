"""The embedding model run by ONNX Runtime: the same vectors, a third of the latency.

A memory search embeds one short query on the turn's critical path. PyTorch spends
most of the ~10 ms that takes on dispatch overhead, not arithmetic; ONNX Runtime
runs the same graph in ~3 ms on the same CPU. The model is exported once from its
sentence-transformers form (`torch.onnx.export`) into a cache directory, with its
tokenizer and pooling settings beside it, so later processes load it without
importing torch at all.

Only encoders whose pooling is `mean` or `cls` (optionally normalised) are
exported; anything else raises `EmbeddingUnavailable` and the caller falls back to
`SentenceTransformerEmbedder`. onnxruntime, onnx and onnxscript are the `memory`
extra; nothing here imports them at module level.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.memory.embeddings import (
    EmbeddingInputError,
    EmbeddingUnavailable,
    Matrix,
    embeddable,
    resolve_model,
)
from bot.memory.onnx_export import EXPORT_LIMIT_S, RECIPE, UNEXPORTABLE

__all__ = ["OnnxEmbedder", "default_cache_dir", "onnx_available"]

#: Exports in this process, one at a time: a second embedder of the same model waits
#: for the first's export and then finds it in the cache.
_EXPORTS = threading.Lock()


def onnx_available() -> bool:
    """True when onnxruntime (to run) and onnxscript (to export) are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def default_cache_dir() -> Path:
    """Where exported models live: $XDG_CACHE_HOME/persona-bot/onnx (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "persona-bot" / "onnx"


class OnnxEmbedder:
    """A sentence-transformers model exported to ONNX on first use, then run by ORT.

    Loads lazily in whichever thread first calls `embed` (the memory store's worker).
    Any failure to export or load raises `EmbeddingUnavailable` once and stays off.

    A single text (a search query) runs on a one-thread session: on a small machine
    the SQLite search runs at the same moment on the other core, and one thread
    without contention is faster than two with it. Batches (indexing) use a session
    with `threads` (default: all cores).
    """

    def __init__(
        self,
        model: str,
        *,
        cache_dir: Path | None = None,
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self.name = model
        self.cache_dir = cache_dir or default_cache_dir()
        self.batch_size = batch_size
        self.threads = threads
        self._folder: Path | None = None
        self._sessions: dict[bool, Any] = {}  # single text? -> session
        self._dimension = 0
        self._tokenizer: Any = None
        self._pooling = "mean"
        self._normalize = True
        self._error: EmbeddingUnavailable | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._tokenizer is not None

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Vectors for `texts`, one L2-normalised float32 row each."""
        import numpy as np

        self._load()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        texts = embeddable(texts)
        try:
            session = self._session(single=len(texts) == 1)
            # Similar lengths share a batch, so little compute goes to padding.
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            out: list[Any] = [None] * len(texts)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                vectors = self._run(session, [texts[i] for i in chunk])
                for row, i in enumerate(chunk):
                    out[i] = vectors[row]
            return np.ascontiguousarray(np.stack(out), dtype=np.float32)
        except EmbeddingInputError:
            raise
        except Exception as exc:
            raise EmbeddingUnavailable(f"embedding failed: {type(exc).__name__}: {exc}") from exc

    def _run(self, session: Any, texts: list[str]) -> Any:
        import numpy as np

        try:
            encodings = self._tokenizer.encode_batch(texts)
        except Exception as exc:  # the input, not the runtime: nothing to turn off
            raise EmbeddingInputError(f"cannot tokenize: {type(exc).__name__}: {exc}") from exc
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self._normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    # -- loading ----------------------------------------------------------------------

    def _load(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            if self._error is not None:
                raise self._error
            try:
                folder = self._exported()
                self._open(folder)
            except EmbeddingUnavailable as exc:
                self._error = exc
                raise
            except Exception as exc:  # ImportError, a failed export, a corrupt cache
                self._error = EmbeddingUnavailable(
                    f"ONNX embedding model {self.name!r} unavailable: {type(exc).__name__}: {exc}"
                )
                raise self._error from exc

    def _exported(self) -> Path:
        """The cache folder for this model, exporting it first if it is not there."""
        source = resolve_model(self.name)
        folder = self.cache_dir / _cache_key(self.name, source)
        if (folder / "settings.json").exists():
            return folder
        with _EXPORTS:
            if (folder / "settings.json").exists():  # exported while this one waited
                return folder
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _sweep_staging(self.cache_dir)
            staging = Path(tempfile.mkdtemp(prefix=".export-", dir=self.cache_dir))
            try:
                _export(source, staging)
                try:
                    staging.rename(folder)
                except OSError:  # another process exported it meanwhile: use theirs
                    if not (folder / "settings.json").exists():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _open(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        settings = json.loads((folder / "settings.json").read_text())
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=int(settings["max_seq_length"]))
        tokenizer.enable_padding(pad_id=int(settings["pad_id"]), pad_token=settings["pad_token"])
        self._folder = folder
        self._pooling = settings["pooling"]
        self._normalize = bool(settings["normalize"])
        self._dimension = int(settings.get("dimension") or 0)
        self._session(single=False)  # a broken file fails here, at load time
        self._tokenizer = tokenizer

    def _session(self, *, single: bool) -> Any:
        session = self._sessions.get(single)
        if session is not None:
            return session
        import onnxruntime as ort

        assert self._folder is not None
        options = ort.SessionOptions()
        threads = 1 if single else self.threads
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads must not spin: the SQLite reader runs beside them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initialisers are noise
        session = ort.InferenceSession(
            str(self._folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._sessions[single] = session
        return session


def _cache_key(name: str, source: str) -> str:
    """A folder name for the export of model `name` (files at `source`): readable,
    and different whenever the model's files change."""
    digest = hashlib.sha256(f"{RECIPE}|{source}".encode())
    path = Path(source)
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_file():
                stat = item.stat()
                digest.update(
                    f"|{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                )
    stem = re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/")).strip("-.")[-80:] or "model"
    return f"{stem}-{digest.hexdigest()[:16]}"


def _export(source: str, folder: Path) -> None:
    """Export `source` (a sentence-transformers model) into `folder`, in a child
    process (`bot.memory.onnx_export`).

    A child, because the export is not the process's to disturb: torch.export keeps
    global tracing state (two exports in two threads break each other), and the
    exporter prints to stdout, which a thread can only silence by swapping
    `sys.stdout` for every thread at once. The child's stdout goes nowhere and its
    stderr to a file, of which the end is quoted when it fails.
    """
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "export.log"
    env = dict(os.environ)
    # The child imports this package from wherever this process did.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    module = "bot.memory.onnx_export"
    command = [sys.executable, "-m", module, source, str(folder), str(EXPORT_LIMIT_S)]
    with log_path.open("wb") as log_file:
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter and module; args are a path
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=env,
                timeout=EXPORT_LIMIT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddingUnavailable(
                f"exporting {source!r} took over {EXPORT_LIMIT_S} s"
            ) from exc
    tail = _tail(log_path)
    log_path.unlink(missing_ok=True)
    if done.returncode == UNEXPORTABLE:
        raise EmbeddingUnavailable(tail.splitlines()[-1] if tail else f"cannot export {source!r}")
    if done.returncode != 0:
        raise RuntimeError(f"the export exited with {done.returncode}: {tail}")


def _sweep_staging(cache_dir: Path) -> None:
    """Remove the staging folders of exports that were killed (kill -9 of this or
    another process): older than an export may run, so no live one is among them."""
    cutoff = time.time() - 2 * EXPORT_LIMIT_S
    for staging in cache_dir.glob(".export-*"):
        try:
            if staging.is_dir() and staging.stat().st_mtime < cutoff:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:  # gone meanwhile
            continue


def _tail(path: Path, limit: int = 2000) -> str:
    """The last `limit` bytes of the file at `path`, as text (bounded, however much
    the child wrote)."""
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - limit))
        return file.read().decode("utf-8", "replace").strip()
