# syntax=docker/dockerfile:1
# The bot worker: `bot run` on Python 3.11, PostgreSQL driver included, no torch
# (the model is served by vLLM). docs/deploy.md says how to run it.
#
#   docker build -t personabot .
#   docker build --build-arg EXTRAS=postgres,memory -t personabot:memory .   # + embeddings

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
# postgres: psycopg 3 and pgvector; add "memory" for dense embeddings (brings torch).
ARG EXTRAS=postgres
RUN python -m venv /opt/personabot \
 && /opt/personabot/bin/pip install ".[${EXTRAS}]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /srv/personabot personabot \
 && mkdir -p /srv/personabot/data \
 && chown personabot:personabot /srv/personabot/data
COPY --from=build /opt/personabot /opt/personabot
COPY --chown=personabot:personabot personas /srv/personabot/personas
# personas.dirs defaults to ./personas, database.url to ./data/bot.db (compose sets PostgreSQL).
WORKDIR /srv/personabot
# No *_created series beside every counter and histogram: half the scrape, never graphed.
ENV PATH=/opt/personabot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BOT_LOGGING__FORMAT=json \
    BOT_OPS__HOST=0.0.0.0 \
    BOT_OPS__PORT=9100 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True
USER personabot
# /metrics, /healthz, /readyz (bot/web).
EXPOSE 9100
# Liveness: the event loop answers. Readiness (/readyz) is for the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BOT_OPS__PORT', '9100'), timeout=2)"]
# SIGTERM stops taking messages and finishes the replies in hand (engine.reply_timeout_s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["bot"]
CMD ["run"]
