"""The runnable examples keep running (offline) and show what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_features_example_runs_offline() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "features.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cached False -> True" in out
    assert "pricing: $0.000600" in out
    assert "gave up: ModelHTTPError" in out
    assert "stats: hit rate" in out
    assert "recording: 2 entries copied to fixtures; replayed Alex (cached True)" in out
    assert "replay miss explained: ('model_settings.temperature added (0.7)',)" in out
    assert out.count("decorator: the function ran") == 1 and "decorator: Alex twice, same value: True" in out


def test_demo_runs_offline(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyai_caching.demo", "--requests", "6", "--latency", "0.01", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "", "HOME": str(tmp_path)},  # no Redis URL, no API keys
    )
    assert done.returncode == 0, done.stderr
    assert "MISS" in done.stdout and "hit rate" in done.stdout


def test_streaming_example_runs_offline() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "streaming.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "stream miss: cached False, deltas ['In Paris ', 'it is ', 'sunny', '.']" in out
    assert "stream hit: cached True, deltas ['In Paris ', 'it is ', 'sunny', '.']" in out
    assert "stream shared with cached_agent_run: cached True" in out
    assert "events miss: 10 events, 1 tool result" in out and "events hit: 10 events, 1 tool result" in out
    assert "response cache: 3 tool runs, 2 model calls, second run cached [True, True]" in out
