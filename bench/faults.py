"""Reliability figures: a stream of 200 calls while Redis is killed (before call 50) and restarted (before call 120).

Runs the scenario the tests use (`tests/faults_scenario.py`) and prints, per phase, the calls, failures, hits,
model calls and latency p50/p99, so the README's "Reliability" numbers can be reproduced:
`python bench/faults.py`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from faults_scenario import run_stream  # noqa: E402


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


async def main() -> None:
    stream = await run_stream(200, kill_at=50, restart_at=120, pause=0.05)
    expected = [f"answer to p{i % 20}" for i in range(200)]
    wrong = sum(c.output != e for c, e in zip(stream.calls, expected))
    print(f"200 calls, 20 prompts; Redis killed before call 50, restarted before call 120; {stream.model_calls} model calls")
    print("| phase | calls | failed or wrong | hits | latency p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    for phase in ("up", "down", "restarted"):
        calls = [(c, e) for c, e in zip(stream.calls, expected) if c.phase == phase]
        latencies = [c.latency * 1000 for c, _ in calls]
        bad = sum(c.output != e for c, e in calls)
        print(
            f"| {phase} | {len(calls)} | {bad} | {sum(c.cached for c, _ in calls)} | "
            f"{statistics.median(latencies):.1f} / {p99(latencies):.1f} |"
        )
    restarted = [c for c in stream.calls if c.phase == "restarted"]
    first_hit = next((i for i, c in enumerate(restarted) if c.cached), None)
    print(f"first hit after the restart: call {first_hit} of the restarted phase; wrong answers: {wrong}")


if __name__ == "__main__":
    asyncio.run(main())
