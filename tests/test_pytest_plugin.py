"""The pytest plugin under pytest's own `pytester`: record a test module, replay it with no model call, fail
clearly on a missing recording, report (and prune) unused ones, stay inert until used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

MODULE = '''
import os
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models.function import FunctionModel

from pyai_caching import cached_agent_run, cached_agent_run_sync

CALLS = Path(os.environ["MODEL_CALLS_FILE"])


def answer(messages, info):
    with CALLS.open("a") as f:
        f.write("call\\n")
    prompt = messages[-1].parts[-1].content
    return ModelResponse(parts=[TextPart(f"answer to {prompt}")])


agent = Agent(FunctionModel(answer, model_name="gpt-4o-mini"))

{tests}
'''

TWO_TESTS = '''
async def test_capital(llm_cache):
    result = await cached_agent_run(agent, "capital of France?", "geo")
    assert result.output == "answer to capital of France?"


def test_river(llm_cache):
    result = cached_agent_run_sync(agent, "longest river?", "geo", redis_url="redis://never-used:6379/0")
    assert result.output == "answer to longest river?"
'''


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    calls = tmp_path / "model_calls.txt"
    monkeypatch.setenv("MODEL_CALLS_FILE", str(calls))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LLM_CACHE_MODE", raising=False)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    (pytester.path / "tests").mkdir()
    return pytester


def write_module(pytester: pytest.Pytester, tests: str) -> Path:
    path = pytester.path / "tests" / "test_geo.py"
    path.write_text(MODULE.replace("{tests}", tests))
    return path


def model_calls(tmp_path: Path) -> int:
    calls = tmp_path / "model_calls.txt"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def recordings(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / "tests" / "llm_cache").rglob("*.json"))


def test_record_then_replay_with_no_model_call(project: pytest.Pytester, tmp_path: Path) -> None:
    write_module(project, TWO_TESTS)
    recorded = project.runpytest("--llm-cache-mode=read_write")
    recorded.assert_outcomes(passed=2)
    assert model_calls(tmp_path) == 2
    files = recordings(project)
    assert len(files) == 2
    assert all(f.relative_to(project.path).parts[:3] == ("tests", "llm_cache", "test_geo") for f in files)
    recorded.stdout.fnmatch_lines(["llm cache (read_write, tests/llm_cache): 2 recorded, 0 replayed, 0 missing, 0 unused"])

    before = {f: f.read_bytes() for f in files}
    replayed = project.runpytest("--llm-cache-mode=replay")
    replayed.assert_outcomes(passed=2)
    assert model_calls(tmp_path) == 2  # no model call
    assert {f: f.read_bytes() for f in recordings(project)} == before
    replayed.stdout.fnmatch_lines(["llm cache (replay, tests/llm_cache): 0 recorded, 2 replayed, 0 missing, 0 unused"])


def test_a_missing_recording_fails_clearly_in_replay(project: pytest.Pytester, tmp_path: Path) -> None:
    write_module(project, TWO_TESTS)
    project.runpytest("--llm-cache-mode=read_write").assert_outcomes(passed=2)
    write_module(
        project,
        TWO_TESTS
        + '''
async def test_new_question(llm_cache):
    await cached_agent_run(agent, "tallest mountain?", "geo")
''',
    )
    result = project.runpytest("--llm-cache-mode=replay")
    result.assert_outcomes(passed=2, failed=1)
    assert model_calls(tmp_path) == 2
    result.stdout.fnmatch_lines(
        [
            "*CacheMissError: no recorded answer for this call of task 'geo'*",
            "*the nearest of 2 recording(s)*differs in:",
            "*  - prompt changed",
            "*recordings: tests/llm_cache/test_geo; to record it, run pytest --llm-cache-mode=read_write "
            "tests/test_geo.py::test_new_question",
            "llm cache (replay, tests/llm_cache): 0 recorded, 2 replayed, 1 missing, 0 unused",
        ]
    )


def test_ci_defaults_to_replay(project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(project, TWO_TESTS)
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    result.assert_outcomes(failed=2)  # nothing recorded yet, and CI never records
    assert model_calls(tmp_path) == 0
    result.stdout.fnmatch_lines(["llm cache (replay, tests/llm_cache): 0 recorded, 0 replayed, 2 missing, 0 unused"])


def test_replay_forbids_real_model_requests_outside_the_cache(project: pytest.Pytester) -> None:
    write_module(
        project,
        '''
import pytest
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


async def test_direct_call(llm_cache):
    real = Agent(OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="k")))
    with pytest.raises(RuntimeError, match="Model requests are not allowed"):
        await real.run("hi")
''',
    )
    project.runpytest("--llm-cache-mode=replay").assert_outcomes(passed=1)


def test_unused_recordings_are_reported_and_pruned_on_request(project: pytest.Pytester) -> None:
    write_module(project, TWO_TESTS)
    project.runpytest("--llm-cache-mode=read_write").assert_outcomes(passed=2)
    only_capital = TWO_TESTS.split("\n\ndef test_river")[0]
    write_module(project, only_capital)
    result = project.runpytest("--llm-cache-mode=replay")
    result.stdout.fnmatch_lines(["*: 0 recorded, 1 replayed, 0 missing, 1 unused"])
    assert len(recordings(project)) == 2
    partial = project.runpytest("--llm-cache-mode=replay", "--llm-cache-prune", "-k", "capital")
    partial.stdout.fnmatch_lines(["*1 unused; not pruned: not every test ran*"])
    assert len(recordings(project)) == 2
    pruned = project.runpytest("--llm-cache-mode=replay", "--llm-cache-prune")
    pruned.stdout.fnmatch_lines(["*1 unused; pruned 1"])
    [kept] = recordings(project)
    assert "capital of France?" in json.dumps(json.loads(kept.read_text()))
    project.runpytest("--llm-cache-mode=replay").assert_outcomes(passed=1)


def test_the_directory_comes_from_the_option_or_the_ini(project: pytest.Pytester) -> None:
    write_module(project, TWO_TESTS)
    project.runpytest("--llm-cache-mode=read_write", "--llm-cache-dir=recorded").assert_outcomes(passed=2)
    assert len(list((project.path / "recorded").rglob("*.json"))) == 2
    project.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nllm_cache_dir = fixtures/llm\n")
    project.runpytest("--llm-cache-mode=read_write").assert_outcomes(passed=2)
    assert len(list((project.path / "fixtures" / "llm").rglob("*.json"))) == 2


def test_the_plugin_is_inert_until_used(project: pytest.Pytester) -> None:
    (project.path / "tests" / "test_plain.py").write_text(
        "import sys\n\ndef test_nothing_imported():\n"
        "    assert 'pyai_caching' not in sys.modules and 'pydantic_ai' not in sys.modules\n"
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)
    assert "llm cache" not in result.stdout.str()


def test_a_bad_mode_in_the_environment_errors_the_tests_that_use_it(project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(project, TWO_TESTS + "\n\ndef test_without_the_fixture():\n    pass\n")
    monkeypatch.setenv("LLM_CACHE_MODE", "playback")
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*LLM_CACHE_MODE='playback' is not a cache mode*"])
    assert model_calls(tmp_path) == 0


def test_prune_is_refused_after_a_run_with_skips_node_ids_or_mode_off(project: pytest.Pytester) -> None:
    write_module(project, TWO_TESTS)
    project.runpytest("--llm-cache-mode=read_write").assert_outcomes(passed=2)
    skipping = TWO_TESTS.replace("def test_river(llm_cache):", "@pytest.mark.skip\ndef test_river(llm_cache):")
    write_module(project, "import pytest\n" + skipping)
    skipped = project.runpytest("--llm-cache-mode=replay", "--llm-cache-prune")
    skipped.assert_outcomes(passed=1, skipped=1)
    skipped.stdout.fnmatch_lines(["*1 unused; not pruned: not every test passed (tests/test_geo.py::test_river skipped)"])
    write_module(project, TWO_TESTS)
    by_id = project.runpytest("--llm-cache-mode=replay", "--llm-cache-prune", "tests/test_geo.py::test_capital")
    by_id.stdout.fnmatch_lines(["*1 unused; not pruned: not every test ran (tests selected by node id)"])
    off = project.runpytest("--llm-cache-mode=off", "--llm-cache-prune")
    off.stdout.fnmatch_lines(["*2 unused; not pruned: mode off reads no recordings"])
    assert len(recordings(project)) == 2


def test_modules_get_separate_flat_directories_and_prune_keeps_each_ones(project: pytest.Pytester) -> None:
    write_module(project, TWO_TESTS)
    nested = project.path / "tests" / "test_geo"
    nested.mkdir()
    (nested / "test_more.py").write_text(
        MODULE.replace("{tests}", 'async def test_sea(llm_cache):\n    await cached_agent_run(agent, "deepest sea?", "geo")\n')
    )
    project.runpytest("--llm-cache-mode=read_write").assert_outcomes(passed=3)
    roots = sorted({p.relative_to(project.path / "tests" / "llm_cache").parts[0] for p in recordings(project)})
    assert roots == ["test_geo", "test_geo.test_more"]
    pruned = project.runpytest("--llm-cache-mode=replay", "--llm-cache-prune")
    pruned.assert_outcomes(passed=3)
    pruned.stdout.fnmatch_lines(["*0 recorded, 3 replayed, 0 missing, 0 unused"])
    assert len(recordings(project)) == 3


def test_parallel_workers_share_one_summary_and_prune_only_what_no_worker_read(project: pytest.Pytester, tmp_path: Path) -> None:
    many = "".join(
        f'\n\nasync def test_q{i}(llm_cache):\n    assert (await cached_agent_run(agent, "question {i}", "geo")).output\n'
        for i in range(6)
    )
    write_module(project, many)
    project.runpytest("-n", "2", "--llm-cache-mode=read_write").assert_outcomes(passed=6)
    assert len(recordings(project)) == 6 and model_calls(tmp_path) == 6
    write_module(project, many.split("\n\nasync def test_q5")[0])  # one question no longer asked
    result = project.runpytest("-n", "2", "--llm-cache-mode=replay", "--llm-cache-prune")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["llm cache (replay, tests/llm_cache): 0 recorded, 5 replayed, 0 missing, 1 unused; pruned 1"])
    assert len(recordings(project)) == 5 and model_calls(tmp_path) == 6
    project.runpytest("-n", "2", "--llm-cache-mode=replay").assert_outcomes(passed=5)


def test_ci_false_does_not_mean_ci(project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(project, TWO_TESTS)
    monkeypatch.setenv("CI", "false")
    project.runpytest().stdout.fnmatch_lines(["llm cache (read_write, *"])
