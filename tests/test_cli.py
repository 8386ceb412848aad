"""The `pyai-caching` command line: every command through Click's CliRunner, errors, and the installed script.

Entries are made by real `cached_agent_run` calls on a `FunctionModel` (never a real model). The tests are plain
functions: each command runs its own `asyncio.run`, as it does from a shell.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import FixtureStore, LocalStore, RedisStore, Store, cached_agent_run
from pyai_caching._cli import cli
from pyai_caching._cli_data import parse_duration
from pyai_caching._cli_output import format_age

COMMANDS = ("stats", "clear", "export", "import", "explain", "prune", "demo")
HEX = "0" * 64


def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("ok")], usage=RequestUsage(input_tokens=400, output_tokens=60))


def make_agent() -> Agent[None, str]:
    return Agent(FunctionModel(answer, model_name="gpt-4o-mini"), instructions="Be brief.")


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke the command line; stderr apart from stdout (click 8.1 needs `mix_stderr=False` for that)."""
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**separate).invoke(cli, list(args), input=input, env=env)


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def record(store_factory: Any, *calls: tuple[str, str], **kwargs: Any) -> list[str]:
    """Make each `(prompt, task)` call through the cache (a hit if it repeats one); the keys, in order."""

    async def main() -> list[str]:
        store: Store = store_factory()
        try:
            agent = make_agent()
            results = [await cached_agent_run(agent, prompt, task, store=store, **kwargs) for prompt, task in calls]
            return [result.cache_key for result in results]  # type: ignore[misc]
        finally:
            await store.aclose()

    return asyncio.run(main())


def store_call(store: Store, method: str, *args: Any) -> Any:
    """One store call on its own loop (then the store is closed)."""

    async def main() -> Any:
        try:
            return await getattr(store, method)(*args)
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def local(cache_dir: Path) -> Any:
    return lambda: LocalStore(cache_dir)


# --- help and the entry points -----------------------------------------------------------------------------------


def test_help_lists_every_command_and_each_has_its_own() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
        sub = run_cli(command, "--help")
        assert sub.exit_code == 0 and f" {command} [OPTIONS]" in sub.stdout


def test_every_data_command_has_json_and_the_store_options() -> None:
    for command in ("stats", "clear", "export", "import", "explain", "prune"):
        text = run_cli(command, "--help").stdout
        for option in ("--json", "--redis-url", "--dir", "--namespace"):
            assert option in text, (command, option)


def test_importing_the_package_loads_neither_click_nor_rich() -> None:
    code = "import pyai_caching, sys; assert 'click' not in sys.modules and 'rich' not in sys.modules"
    completed = run_process(sys.executable, "-c", code)
    assert completed.returncode == 0, completed.stderr


def test_python_dash_m_prints_help() -> None:
    completed = run_process(sys.executable, "-m", "pyai_caching", "--help")
    assert completed.returncode == 0, completed.stderr
    assert "Usage: pyai-caching" in completed.stdout
    assert all(command in completed.stdout for command in COMMANDS)


def test_the_installed_script_prints_stats_as_json(cache_dir: Path) -> None:
    record(local(cache_dir), ("q", "faq"), ("q", "faq"))
    script = Path(sys.executable).parent / ("pyai-caching.exe" if sys.platform == "win32" else "pyai-caching")
    assert script.exists(), "pip install -e '.[test]' installs the console script"
    completed = run_process(str(script), "stats", "--json", "--dir", str(cache_dir))
    assert completed.returncode == 0, completed.stderr
    faq = json.loads(completed.stdout)["tasks"]["faq"]
    assert (faq["entries"], faq["hits"], faq["misses"]) == (1, 1, 1)


def test_version() -> None:
    from pyai_caching import __version__

    result = run_cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


# --- stats -------------------------------------------------------------------------------------------------------


def test_stats_table_has_a_row_per_task_and_a_total(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("b", "faq"), ("a", "faq"), ("x", "support"))
    result = run_cli("--dir", str(cache_dir), "stats")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    for header in ("entries", "hits", "misses", "hit rate", "spent (USD)", "saved (USD)", "time saved (s)"):
        assert header in result.stdout
    faq = lines["faq"].replace("│", " ").split()
    assert faq[:5] == ["faq", "2", "1", "2", "33%"]  # entries, hits, misses, hit rate
    assert lines["support"].replace("│", " ").split()[:5] == ["support", "1", "0", "1", "0%"]
    assert lines["total"].replace("│", " ").split()[:5] == ["total", "3", "1", "3", "25%"]


