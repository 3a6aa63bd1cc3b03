"""The word lists of PostgreSQL's memory search: BM25 over the `search_words` GIN
index, trigrams for CJK runs, a substring scan for short ones (see pg_search.py).

BM25 is computed in SQL, as SQLite's FTS5 ranks (`ts_rank` has no inverse document
frequency, so a common word would count as much as a rare one: 4 points of LoCoMo
recall@10). Each statement is one round trip that

1. in a scope of `PRUNE_ABOVE` rows or more, counts each query word's rows up to a
   cap (`COMMON_SHARE` of the scope; the `LIMIT` stops a common word's count early)
   and leaves the common ones out of the match: their rows are still scored for
   them, with their frequency floored at the cap. A word in many of a large scope's
   rows would otherwise have every one of them fetched, where FTS5 walks its
   doclists. When every word is common, nothing is left out;
2. fetches the rows that match any other word, with one flag per word;
3. computes each word's IDF once, over those rows (`float8`: `numeric`'s `ln`, per
   row and word, was most of the statement's time at 100k rows), and returns the
   best `n` by BM25.

Every statement here is planned for its own values (`CUSTOM_PLANS`). psycopg
prepares a statement run five times on a connection, and PostgreSQL then may
switch to one generic plan, planned without the scope. In a database of many small
scopes that plan reads the scope's rows by its index and tests every one against
the words: right for a person with a thousand messages, and 1.2 s p99 (636 ms p50)
for one with 100k (benchmarks.md, "a million memories").
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, text

from bot.memory.backend import Lexical
from bot.memory.rows import FACT_SCOPE, MESSAGE_SCOPE
from bot.memory.types import Kind, MemoryScope

__all__ = [
    "BM25_B",
    "BM25_K1",
    "COMMON_SHARE",
    "CUSTOM_PLANS",
    "PRUNE_ABOVE",
    "TS_CONFIG",
    "lexical_lists",
    "words_sql",
]

#: The text search configuration of `search_words` (migration 0011).
TS_CONFIG = "english"
#: BM25's constants, as FTS5's bm25() has them.
BM25_K1 = 1.2
BM25_B = 0.75
#: From this many rows in a scope, common words are left out of the match.
PRUNE_ABOVE = 20_000
#: A word is common in a scope when it is in at least this share of its rows: 2.3
#: times faster at 100k than the exact match, 92% of its top 10 kept (benchmarks.md).
COMMON_SHARE = 0.02

#: For the rest of the transaction: plan every statement for its parameters, never
#: with a generic plan that does not know how large the scope is.
CUSTOM_PLANS = text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")

_ALIASES = {"message": ("messages", "m", MESSAGE_SCOPE), "fact": ("facts", "f", FACT_SCOPE)}


@lru_cache(maxsize=512)
def words_sql(kind: str, terms: int, prune: bool) -> Any:
    """The BM25 statement for `terms` query words (`:t0`..), their OR `:q`, the
    scope's row count `:docs` and mean lexeme count `:mean_len`, `:n` rows; with
    `prune`, words in `:cap` rows or more are left out of the match."""
    table, a, scope = _ALIASES[kind]
    r = range(terms)

    def tsq(i: int) -> str:
        return f"to_tsquery('{TS_CONFIG}', :t{i})"

    if prune:
        # Each word's rows, up to the cap (a common word's list stops there): counted,
        # and, for the rare words, the rows matched, read from the table once.
        lists = ", ".join(
            f"p{i} AS MATERIALIZED (SELECT {a}.id, {a}.search_words AS sw FROM {table} {a} "
            f"WHERE {a}.search_words @@ {tsq(i)} AND {scope} LIMIT :cap)"
            for i in r
        )
        counts = ", ".join(f"(SELECT count(*) FROM p{i}) AS c{i}" for i in r)
        every = " AND ".join(f"c{i} >= :cap" for i in r)
        rare = " UNION ALL ".join(
            f"SELECT id, sw FROM p{i} WHERE (SELECT c{i} FROM counts) < :cap" for i in r
        )
        # When every word is common, none is left out: the one full match of them all
        # (skipped by its one-time filter otherwise).
        rows = (
            f"SELECT DISTINCT ON (id) id, sw FROM ({rare} UNION ALL SELECT {a}.id, "
            f"{a}.search_words FROM {table} {a} WHERE (SELECT {every} FROM counts) AND "
            f"{a}.search_words @@ to_tsquery('{TS_CONFIG}', :q) AND {scope}) AS u ORDER BY id"
        )
        head = f"WITH {lists}, counts AS MATERIALIZED (SELECT {counts}), "
        # A rare word's capped count is its exact frequency; a common one's the cap.
        floors = [f"(SELECT c{i} FROM counts)" for i in r]
    else:
        rows = (
            f"SELECT {a}.id, {a}.search_words AS sw FROM {table} {a} "
            f"WHERE {a}.search_words @@ to_tsquery('{TS_CONFIG}', :q) AND {scope}"
        )
        head = "WITH "
        floors = ["0" for _ in r]
    # The words' queries once (InitPlans), not once per row.
    flags = ", ".join(f"(sw @@ (SELECT {tsq(i)}))::int AS h{i}" for i in r)
    # Term frequency is taken as 1: chat messages rarely repeat a word.
    df = [f"greatest(sum(h{i}), {floors[i]})::float8" for i in r]
    idf = ", ".join(f"ln(1 + (:docs - {d} + 0.5) / ({d} + 0.5)) AS w{i}" for i, d in enumerate(df))
    weight = " + ".join(f"h{i} * w{i}" for i in r)
    # FTS5 weighs a row's length against the index's mean, so against the scope's here.
    norm = (
        f"({BM25_K1 + 1} / (1 + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * len "
        "/ CAST(:mean_len AS float8))))"
    )
    return text(
        f"{head}hits AS MATERIALIZED (SELECT id, length(sw) AS len, {flags} FROM ({rows}) AS d), "
        f"idf AS (SELECT {idf} FROM hits) "
        f"SELECT hits.id FROM hits, idf ORDER BY ({weight}) * {norm} DESC, hits.id DESC "
        "LIMIT :n"
    )


_SCOPE_SIZE = {
    kind: text(
        f"SELECT count(*), coalesce(avg(length({a}.search_words)), 1) FROM {table} {a} "
        f"WHERE {scope}"
    )
    for kind, (table, a, scope) in _ALIASES.items()
}
_SUBSTRING = {
    kind: text(
        f"SELECT {a}.id FROM {table} {a} WHERE {scope} AND strpos({a}.text, :s) > 0 "
        f"ORDER BY {a}.id DESC LIMIT :n"
    )
    for kind, (table, a, scope) in _ALIASES.items()
}


@lru_cache(maxsize=256)
def _trigram_sql(kind: str, count: int) -> Any:
    # Any of the trigrams (each LIKE is answered by the gin_trgm_ops index), ranked by
    # how many of them the row holds. CJK grams hold no LIKE wildcard or escape.
    table, a, scope = _ALIASES[kind]
    anyof = " OR ".join(f"{a}.text LIKE :p{i}" for i in range(count))
    held = " + ".join(f"(strpos({a}.text, :g{i}) > 0)::int" for i in range(count))
    return text(
        f"SELECT {a}.id FROM {table} {a} WHERE {scope} AND ({anyof}) "
        f"ORDER BY ({held}) DESC, {a}.id DESC LIMIT :n"
    )


def lexical_lists(
    conn: Connection,
    scope: MemoryScope,
    kinds: Sequence[Kind],
    tsq: str | None,
    grams: Sequence[str],
    short_cjk: Sequence[str],
    n: int,
    sizes: dict[str, tuple[int, float]],
) -> Lexical:
    """Ranked id lists in `scope`: BM25 over the word index (`tsq`, words joined by
    ` | `), trigram matches for CJK runs, substring matches for short ones. `sizes`
    holds the scope's row count and mean length per kind where known, and gets those
    this call counts."""
    params: dict[str, Any] = {"uid": scope.user_id, "cid": scope.conversation_id, "n": n}
    lists: Lexical = []
    if tsq is not None or grams or short_cjk:
        conn.execute(CUSTOM_PLANS)
    for kind in kinds:
        if kind == "summary":
            continue
        if tsq is not None:
            terms = tsq.split(" | ")
            stats = sizes.get(kind)
            if stats is None:
                count, mean = conn.execute(_SCOPE_SIZE[kind], params).one()
                stats = sizes[kind] = (int(count), max(float(mean), 1.0))
            docs, mean_len = stats
            prune = docs >= PRUNE_ABOVE and len(terms) > 1
            words = {f"t{i}": t for i, t in enumerate(terms)}
            cap = max(1, int(docs * COMMON_SHARE))
            rows = conn.execute(
                words_sql(kind, len(terms), prune),
                {**params, **words, "q": tsq, "cap": cap, "docs": max(docs, 1),
                 "mean_len": mean_len},
            ).scalars()  # fmt: skip
            _keep(lists, kind, rows)
        if grams:
            gram_params = {f"p{i}": f"%{g}%" for i, g in enumerate(grams)}
            gram_params |= {f"g{i}": g for i, g in enumerate(grams)}
            rows = conn.execute(_trigram_sql(kind, len(grams)), {**params, **gram_params}).scalars()
            _keep(lists, kind, rows)
        for run in short_cjk[:8]:  # too short for trigrams: a substring scan of the scope
            _keep(lists, kind, conn.execute(_SUBSTRING[kind], {**params, "s": run}).scalars())
    return lists


def _keep(lists: Lexical, kind: Kind, ids: Any) -> None:
    """Add one ranked list of `kind` ids to `lists`, unless it is empty."""
    found: list[tuple[str, int]] = [(kind, int(i)) for i in ids]
    if found:
        lists.append(found)
