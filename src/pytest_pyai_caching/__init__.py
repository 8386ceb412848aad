"""pytest plugin of pyai_caching: record real LLM answers once, replay them in every later run.

Registered through the `pytest11` entry point and inert until a test asks for the `llm_cache`
fixture: it imports nothing of pyai_caching (nor PydanticAI) before that. Inside such a test every
`cached_agent_run` uses the test module's recording directory (`<llm-cache-dir>/<module path>/`,
committed with the tests) in the session's mode:

- `--llm-cache-mode` (else `LLM_CACHE_MODE`; else `replay` when `CI` is set, `read_write` otherwise);
- `--llm-cache-dir` (else the ini option `llm_cache_dir`, else `tests/llm_cache`), relative to the rootdir;
- `--llm-cache-prune`: delete the recordings no test read (only after a full, passing run).

In `replay` the test also may not send real model requests outside the cache (PydanticAI's
`ALLOW_MODEL_REQUESTS`), so nothing reaches a provider from CI. The run ends with one summary line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyai_caching import FixtureStore
    from pyai_caching._scope import Scope

__all__ = ("LLMCache",)

MODES = ("read_write", "replay", "refresh", "off")
DEFAULT_DIR = "tests/llm_cache"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-cache", "pyai_caching: recorded LLM answers (the llm_cache fixture)")
    group.addoption(
        "--llm-cache-mode",
        choices=MODES,
        default=None,
        help="read_write: replay, record what is missing; replay: recordings only, a missing one fails the test; "
        "refresh: record everything again; off: no cache. Default: LLM_CACHE_MODE, else replay when CI is set, "
        "else read_write.",
    )
    group.addoption("--llm-cache-dir", default=None, help=f"recordings directory (default: ini llm_cache_dir, else {DEFAULT_DIR})")
    group.addoption(
        "--llm-cache-prune",
        action="store_true",
        default=False,
        help="delete recordings no test read (only after a full run in which every test passed)",
    )
    parser.addini("llm_cache_dir", help=f"recordings directory of the llm_cache fixture (default {DEFAULT_DIR})", default=DEFAULT_DIR)


@dataclass
class LLMCache:
    """What the `llm_cache` fixture gives a test: where its recordings are, and in which mode it runs."""

    store: FixtureStore
    """The test module's recordings; every `cached_agent_run` in the test uses it."""
    mode: str
    directory: Path


@dataclass
class _Directory:
    """What the tests of one module did with its recordings."""

    replayed: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)

    def add(self, other: Any) -> None:
        for name in ("replayed", "recorded", "missing"):
            getattr(self, name).update(getattr(other, name) if not isinstance(other, dict) else other[name])


@dataclass
class _Session:
    """What the tests using `llm_cache` did, per recordings directory (merged from xdist workers)."""

    mode: str
    root: Path
    directories: dict[Path, _Directory] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    """Why not every test ran to a pass (skips, failures, selections): then nothing is pruned."""


_SESSION = pytest.StashKey["_Session"]()
_WORKER_OUTPUT = "pyai_caching_llm_cache"


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("--llm-cache-mode") or os.environ.get("LLM_CACHE_MODE", "").strip().lower()
    if not mode:
        return "replay" if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no") else "read_write"
    if mode not in MODES:
        raise pytest.UsageError(f"LLM_CACHE_MODE={mode!r} is not a cache mode; expected one of {', '.join(MODES)}")
    return mode


def _session(config: pytest.Config) -> _Session:
    session = config.stash.get(_SESSION, None)
    if session is None:
        directory = config.getoption("--llm-cache-dir") or config.getini("llm_cache_dir") or DEFAULT_DIR
        root = Path(directory)
        if not root.is_absolute():
            root = config.rootpath / root
        session = config.stash[_SESSION] = _Session(mode=_mode(config), root=root)
    return session


def _module_directory(session: _Session, config: pytest.Config, module_path: Path) -> Path:
    """`<root>/<dotted module path>`, relative to the recordings' parent directory (`tests/`) when the module is
    under it, else to the rootdir: `tests/unit/test_x.py` -> `tests/llm_cache/unit.test_x`. Flat, so no module's
    recordings directory is inside another's."""
    for base in (session.root.parent, config.rootpath):
        try:
            relative = module_path.with_suffix("").relative_to(base)
            return session.root / ".".join(relative.parts)
        except ValueError:
            continue
    return session.root / module_path.stem