def test_stats_json_numbers(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("b", "faq"), ("a", "faq"), ("x", "support"))
    report = as_json(run_cli("stats", "--json", "--dir", str(cache_dir)))
    faq, total = report["tasks"]["faq"], report["total"]
    assert report["namespace"] == "pyai_caching"
    assert (faq["entries"], faq["hits"], faq["misses"], faq["requests"]) == (2, 1, 2, 3)
    assert faq["hit_rate"] == pytest.approx(1 / 3)
    price = 400 * 0.15 / 1e6 + 60 * 0.6 / 1e6  # gpt-4o-mini list price of one run
    assert faq["cost_spent"] == pytest.approx(2 * price) and faq["cost_saved"] == pytest.approx(price)
    assert faq["time_saved"] > 0
    assert (total["entries"], total["misses"]) == (3, 3) and total["cost_spent"] == pytest.approx(3 * price)


def test_stats_of_one_task(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("x", "support"))
    report = as_json(run_cli("--dir", str(cache_dir), "stats", "--task", "support", "--json"))
    assert list(report["tasks"]) == ["support"] and report["total"]["entries"] == 1


def test_stats_of_an_empty_store_says_so(cache_dir: Path) -> None:
    result = run_cli("--dir", str(cache_dir), "stats")
    assert result.exit_code == 0 and "no entries and no counters in namespace 'pyai_caching'" in result.stdout


def test_namespace_option_and_environment_store(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), namespace="tenant1")
    default = as_json(run_cli("stats", "--json", env={"LLM_CACHE_DIR": str(cache_dir)}))
    assert default["tasks"] == {}
    other = as_json(run_cli("--namespace", "tenant1", "stats", "--json", env={"LLM_CACHE_DIR": str(cache_dir)}))
    assert other["namespace"] == "tenant1" and other["tasks"]["faq"]["entries"] == 1


