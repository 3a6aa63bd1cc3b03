"""The word lists of PostgreSQL's memory search: BM25 over the postings tables,
trigrams for CJK runs, a substring scan for short ones (see pg_search.py).

BM25 is computed in SQL, as SQLite's FTS5 ranks (`ts_rank` has no inverse document
frequency, so a common word would count as much as a rare one: 4 points of LoCoMo
recall@10). It reads `message_terms` / `fact_terms` (migration 0021): one row per
(scope, lexeme, item) of the searchable items, kept by triggers, whose primary key
makes a word's rows in a scope one index-only range scan, as FTS5 walks a doclist.
One statement, one round trip:

1. the query's words are cut into lexemes by the same configuration that built the
   index (`to_tsvector`, so a word PostgreSQL splits counts as its parts, and a
   stopword as nothing);
2. each of their postings in the scope is read from the index with its word's
   document frequency (a window count over the index order: no sort), which is
   exact: no word is left out and no frequency estimated;
3. the postings are summed per item, weighted by each word's IDF (`float8`) and the
   item's length against the scope's mean, and the best `n` are returned.

The heap of `messages` is not read. It was (the `search_words @@` statement before
0021): at 100k rows in one scope, 5,646 matching rows at 2.3 µs each for a
six-word question, and common words had to be left out of the match to stay near
10 ms, at the cost of 9% of the exact top 10 (benchmarks.md).

Every statement here is planned for its own values (`CUSTOM_PLANS`). psycopg
prepares a statement run five times on a connection, and PostgreSQL then may
switch to one generic plan, planned without the scope. In a database of many small
scopes that plan read the scope's rows by its index and tested every one against
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
from bot.memory.tables import PG_POSTINGS
from bot.memory.types import Kind, MemoryScope

__all__ = [
    "BM25_B",
    "BM25_K1",
    "CUSTOM_PLANS",
    "POSTINGS",
    "TS_CONFIG",
    "lexical_lists",
    "words_sql",
]

#: The text search configuration of `search_words` (migration 0011).
TS_CONFIG = "english"
#: BM25's constants, as FTS5's bm25() has them.
BM25_K1 = 1.2
BM25_B = 0.75
#: The postings table of each kind (migration 0021).
POSTINGS = {"message": PG_POSTINGS["messages"], "fact": PG_POSTINGS["facts"]}

#: For the rest of the transaction: plan every statement for its parameters, never
#: with a generic plan that does not know how large the scope is.
CUSTOM_PLANS = text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")

_ALIASES = {"message": ("messages", "m", MESSAGE_SCOPE), "fact": ("facts", "f", FACT_SCOPE)}


@lru_cache(maxsize=4)
def words_sql(kind: str) -> Any:
    """The BM25 statement of `kind` for the query words `:terms` (a list), the scope's
    row count `:docs` and mean lexeme count `:mean_len`: the best `:n` item ids."""
    table = POSTINGS[kind]
    # Term frequency is taken as 1: chat messages rarely repeat a word.
    idf = "ln(1 + (CAST(:docs AS float8) - p.df + 0.5) / (p.df + 0.5))"
    # FTS5 weighs a row's length against the index's mean, so against the scope's here.
    norm = (
        f"({BM25_K1 + 1} / (1 + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * p.len "
        "/ CAST(:mean_len AS float8))))"
    )
    return text(
        # The lexemes once (an InitPlan), matched against the index's "C" collation.
        "WITH q AS MATERIALIZED (SELECT coalesce(array_agg(DISTINCT l.lexeme "
        'COLLATE "C"), ARRAY[]::text[]) AS lexemes FROM unnest(CAST(:terms AS text[])) '
        f"AS w(word), unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}', w.word))) "
        "AS l(lexeme)), "
        "p AS MATERIALIZED (SELECT t.item_id, t.len, count(*) OVER (PARTITION BY t.lexeme) "
        f"AS df FROM {table} t WHERE t.user_id = :uid AND t.conversation_id = :cid "
        "AND t.lexeme = ANY (CAST((SELECT q.lexemes FROM q) AS text[]))) "
        f"SELECT p.item_id FROM p GROUP BY p.item_id, p.len ORDER BY sum({idf}) * {norm} "
        "DESC, p.item_id DESC LIMIT :n"
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
            rows = conn.execute(
                words_sql(kind),
                {**params, "terms": terms, "docs": max(docs, 1), "mean_len": mean_len},
            ).scalars()
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
