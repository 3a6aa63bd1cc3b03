-- Run once, when the PostgreSQL volume is first created: the extensions the bot's
-- memory search uses (pgvector for embeddings, pg_trgm for Chinese and Japanese).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