def test_store_options_after_the_command_win_over_those_before(tmp_path: Path, cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"))
    report = as_json(run_cli("--dir", str(tmp_path / "elsewhere"), "stats", "--dir", str(cache_dir), "--json"))
    assert report["tasks"]["faq"]["entries"] == 1
    assert not (tmp_path / "elsewhere").exists()  # reading a store never creates its directory


# --- clear -------------------------------------------------------------------------------------------------------


def entry_count(cache_dir: Path, prefix: str = "pyai_caching:") -> int:
    return len(store_call(LocalStore(cache_dir), "keys", prefix))


def test_clear_a_few_entries_without_asking(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("b", "faq"), ("x", "support"))
    result = run_cli("--dir", str(cache_dir), "clear", "--task", "faq")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "deleted 2 entries"
    (left,) = store_call(LocalStore(cache_dir), "keys", "pyai_caching:")
    assert left.startswith("pyai_caching:v2:support:")


def test_clear_asks_before_deleting_more_than_five(cache_dir: Path) -> None:
    record(local(cache_dir), *((f"q{i}", "faq") for i in range(6)))
    declined = run_cli("--dir", str(cache_dir), "clear", input="n\n")
    assert declined.exit_code == 1 and "Delete 6 entries" in declined.stderr and "Aborted" in declined.stderr
    assert entry_count(cache_dir) == 6
    accepted = run_cli("--dir", str(cache_dir), "clear", "--json", input="y\n")
    assert accepted.exit_code == 0 and "Delete 6 entries" in accepted.stderr  # the prompt goes to stderr
    # stdout is the JSON (click 8.1's runner also echoes the typed answer there, as a terminal would on screen)
    assert json.loads(accepted.stdout[accepted.stdout.index("{") :]) == {"matched": 6, "deleted": 6}
    assert entry_count(cache_dir) == 0


def test_clear_yes_does_not_ask(cache_dir: Path) -> None:
    record(local(cache_dir), *((f"q{i}", "faq") for i in range(7)))
    result = run_cli("--dir", str(cache_dir), "clear", "--yes")
    assert result.exit_code == 0 and "Delete" not in result.stderr
    assert result.stdout.strip() == "deleted 7 entries" and entry_count(cache_dir) == 0


def test_clear_older_than(cache_dir: Path) -> None:
    old, new = record(local(cache_dir), ("old", "faq"), ("new", "faq"))
    store = LocalStore(cache_dir)
    entry = json.loads(store_call(store, "get", old))
    entry["created"] = time.time() - 13 * 3600
    store_call(LocalStore(cache_dir), "set", old, json.dumps(entry).encode(), None)
    clear = ("--dir", str(cache_dir), "clear", "--json", "--older-than")
    assert as_json(run_cli(*clear, "1d")) == {"matched": 0, "deleted": 0}
    assert as_json(run_cli(*clear, "12h")) == {"matched": 1, "deleted": 1}
    assert store_call(LocalStore(cache_dir), "keys", "pyai_caching:") == [new]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800), ("1h30m", 5400), ("1d2h3m4s", 93784), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["12", "", "h", "1.5h", "30m1h", "5w", "-1h", "1 h"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_an_unknown_duration_is_a_usage_error(cache_dir: Path) -> None:
    result = run_cli("--dir", str(cache_dir), "clear", "--older-than", "12 hours")
    assert result.exit_code == 2
    assert "'12 hours' is not a duration" in result.stderr and "Traceback" not in result.output


def test_ages_read_like_durations() -> None:
    assert [format_age(s) for s in (None, 0.25, 45, 725, 12000, 2 * 86400 + 4 * 3600 + 5)] == [
        "unknown", "0.25s", "45s", "12m 5s", "3h 20m", "2d 4h"
    ]


# --- export / import ---------------------------------------------------------------------------------------------


def test_export_then_import_round_trip_replays(tmp_path: Path, cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("b", "faq"), ("x", "support"))
    fixtures, fresh = tmp_path / "fixtures", tmp_path / "fresh"
    exported = run_cli("--dir", str(cache_dir), "export", "--to", str(fixtures))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == f"exported 3 entries to {fixtures}"
    assert "exporting" in exported.stderr  # the progress bar, on stderr
    assert len(list(fixtures.rglob("*.json"))) == 3
    assert len(store_call(FixtureStore(fixtures), "keys", "pyai_caching:")) == 3

    imported = as_json(run_cli("import", "--from", str(fixtures), "--dir", str(fresh), "--task", "faq", "--json"))
    assert imported == {"copied": 2, "from": str(fixtures)}

    async def replay() -> bool:
        store = LocalStore(fresh)
        try:
            return (await cached_agent_run(make_agent(), "a", "faq", store=store, mode="replay")).cached
        finally:
            await store.aclose()

    assert asyncio.run(replay())


def test_export_of_one_task_as_json(tmp_path: Path, cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"), ("x", "support"))
    target = str(tmp_path / "f")
    result = as_json(run_cli("--dir", str(cache_dir), "export", "--task", "support", "--to", target, "--json"))
    assert result == {"copied": 1, "to": str(tmp_path / "f")}
    assert [p.parent.name for p in (tmp_path / "f").rglob("*.json")] == ["support"]


def test_import_ttl_sets_the_lifetime(tmp_path: Path, cache_dir: Path) -> None:
    (key,) = record(lambda: FixtureStore(tmp_path / "fixtures"), ("a", "faq"))
    result = run_cli("--dir", str(cache_dir), "import", "--from", str(tmp_path / "fixtures"), "--ttl", "60")
    assert result.exit_code == 0 and result.stdout.strip() == f"imported 1 entry from {tmp_path / 'fixtures'}"
    header = LocalStore(cache_dir).path_for(key).read_bytes().split(b"\n", 1)[0]
    assert float(header.removeprefix(b"expires=")) == pytest.approx(time.time() + 60, abs=5)


def test_import_needs_an_existing_directory_and_a_positive_ttl(tmp_path: Path, cache_dir: Path) -> None:
    missing = run_cli("--dir", str(cache_dir), "import", "--from", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    (tmp_path / "fixtures").mkdir()
    zero = run_cli("--dir", str(cache_dir), "import", "--from", str(tmp_path / "fixtures"), "--ttl", "0")
    assert zero.exit_code == 1 and "ttl must be a positive number of seconds" in zero.stderr


# --- explain -----------------------------------------------------------------------------------------------------


def test_explain_one_key(cache_dir: Path) -> None:
    (key,) = record(local(cache_dir), ("a", "faq"), model_settings={"temperature": 0.0})
    result = run_cli("--dir", str(cache_dir), "explain", key)
    assert result.exit_code == 0, result.output
    for text in (key, "live", "gpt-4o-mini", "$0.000096", "ago)", "model_settings.temperature", "function:gpt-4o-mini"):
        assert text in result.stdout, text
    document = as_json(run_cli("--dir", str(cache_dir), "explain", key, "--json"))
    assert (document["exists"], document["expired"], document["model"]) == (True, False, "gpt-4o-mini")
    assert document["cost"] == pytest.approx(9.6e-05) and 0 <= document["age_seconds"] < 60
    assert document["manifest"]["items"]["model_settings.temperature"] == "0.0"


def test_explain_two_keys_says_what_differs(cache_dir: Path) -> None:
    (cold,) = record(local(cache_dir), ("a", "faq"), model_settings={"temperature": 0.0})
    (warm,) = record(local(cache_dir), ("a", "faq"), model_settings={"temperature": 0.7})
    result = run_cli("--dir", str(cache_dir), "explain", warm, cold)
    assert result.exit_code == 0, result.output
    assert f"differences from {cold} to {warm}:" in result.stdout
    assert "  - model_settings.temperature 0.0 -> 0.7" in result.stdout
    document = as_json(run_cli("--dir", str(cache_dir), "explain", warm, cold, "--json"))
    assert document["differences"] == ["model_settings.temperature 0.0 -> 0.7"]
    assert document["other"]["key"] == cold


def test_explain_an_entry_past_its_ttl_keeps_it(cache_dir: Path) -> None:
    (key,) = record(local(cache_dir), ("a", "faq"), ttl=0.05)
    time.sleep(0.1)
    result = run_cli("--dir", str(cache_dir), "explain", key)
    assert result.exit_code == 0 and "past its TTL (only replay reads it)" in result.stdout
    assert LocalStore(cache_dir).path_for(key).exists()  # explaining it did not delete what replay still reads


def test_explain_a_missing_key_is_a_readable_error(cache_dir: Path) -> None:
    result = run_cli("--dir", str(cache_dir), "explain", f"pyai_caching:v2:faq:{HEX}")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: no entry under 'pyai_caching:v2:faq:{HEX}' in this store"


def test_explain_a_value_that_is_not_an_entry(cache_dir: Path) -> None:
    key = f"pyai_caching:v2:faq:{HEX}"
    store_call(LocalStore(cache_dir), "set", key, b"not json", None)
    result = run_cli("--dir", str(cache_dir), "explain", key)
    assert result.exit_code == 0 and "not an entry of this library (unreadable)" in result.stdout
    assert as_json(run_cli("--dir", str(cache_dir), "explain", key, "--json"))["readable"] is False


# --- prune -------------------------------------------------------------------------------------------------------


def test_prune_deletes_old_key_versions_and_corrupt_values(cache_dir: Path) -> None:
    (good,) = record(local(cache_dir), ("a", "faq"))
    v1, corrupt = f"pyai_caching:v1:faq:{HEX}", f"pyai_caching:v2:faq:{'1' * 64}"
    no_format = f"pyai_caching:v2:x:{HEX}"
    valid_bytes = store_call(LocalStore(cache_dir), "get", good)
    store_call(LocalStore(cache_dir), "set", v1, valid_bytes, None)  # a readable entry, of a key version no call uses
    store_call(LocalStore(cache_dir), "set", corrupt, b"{not json", None)
    store_call(LocalStore(cache_dir), "set", no_format, b'{"model": "gpt-4o"}', None)
    result = run_cli("--dir", str(cache_dir), "prune")
    assert result.exit_code == 0, result.output
    assert "entries of an older key version" in result.stdout and "values that are not an entry" in result.stdout
    assert store_call(LocalStore(cache_dir), "keys", "pyai_caching:") == [good]
    assert as_json(run_cli("--dir", str(cache_dir), "prune", "--json")) == {
        "deleted": 0, "reasons": {"old_key_version": [], "unreadable": []}
    }


def test_prune_json_lists_what_it_deleted(cache_dir: Path) -> None:
    v1, corrupt = f"pyai_caching:v1:faq:{HEX}", f"pyai_caching:v2:faq:{HEX}"
    store_call(LocalStore(cache_dir), "set", v1, b"{}", None)
    store_call(LocalStore(cache_dir), "set", corrupt, b"garbage", None)
    document = as_json(run_cli("--dir", str(cache_dir), "prune", "--json"))
    assert document == {"deleted": 2, "reasons": {"old_key_version": [v1], "unreadable": [corrupt]}}


def test_prune_asks_before_deleting_more_than_five(cache_dir: Path) -> None:
    keys = [f"pyai_caching:v1:faq:{i:064x}" for i in range(6)]
    for key in keys:
        store_call(LocalStore(cache_dir), "set", key, b"{}", None)
    declined = run_cli("--dir", str(cache_dir), "prune", input="n\n")
    assert declined.exit_code == 1 and "Delete 6 entries that no call can read?" in declined.stderr
    assert entry_count(cache_dir) == 6
    accepted = run_cli("--dir", str(cache_dir), "prune", "--yes")
    assert accepted.exit_code == 0 and "Delete" not in accepted.stderr and entry_count(cache_dir) == 0


def test_prune_with_nothing_to_do(cache_dir: Path) -> None:
    record(local(cache_dir), ("a", "faq"))
    result = run_cli("--dir", str(cache_dir), "prune")
    assert result.exit_code == 0 and "nothing to prune" in result.stdout and entry_count(cache_dir) == 1


# --- demo --------------------------------------------------------------------------------------------------------


def test_demo_runs_and_keeps_its_cache(tmp_path: Path) -> None:
    first = run_cli("demo", "--requests", "3", "--latency", "0.01", "--dir", str(tmp_path / "demo"))
    assert first.exit_code == 0, first.output
    assert "FAQ bot on a simulated gpt-4o-mini" in first.stdout and "MISS" in first.stdout
    assert "this run: 3 requests" in first.stdout
    second = run_cli("--dir", str(tmp_path / "demo"), "demo", "--requests", "3", "--latency", "0.01")  # group's --dir
    assert second.exit_code == 0, second.output
    assert "MISS" not in second.stdout and second.stdout.count("HIT") == 3


def test_demo_rejects_a_request_count_below_one() -> None:
    result = run_cli("demo", "--requests", "0")
    assert result.exit_code == 2 and "--requests" in result.stderr


# --- errors ------------------------------------------------------------------------------------------------------


def test_no_store_configured_is_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_CACHE_REDIS_URL", raising=False)
    monkeypatch.delenv("LLM_CACHE_DIR", raising=False)
    result = run_cli("stats")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no cache store configured: pass --redis-url URL or --dir PATH")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_an_unreachable_redis_is_a_readable_error(unused_tcp_port: int) -> None:
    result = run_cli("--redis-url", f"redis://127.0.0.1:{unused_tcp_port}/0", "stats")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the store cannot be used: Redis") and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--redis-url", "http://localhost", "stats"), 1, "unsupported Redis URL 'http://localhost'"),
        (("--namespace", "a:b", "--dir", "x", "stats"), 1, "namespace must be a non-empty string without ':'"),
        (("--dir", "x", "stats", "--namespace", ""), 1, "namespace must be a non-empty string"),
        (("--dir", "x", "stats", "--task", "a b"), 2, "must not contain ':', whitespace or control characters"),
        (("--dir", "x", "--redis-url", "redis://localhost", "stats"), 2, "--redis-url and --dir name two stores"),
        (("stats", "--bogus"), 2, "--bogus"),
    ],
)
def test_mistakes_are_readable_errors(tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    args = tuple(str(tmp_path / a) if a == "x" else a for a in args)
    result = run_cli(*args)
    assert result.exit_code == code and message in result.stderr and "Traceback" not in result.output
    if code == 1:  # a mistake in a value: one line; a usage error (2) adds click's usage hint
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


def test_a_file_as_the_store_directory_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run_cli("--dir", str(tmp_path / "file"), "stats")
    assert result.exit_code != 0 and "Traceback" not in result.output and "file" in result.stderr


# --- Redis -------------------------------------------------------------------------------------------------------


@pytest.mark.redis_server
def test_commands_against_a_real_redis(redis_url: str, tmp_path: Path) -> None:
    keys = record(lambda: RedisStore.from_url(redis_url), ("a", "faq"), ("a", "faq"), ("x", "support"))
    stats = as_json(run_cli("stats", "--json", env={"LLM_CACHE_REDIS_URL": redis_url}))  # the default store
    assert stats["tasks"]["faq"] == {**stats["tasks"]["faq"], "entries": 1, "hits": 1, "misses": 1}
    assert stats["total"]["entries"] == 2

    explained = as_json(run_cli("explain", keys[0], "--redis-url", redis_url, "--json"))
    assert explained["model"] == "gpt-4o-mini" and explained["expired"] is False

    exported = as_json(run_cli("--redis-url", redis_url, "export", "--to", str(tmp_path / "f"), "--json"))
    assert exported["copied"] == 2
    cleared = as_json(run_cli("--redis-url", redis_url, "clear", "--json"))
    assert cleared == {"matched": 2, "deleted": 2}
    assert as_json(run_cli("--redis-url", redis_url, "stats", "--json"))["total"]["entries"] == 0
    imported = as_json(run_cli("--redis-url", redis_url, "import", "--from", str(tmp_path / "f"), "--json"))
    assert imported["copied"] == 2
    assert store_call(RedisStore.from_url(redis_url), "keys", "pyai_caching:") == sorted(set(keys))