@pytest.fixture
def llm_cache(request: pytest.FixtureRequest) -> Iterator[LLMCache]:
    """Points every `cached_agent_run` in the test at the module's recordings, in the session's mode."""
    from pydantic_ai import models  # noqa: PLC0415 - the plugin imports nothing until it is used

    from pyai_caching import FixtureStore  # noqa: PLC0415
    from pyai_caching._scope import scoped  # noqa: PLC0415

    session = _session(request.config)
    directory = _module_directory(session, request.config, Path(request.node.path))
    store = FixtureStore(directory)
    hint = (
        f"recordings: {_shown(directory, request.config)}; to record it, run "
        f"pytest --llm-cache-mode=read_write {request.node.nodeid}"
    )
    used = session.directories.setdefault(directory, _Directory())
    with scoped(store, session.mode, hint=hint) as scope, models.override_allow_model_requests(session.mode != "replay"):
        try:
            yield LLMCache(store=store, mode=session.mode, directory=directory)
        finally:
            used.add(scope)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_INCOMPLETE] = []
    config.pluginmanager.register(_Outcomes(config.stash[_INCOMPLETE]), "pyai_caching_outcomes")


_INCOMPLETE = pytest.StashKey[list[str]]()
"""Tests of this process that did not pass (skipped, failed, xfailed): a run with any is not pruned."""


@dataclass
class _Outcomes:
    incomplete: list[str]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed or report.skipped:
            self.incomplete.append(f"{report.nodeid} {'xfailed' if hasattr(report, 'wasxfail') else report.outcome}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller summarizes (and prunes) for everyone
        state = config.stash.get(_SESSION, None)
        config.workeroutput[_WORKER_OUTPUT] = {  # type: ignore[attr-defined]
            "directories": {
                str(d): {name: sorted(getattr(u, name)) for name in ("replayed", "recorded", "missing")}
                for d, u in (state.directories.items() if state is not None else ())
            },
            "incomplete": list(config.stash.get(_INCOMPLETE, [])),
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """(xdist, on the controller) merge what a worker's tests did."""
    output = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if not output:
        return
    session = _session(node.config)
    for directory, used in output["directories"].items():
        session.directories.setdefault(Path(directory), _Directory()).add(used)
    session.incomplete.extend(output["incomplete"])
    if error:
        session.incomplete.append(f"worker {getattr(node, 'gateway', node)} crashed")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    session = config.stash.get(_SESSION, None)
    if session is None or not session.directories:  # no test used llm_cache
        return
    from pyai_caching.stores import FixtureStore  # noqa: PLC0415
    from pyai_caching.stores._files import entry_path  # noqa: PLC0415

    replayed: set[str] = set()
    recorded: set[str] = set()
    missing: set[str] = set()
    unused: dict[Path, list[str]] = {}
    for directory, used in session.directories.items():
        replayed |= used.replayed
        recorded |= used.recorded
        missing |= used.missing
        keys = FixtureStore(directory)._recorded_keys()  # noqa: SLF001 - synchronous here, no event loop
        unused[directory] = sorted(k for k in keys if k not in used.replayed | used.recorded)
    unused_count = sum(len(v) for v in unused.values())
    line = (
        f"llm cache ({session.mode}, {_shown(session.root, config)}): {len(recorded)} recorded, "
        f"{len(replayed - recorded)} replayed, {len(missing)} missing, {unused_count} unused"
    )
    if config.getoption("--llm-cache-prune") and unused_count:
        reason = _why_not_prune(config, session, exitstatus)
        if reason is None:
            for directory, keys in unused.items():
                for key in keys:
                    entry_path(directory, key).unlink(missing_ok=True)
            line += f"; pruned {unused_count}"
        else:
            line += f"; not pruned: {reason}"
    terminalreporter.write_line(line)


def _why_not_prune(config: pytest.Config, session: _Session, exitstatus: int) -> str | None:
    """Why this run cannot tell which recordings are unused, or None: prune only after every test ran and passed."""
    if session.mode == "off":
        return "mode off reads no recordings"
    incomplete = [*config.stash.get(_INCOMPLETE, []), *session.incomplete]
    if exitstatus != 0 or incomplete:
        return f"not every test passed ({incomplete[0]})" if incomplete else "the run did not pass"
    if config.stash.get(_DESELECTED, None) or config.getoption("keyword", None) or config.getoption("markexpr", None):
        return "not every test ran (-k, -m or deselection)"
    if any("::" in str(arg) for arg in config.args):
        return "not every test ran (tests selected by node id)"
    if any(getattr(config.option, name, False) for name in ("lf", "exitfirst", "stepwise", "stepwise_skip")):
        return "not every test ran (--lf, -x or --sw)"
    return None


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash.setdefault(_DESELECTED, []).append(len(items))


_DESELECTED = pytest.StashKey[list[int]]()


def _shown(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)
