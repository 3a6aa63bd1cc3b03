"""Turning people's text into safe full-text queries (FTS5 MATCH, PostgreSQL tsquery).

Nothing a person types reaches the engine as syntax: the text is split into word and
CJK runs, every FTS5 token is double-quoted (inner quotes doubled), and tokens are
OR-ed, so `"`, `*`, `NEAR`, `AND` or `(` are searched as words or dropped, never
parsed. A tsquery is built from word tokens only (letters and digits, nothing
to_tsquery reads as an operator). This module imports nothing of the project.
"""

from __future__ import annotations

import re

__all__ = [
    "STOPWORDS",
    "cjk_runs",
    "has_cjk",
    "match_expression",
    "trigram_expression",
    "trigrams",
    "tsquery_expression",
    "words",
]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")

#: Words too common to say anything about which memory is meant.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "ever",
        "also",
        "s",
        "t",
        "don",
        "didn",
        "doesn",
        "isn",
        "wasn",
        "ve",
        "ll",
        "re",
        "d",
        "m",
        "kind",
        "type",
        "sort",
        "thing",
        "things",
    ]
)

_MAX_TOKENS = 64
#: The longest token put in a tsquery (PostgreSQL refuses words over 2,047 bytes).
_LONGEST = 200


def has_cjk(text: str) -> bool:
    """True when the text holds Chinese, Japanese or Korean characters."""
    return _CJK.search(text) is not None


def words(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Lower-cased word tokens of `text` (deduplicated, in order, at most 64)."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        token = match.group(0).replace("'", "")
        if _CJK.fullmatch(token):
            continue
        if not keep_stopwords and token in STOPWORDS:
            continue
        seen.setdefault(token, None)
        if len(seen) >= _MAX_TOKENS:
            break
    return list(seen)


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def match_expression(text: str) -> str | None:
    """An OR of quoted words for the unicode61 index; None when there is no word."""
    tokens = words(text) or words(text, keep_stopwords=True)
    return " OR ".join(_quote(t) for t in tokens) if tokens else None


def tsquery_expression(text: str) -> str | None:
    """An OR (`|`) of the words for PostgreSQL's `to_tsquery`; None when there is no
    word. Tokens are letters and digits only, so none is read as an operator; ones
    longer than PostgreSQL indexes (2,047 bytes; `_LONGEST` here) are no words."""
    tokens = words(text) or words(text, keep_stopwords=True)
    tokens = [t for t in tokens if len(t.encode()) <= _LONGEST]
    return " | ".join(tokens) if tokens else None


def trigrams(text: str) -> list[str]:
    """The overlapping 3-character pieces of the CJK runs of `text` (at most 64), so
    that partial overlaps still score; runs shorter than three give none."""
    grams: dict[str, None] = {}
    for run in _CJK.findall(text):
        if len(run) < 3:
            continue
        for i in range(len(run) - 2):
            grams.setdefault(run[i : i + 3], None)
            if len(grams) >= _MAX_TOKENS:
                break
    return list(grams)


def trigram_expression(text: str) -> str | None:
    """An OR of quoted 3-character pieces of CJK runs for the trigram index.

    A trigram index matches strings of at least three characters; a run is cut
    into overlapping trigrams so that partial overlaps still score.
    """
    grams = trigrams(text)
    return " OR ".join(_quote(g) for g in grams) if grams else None


def cjk_runs(text: str) -> list[str]:
    """The CJK runs of `text` shorter than three characters (too short for trigrams)."""
    return [run for run in _CJK.findall(text) if len(run) < 3]
