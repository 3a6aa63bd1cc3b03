"""memory postings on PostgreSQL: one row per word of each searchable message and fact

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

PostgreSQL only; on SQLite this revision does nothing (FTS5's doclists are what
this table is to SQLite). See bot/memory/pg_words.py for the search over it.

- `message_terms`, `fact_terms`: one row per (scope, lexeme, item) for the items
  that search can return (messages not deleted and of a spoken kind; facts not
  superseded), with the item's lexeme count (`len`, BM25's length). The primary key
  (user_id, conversation_id, lexeme, item_id) INCLUDE (len) makes a word's rows in
  a scope one index-only range scan: exact BM25 reads no heap page of the messages.
- Kept in step by triggers, so every writer (the bot, `bot db copy`, a moderator's
  SQL) keeps them right: a row-level one for each searchable row INSERTed and for
  the UPDATEs that change what is searchable (text, scope, soft delete, kind,
  superseded); a statement-level one with a transition table for DELETE (a forget
  of 100k rows is one join, not 100k calls), EXECUTEd so that it is planned for its
  own row count, not with the first call's plan; and one for TRUNCATE.
- Filled from the rows already there (backfill).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Source table -> (postings table, what makes a row searchable (its alias `{r}`),
#: the columns whose change can change its postings). The conditions are
#: bot/memory/rows.py's MESSAGE_SCOPE and FACT_SCOPE without the scope (a message
#: with no person is in no scope).
_TABLES = {
    "messages": (
        "message_terms",
        "{r}.user_id IS NOT NULL AND {r}.deleted_at IS NULL AND {r}.kind IN ('message', 'proactive', 'greeting')",
        ("deleted_at", "kind"),
    ),
    "facts": (
        "fact_terms",
        "{r}.user_id IS NOT NULL AND {r}.superseded_by IS NULL",
        ("superseded_by",),
    ),
}
_SCOPE = ("id", "search_words", "user_id", "conversation_id")


def _postings(rows: str, searchable: str) -> str:
    """A SELECT of the postings of the table `rows` (alias r), for the backfill."""
    return (
        "SELECT r.user_id, r.conversation_id, l.lexeme, r.id, length(r.search_words) "
        f"FROM {rows} r, unnest(tsvector_to_array(r.search_words)) AS l(lexeme) "
        f"WHERE {searchable.format(r='r')}"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for source, (terms, searchable, watched) in _TABLES.items():
        op.execute(
            f"CREATE TABLE {terms} (user_id integer NOT NULL, conversation_id integer NOT NULL, "
            'lexeme text COLLATE "C" NOT NULL, item_id integer NOT NULL, len integer NOT NULL, '
            f"CONSTRAINT pk_{terms} PRIMARY KEY (user_id, conversation_id, lexeme, item_id) "
            "INCLUDE (len))"
        )
        insert = f"INSERT INTO {terms} (user_id, conversation_id, lexeme, item_id, len) "
        # The postings of the row NEW; static SQL, so its plan is cached per session.
        new_postings = (
            f"{insert}SELECT NEW.user_id, NEW.conversation_id, l.lexeme, NEW.id, "
            "length(NEW.search_words) FROM unnest(tsvector_to_array(NEW.search_words)) "
            "AS l(lexeme) ON CONFLICT DO NOTHING;"
        )
        removed = (
            f"DELETE FROM {terms} t USING old_rows o, "
            "unnest(tsvector_to_array(o.search_words)) AS l(lexeme) "
            "WHERE t.user_id = o.user_id AND t.conversation_id = o.conversation_id "
            "AND t.lexeme = l.lexeme AND t.item_id = o.id"
        )
        op.execute(
            f"CREATE FUNCTION {terms}_added() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {new_postings} RETURN NULL; END $$"
        )
        # EXECUTEd: planned for this statement's row count (one, or a forget's 100k),
        # never with a plan cached from another.
        op.execute(
            f"CREATE FUNCTION {terms}_removed() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN EXECUTE $q${removed}$q$; RETURN NULL; END $$"
        )
        # One row whose searchable part changed: its old postings out, its new ones in.
        op.execute(
            f"CREATE FUNCTION {terms}_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"DELETE FROM {terms} t WHERE t.user_id = OLD.user_id "
            "AND t.conversation_id = OLD.conversation_id "
            "AND t.lexeme = ANY (tsvector_to_array(OLD.search_words)) AND t.item_id = OLD.id; "
            f"IF {searchable.format(r='NEW')} THEN {new_postings} END IF; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE FUNCTION {terms}_truncated() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN TRUNCATE {terms}; RETURN NULL; END $$"
        )
        # Per row (a statement-level trigger's transition table and planning cost
        # 0.25 ms more per one-row INSERT, the bot's every message); only searchable rows.
        op.execute(
            f"CREATE TRIGGER {terms}_added AFTER INSERT ON {source} FOR EACH ROW "
            f"WHEN ({searchable.format(r='NEW')}) EXECUTE FUNCTION {terms}_added()"
        )
        op.execute(
            f"CREATE TRIGGER {terms}_removed AFTER DELETE ON {source} REFERENCING OLD TABLE "
            f"AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {terms}_removed()"
        )
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in (*_SCOPE, *watched))
        op.execute(
            f"CREATE TRIGGER {terms}_changed AFTER UPDATE ON {source} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION {terms}_changed()"
        )
        op.execute(
            f"CREATE TRIGGER {terms}_truncated AFTER TRUNCATE ON {source} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {terms}_truncated()"
        )
        op.execute(f"{insert}{_postings(source, searchable)}")
        op.execute(f"ANALYZE {terms}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for source, (terms, _, _) in _TABLES.items():
        for trigger in ("added", "removed", "changed", "truncated"):
            op.execute(f"DROP TRIGGER IF EXISTS {terms}_{trigger} ON {source}")
            op.execute(f"DROP FUNCTION IF EXISTS {terms}_{trigger}()")
        op.execute(f"DROP TABLE IF EXISTS {terms}")
