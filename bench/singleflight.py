"""Cross-process single-flight: 4 processes x 25 concurrent callers on 10 distinct prompts, a model taking 1 s.

Runs the scenario the tests use (`tests/singleflight_scenario.py`) against its own redis-server and against a
local store directory, and prints the model calls made (target: 10) and the wall time from the common start to
the last answer (target: near one model call, 1 s). A script, not a test: `python bench/singleflight.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import redis_server  # noqa: E402 - the benchmark's throwaway redis-server

SCENARIO = Path(__file__).parent.parent / "tests" / "singleflight_scenario.py"
PROCESSES, CALLERS, PROMPTS, DELAY = 4, 25, 10, 1.0


def run(store: str, workdir: Path) -> tuple[int, float, int]:
    calls = workdir / "calls.txt"
    start_at = time.time() + 5
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCENARIO), store, str(calls), str(start_at), str(PROMPTS), str(CALLERS), str(DELAY)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in processes]
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return len(calls.read_text().splitlines()), wall, sum(r["cached"] for r in results)


def main() -> None:
    print(f"{PROCESSES} processes x {CALLERS} callers, {PROMPTS} prompts, model {DELAY:.0f} s")
    print("| store | model calls (target 10) | wall time, s (target ~1) | hits |")
    print("|---|---|---|---|")
    with redis_server() as url, tempfile.TemporaryDirectory() as a:
        calls, wall, hits = run(url, Path(a))
        print(f"| redis | {calls} | {wall:.2f} | {hits} |")
    with tempfile.TemporaryDirectory() as b:
        calls, wall, hits = run(str(Path(b) / "cache"), Path(b))
        print(f"| local directory | {calls} | {wall:.2f} | {hits} |")


if __name__ == "__main__":
    main()
