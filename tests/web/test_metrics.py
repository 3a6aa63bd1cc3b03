"""bot/metrics/ on its own: labels that stay few, registries that are not shared."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from bot.metrics import Metrics, metric_names, skip_reason

POLICY = Path(__file__).resolve().parents[2] / "bot" / "scheduler" / "policy.py"


def test_every_policy_skip_reason_has_a_label_of_its_own() -> None:
    texts = re.findall(r'Decision\(False, f?"([^"]+)"\)', POLICY.read_text())
    assert len(texts) >= 6
    labels = {text: skip_reason(text) for text in texts}
    assert "other" not in labels.values(), labels
    assert len(set(labels.values())) == len(texts), labels
    assert skip_reason("quiet hours (23:10 Europe/Berlin)") == "quiet_hours"
    assert skip_reason("3 proactive messages unanswered") == "unanswered"
    assert skip_reason("something new") == "other"


def test_two_metrics_never_share_a_counter() -> None:
    one, two = Metrics(worker="a"), Metrics(worker="b")
    one.turn("telegram", "answered")
    one.set_leader("scheduler", True)
    two.proactive_skipped("daily cap of 3 reached")
    first, second = generate_latest(one.registry).decode(), generate_latest(two.registry).decode()
    assert 'personabot_turns_total{outcome="answered",platform="telegram"} 1.0' in first
    assert 'personabot_leader{role="scheduler",worker="a"} 1.0' in first
    assert "personabot_turns_total{" not in second
    assert 'personabot_proactive_total{outcome="skipped",reason="daily_cap"} 1.0' in second


def test_search_timing_and_token_counts() -> None:
    metrics = Metrics(worker="t")
    with metrics.timed_search("postgresql"):
        pass
    metrics.used_tokens("discord", 120, None)  # an unknown count adds nothing
    text = generate_latest(metrics.registry).decode()
    assert 'personabot_memory_search_seconds_count{backend="postgresql"} 1.0' in text
    assert 'personabot_tokens_total{kind="prompt",platform="discord"} 120.0' in text
    assert 'kind="completion"' not in text


def test_metric_names_cover_families_and_samples() -> None:
    names = metric_names()
    for name in (
        "personabot_turns_total",
        "personabot_generation_seconds_bucket",
        "personabot_queue_depth",
        "personabot_rate_limited_total",
        "personabot_leader",
    ):
        assert name in names


async def test_a_silent_database_does_not_hold_up_the_scrape() -> None:
    class _Silent:
        reads = 0

        async def read(self, _work: Any) -> None:
            self.reads += 1
            await asyncio.sleep(3600)

    metrics = Metrics(worker="t", ttl_s=0)
    silent = _Silent()
    metrics.watch_database(silent)  # type: ignore[arg-type]
    metrics.read_timeout_s = 0.05
    await metrics.refresh()
    await metrics.refresh()
    snapshot = metrics.queues
    assert snapshot is not None
    assert snapshot.error == "no answer from the database within 0.05 s"
    assert silent.reads == 1  # the second scrape waited on the same read
    assert "personabot_queue_scrape_ok 0.0" in generate_latest(metrics.registry).decode()
    assert metrics._reading is not None
    metrics._reading.cancel()
