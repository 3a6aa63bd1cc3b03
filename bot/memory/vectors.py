"""The SQLite backend's dense search: a scope's vectors in process memory, scanned
with numpy (exactly, or through a sign-bit prefilter for large scopes).

PostgreSQL does this inside the server (pgvector's HNSW index, `pg_search.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Vectors"]


@dataclass
class Vectors:
    """One scope's vectors in memory: rows appended as new embeddings appear.

    Rows live in buffers with spare capacity (grown by half when full), so the two
    vectors a turn adds cost a copy of two rows, not of the whole scope.

    Up to `exact_below` vectors are scanned exactly. Above, a sign-bit copy (48 bytes
    for 384 dimensions instead of 1,536) is scanned first by Hamming distance, and
    only the `rescore` nearest are scored exactly: the scan reads a 32nd of the
    memory, and the order of the exact scores decides the result.
    """

    exact_below: int = 20_000
    rescore: int = 1_000
    max_id: int = 0
    size: int = 0
    ids: list[int] = field(default_factory=list)  # embedding row ids
    kinds: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    rows: Any = None  # float32 (capacity, dim); rows[:size] are in use
    signs: Any = None  # uint64 (words, capacity): sign bits, one row per 64-bit word

    def add(self, rows: Sequence[Any], dim: int) -> None:
        import numpy as np

        if not rows:
            return
        block = np.frombuffer(b"".join(r.vector for r in rows), dtype="<f4").reshape(-1, dim)
        end = self.size + len(block)
        if self.rows is None or end > len(self.rows):
            grown = np.empty((max(end, int(end * 1.5), 64), dim), dtype=np.float32)
            if self.rows is not None:
                grown[: self.size] = self.rows[: self.size]
            self.rows = grown
            self.signs = None  # rebuilt at the next scan that needs it
        self.rows[self.size : end] = block
        if self.signs is not None:
            self.signs[:, self.size : end] = _sign_words(block).T
        self.size = end
        for r in rows:
            self.ids.append(r.id)
            self.kinds.append(r.kind)
            self.items.append(r.item_id)
        self.max_id = max(self.max_id, rows[-1].id)

    def wipe(self) -> None:
        """Overwrite the vectors and sign bits with zeros and forget them."""
        for buffer in (self.rows, self.signs):
            if buffer is not None:
                buffer.fill(0)
        self.rows = self.signs = None
        self.size = 0
        self.ids, self.kinds, self.items = [], [], []

    def top(self, query: Any, n: int) -> list[tuple[str, int, float]]:
        import numpy as np

        if not self.size:
            return []
        matrix = self.rows[: self.size]
        n = min(n, self.size)
        if self.size < max(self.exact_below, self.rescore + n) or matrix.shape[1] % 64:
            scores = matrix @ query
            best = np.argpartition(-scores, n - 1)[:n]
            best = best[np.argsort(-scores[best])]
            return [(self.kinds[i], self.items[i], float(scores[i])) for i in best]
        if self.signs is None:
            # One row per 64-bit word (column-major): the Hamming distance is then six
            # passes over contiguous memory, about 6x faster than a sum across rows.
            self.signs = np.zeros((matrix.shape[1] // 64, len(self.rows)), dtype=np.uint64)
            self.signs[:, : self.size] = _sign_words(matrix).T
        signs = self.signs[:, : self.size]
        qbits = _sign_words(query[None, :])[0]
        distance = np.bitwise_count(signs[0] ^ qbits[0]).astype(np.uint16)
        for word in range(1, len(qbits)):
            distance += np.bitwise_count(signs[word] ^ qbits[word])
        near = np.argpartition(distance, self.rescore)[: self.rescore]
        scores = matrix[near] @ query
        order = np.argpartition(-scores, n - 1)[:n]
        order = order[np.argsort(-scores[order])]
        return [
            (self.kinds[i], self.items[i], float(scores[j]))
            for j, i in ((j, int(near[j])) for j in order)
        ]


def _sign_words(matrix: Any) -> Any:
    """The sign bits of each row, packed into uint64 words (dim must divide by 64)."""
    import numpy as np

    return np.packbits(matrix > 0, axis=1).view(np.uint64)
