"""What the persona editor's requests cost: check-while-typing, preview and save.

A real dashboard (the test harness's `open_dash`: a real app with the mock backend on a
SQLite file, served on 127.0.0.1) with the shipped personas; a signed-in httpx client
sends, `--runs` times each:

- `check` of the shipped `samantha.yaml` (what every pause in typing costs), of one
  with a mistake, and of a hostile 1 MiB text (the largest the loader reads);
- `preview` of `samantha.yaml` for a message;
- `save` of alternating versions (the trial render, the atomic write, the reload, the
  version row and the audit row in one transaction).

Prints p50/p99 in ms and writes bench/results/dashboard_personas.json (or `--out`).

    python bench/dashboard_personas.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p99_ms": round(p99, 2)}


async def _time(runs: int, call: Any) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def main(runs: int) -> dict[str, Any]:
    from tests.dashboard.conftest import open_dash

    shipped = {
        name: (REPO / "personas" / f"{name}.yaml").read_text(encoding="utf-8")
        for name in ("samantha", "xiaoyu")  # biscuit needs its world file
    }
    samantha = shipped["samantha"]
    broken = samantha.replace("version: 1", "version: 1\ntemprature: 2", 1)
    hostile = "a: " + "x" * (1024 * 1024 - 4)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        async with (
            open_dash(work, f"sqlite:///{work}/dash.db", personas=shipped) as dash,
            dash.client("admin") as admin,
        ):
            results: dict[str, Any] = {}

            async def check(text: str) -> None:
                response = await admin.post("/personas/samantha/check", {"yaml": text})
                assert response.status_code == 200, response.text

            for name, text in (("check", samantha), ("check_problem", broken)):
                results[name] = _ms(await _time(runs, lambda t=text: check(t)))
            results["check_1mib"] = _ms(await _time(max(3, runs // 10), lambda: check(hostile)))

            async def preview() -> None:
                response = await admin.post(
                    "/personas/samantha/preview", {"yaml": samantha, "message": "hello!"}
                )
                assert response.json()["ok"], response.text

            results["preview"] = _ms(await _time(runs, preview))
            versions = [samantha, samantha.rstrip("\n") + "\n# edited\n"]
            state = {"i": 0}

            async def save() -> None:
                current = versions[state["i"] % 2]
                nxt = versions[(state["i"] + 1) % 2]
                base = hashlib.sha256(current.encode()).hexdigest()
                response = await admin.post("/personas/samantha/save", {"yaml": nxt, "base": base})
                assert response.status_code == 303, response.text
                state["i"] += 1

            results["save"] = _ms(await _time(runs, save))
    return {
        "runs": runs,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "persona_bytes": len(samantha.encode()),
        "results": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "dashboard_personas.json")
    args = parser.parse_args()
    found = asyncio.run(main(args.runs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(found, indent=2))
