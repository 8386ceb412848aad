"""The `pyai-caching` command line (also `python -m pyai_caching`): stats, clear, export, import, explain, prune, demo.

Built on Click; tables and progress bars come from rich, in `_cli_output`. Nothing but the entry points imports
this module, so `import pyai_caching` never loads either library.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from . import __version__
from . import _cli_data as data
from . import _cli_output as out
from ._clearing import matching_keys
from ._cli_options import (
    CONFIRM_ABOVE,
    DIRECTORY,
    EXISTING_DIRECTORY,
    Duration,
    StoreOptions,
    add_store_options,
    confirm_deletion,
    json_option,
    run_with_store,
    task_option,
    with_store,
)
from ._config import ENV_REDIS_URL, resolve_namespace, resolve_ttl
from ._explain import differences
from ._reports import get_stats
from .exceptions import CacheError, PyaiCachingError
from .stats import TaskStats
from .stores import FixtureStore, Store

__all__ = ("cli", "main")

_USER_ERRORS = (PyaiCachingError, ValueError, NotImplementedError)
"""Raised for a user's mistake or an unreachable store: one line on stderr, exit code 1, no traceback."""


# --- the command group -----------------------------------------------------------------------------------------


class _Group(click.Group):
    """Turns a user's mistake (and an unreachable store) into one readable line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, CacheError):
                message = f"the store cannot be used: {message}"
            raise click.ClickException(message) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@add_store_options
@click.version_option(__version__, prog_name="pyai-caching")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, directory: Path | None, namespace: str | None) -> None:
    """Inspect and maintain a pyai-caching store: stats, clear, export/import, explain, prune, demo.

    The store is --redis-url, else --dir, else $LLM_CACHE_REDIS_URL, else $LLM_CACHE_DIR. Store options go
    before or after the command.
    """
    ctx.obj = StoreOptions(redis_url, directory, namespace)


@cli.command()
@click.option("--task", callback=task_option, metavar="TASK", help="Only this task.")
@json_option
@with_store
def stats(task: str | None, as_json: bool, where: StoreOptions) -> None:
    """Entries, hits, misses, hit rate, spend, savings and time saved, per task and in total."""

    async def work(store: Store, namespace: str) -> list[out.TaskRow]:
        report = await get_stats(task, store=store, namespace=namespace)
        counts = Counter(key.split(":")[2] for key in await matching_keys(store, namespace, task_name=task))
        tasks = sorted(set(report.tasks) | set(counts))
        return [out.TaskRow(name, counts[name], report.tasks.get(name, TaskStats())) for name in tasks]

    out.print_stats(resolve_namespace(where.namespace), run_with_store(where, work), as_json)


@cli.command()
@click.option("--task", callback=task_option, metavar="TASK", help="Only this task's entries.")
@click.option("--older-than", type=Duration(), metavar="DURATION", help="Only entries written longer ago (12h, 1h30m).")
@click.option("--yes", "-y", is_flag=True, help=f"Do not ask before deleting more than {CONFIRM_ABOVE} entries.")
@json_option
@with_store
def clear(task: str | None, older_than: float | None, yes: bool, as_json: bool, where: StoreOptions) -> None:
    """Delete entries of the namespace (every key version; counters stay)."""

    async def work(store: Store, namespace: str) -> tuple[int, int]:
        keys = await matching_keys(store, namespace, task_name=task, older_than=older_than)
        confirm_deletion(len(keys), yes, "from the cache")
        return len(keys), (await store.delete_many(keys) if keys else 0)

    matched, deleted = run_with_store(where, work)
    out.print_done(f"deleted {out.entries(deleted)}", {"matched": matched, "deleted": deleted}, as_json)


@cli.command("export")
@click.option("--to", "to", required=True, metavar="DIR", type=DIRECTORY, help="Recordings directory to write.")
@click.option("--task", callback=task_option, metavar="TASK", help="Only this task's entries.")
@json_option
@with_store
def export_entries(to: Path, task: str | None, as_json: bool, where: StoreOptions) -> None:
    """Copy entries of the current key version from the store into a FixtureStore directory (recordings)."""

    async def work(store: Store, namespace: str) -> int:
        target = FixtureStore(to)
        try:
            return await data.copy_with_progress(
                store, target, data.entry_prefix(namespace, task), None, lambda total: out.progress("exporting", total)
            )
        finally:
            await target.aclose()

    copied = run_with_store(where, work)
    out.print_done(f"exported {out.entries(copied)} to {to}", {"copied": copied, "to": str(to)}, as_json)


@cli.command("import")
@click.option("--from", "source", required=True, metavar="DIR", type=EXISTING_DIRECTORY, help="Recordings to read.")
@click.option("--task", callback=task_option, metavar="TASK", help="Only this task's entries.")
@click.option("--ttl", type=float, metavar="SECONDS", help="Lifetime of the copies; default $LLM_CACHE_TTL or 15 days.")
@json_option
@with_store
def import_entries(source: Path, task: str | None, ttl: float | None, as_json: bool, where: StoreOptions) -> None:
    """Copy entries from a FixtureStore directory into the store (warm a cache from recordings)."""
    seconds = resolve_ttl(ttl)

    async def work(store: Store, namespace: str) -> int:
        origin = FixtureStore(source)
        try:
            return await data.copy_with_progress(
                origin, store, data.entry_prefix(namespace, task), seconds, lambda total: out.progress("importing", total)
            )
        finally:
            await origin.aclose()

    copied = run_with_store(where, work)
    out.print_done(f"imported {out.entries(copied)} from {source}", {"copied": copied, "from": str(source)}, as_json)


@cli.command("explain")
@click.argument("key")
@click.argument("other_key", required=False)
@json_option
@with_store
def explain_command(key: str, other_key: str | None, as_json: bool, where: StoreOptions) -> None:
    """Show the entry under KEY: status, age, model, cost and its manifest.

    With OTHER_KEY, also what differs between the two, from the recording OTHER_KEY to KEY (KEY taken as the
    call, as a replay miss is explained).
    """

    async def work(store: Store, namespace: str) -> tuple[data.Recording, data.Recording | None]:
        first = await data.read_recording(store, key)
        return first, (await data.read_recording(store, other_key) if other_key is not None else None)

    recording, other = run_with_store(where, work)
    found = None
    if other is not None and recording.manifest is not None and other.manifest is not None:
        found = differences(recording.manifest, other.manifest)
    out.print_explanation(recording, other, found, as_json)


@cli.command()
@click.option("--yes", "-y", is_flag=True, help=f"Do not ask before deleting more than {CONFIRM_ABOVE} entries.")
@json_option
@with_store
def prune(yes: bool, as_json: bool, where: StoreOptions) -> None:
    """Delete entries no call can read: older key versions, and values that are not an entry."""

    async def work(store: Store, namespace: str) -> dict[str, list[str]]:
        found = await data.unreadable_entries(store, namespace)
        keys = [key for group in found.values() for key in group]
        confirm_deletion(len(keys), yes, "that no call can read")
        if keys:
            await store.delete_many(keys)
        return found

    out.print_pruned(run_with_store(where, work), as_json)


@cli.command()
@click.option("--requests", type=click.IntRange(min=1), default=25, show_default=True, help="Questions to ask.")
@click.option("--latency", type=click.FloatRange(min=0), default=0.6, show_default=True, help="Model latency (s).")
@click.option("--dir", "directory", metavar="PATH", type=DIRECTORY, help="Cache directory to keep; default a new one.")
@click.pass_obj
def demo(options: StoreOptions | None, requests: int, latency: float, directory: Path | None) -> None:
    """Run the offline FAQ-bot demo (simulated gpt-4o-mini, no API key) through the cache."""
    from . import demo as _demo  # noqa: PLC0415 - PydanticAI's FunctionModel etc., needed by this command only

    options = options or StoreOptions()
    directory = directory or options.directory
    # the demo takes Redis from the environment: an explicit --dir wins over it, an explicit --redis-url sets it
    environment: dict[str, str | None] = {}
    if directory is not None:
        environment[ENV_REDIS_URL] = None
    elif options.redis_url is not None:
        environment[ENV_REDIS_URL] = options.redis_url
    with data.environment(environment):
        asyncio.run(_demo.main(directory, requests, latency))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `pyai-caching` script and of `python -m pyai_caching`."""
    cli.main(args=argv, prog_name="pyai-caching")
