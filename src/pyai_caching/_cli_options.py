"""The command line's options and stores: `--redis-url`/`--dir`/`--namespace` before or after a command, durations,
task names, opening and closing the store a command works on, confirming deletions."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from . import _cli_data as data
from . import _cli_output as out
from ._config import (
    ENV_DIR,
    ENV_NAMESPACE,
    ENV_REDIS_URL,
    StoreSpec,
    check_task_name,
    resolve_namespace,
    resolve_store_spec,
)
from ._registry import _open as open_spec  # pyright: ignore[reportPrivateUsage]
from .exceptions import ConfigurationError
from .stores import Store

__all__ = (
    "CONFIRM_ABOVE",
    "DIRECTORY",
    "EXISTING_DIRECTORY",
    "Duration",
    "StoreOptions",
    "add_store_options",
    "confirm_deletion",
    "json_option",
    "open_store",
    "run_with_store",
    "task_option",
    "with_store",
)

T = TypeVar("T")
CONFIRM_ABOVE = 5
"""Deleting more entries than this asks first (unless `--yes`)."""


# --- parameters ------------------------------------------------------------------------------------------------


class Duration(click.ParamType):
    """A click parameter holding a duration (`30s`, `15m`, `12h`, `7d`, `1h30m`), as seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return data.parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def task_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check `--task` as a key part (a usage error, exit code 2, if it cannot be one)."""
    if value is not None:
        try:
            check_task_name(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


# --- stores ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreOptions:
    """Which store and namespace a command works on: `--redis-url`, `--dir`, `--namespace`."""

    redis_url: str | None = None
    directory: Path | None = None
    namespace: str | None = None

    def under(self, outer: StoreOptions | None) -> StoreOptions:
        """These options (given after the command), completed by `outer` (given before it)."""
        if outer is None:
            return self
        chosen = self if self.redis_url is not None or self.directory is not None else outer
        namespace = self.namespace if self.namespace is not None else outer.namespace
        return StoreOptions(chosen.redis_url, chosen.directory, namespace)


def open_store(options: StoreOptions) -> Store:
    """`--redis-url`, else `--dir`, else `LLM_CACHE_REDIS_URL`, else `LLM_CACHE_DIR`.

    Raises:
        click.UsageError: both `--redis-url` and `--dir`.
        ConfigurationError: none of them, or not a Redis URL.
    """
    if options.redis_url is not None and options.directory is not None:
        raise click.UsageError("--redis-url and --dir name two stores: give one of them")
    if options.redis_url is not None:
        spec = StoreSpec("redis", options.redis_url)  # its URL is checked by RedisStore.from_url
    elif options.directory is not None:
        spec = StoreSpec("local", str(options.directory))
    elif os.environ.get(ENV_REDIS_URL) or os.environ.get(ENV_DIR):
        spec = resolve_store_spec(None)
    else:
        raise ConfigurationError(
            f"no cache store configured: pass --redis-url URL or --dir PATH, or set {ENV_REDIS_URL} or {ENV_DIR}"
        )
    return open_spec(spec)  # as the library opens a configured store


def run_with_store(options: StoreOptions, work: Callable[[Store, str], Awaitable[T]]) -> T:
    """Run `work(store, namespace)` with `asyncio.run`, then close the store."""
    namespace = resolve_namespace(options.namespace)

    async def main() -> T:
        store = open_store(options)
        try:
            return await work(store, namespace)
        finally:
            await store.aclose()

    return asyncio.run(main())


def confirm_deletion(count: int, yes: bool, what: str) -> None:
    """Ask before deleting more than `CONFIRM_ABOVE` entries (on stderr); a no aborts (exit code 1)."""
    if count > CONFIRM_ABOVE and not yes:
        click.confirm(f"Delete {out.entries(count)} {what}?", abort=True, err=True)


DIRECTORY = click.Path(file_okay=False, path_type=Path)
EXISTING_DIRECTORY = click.Path(exists=True, file_okay=False, path_type=Path)
_STORE_OPTIONS = (
    click.option(
        "--redis-url", metavar="URL", help=f"Redis store (redis://, rediss://, unix://); default ${ENV_REDIS_URL}."
    ),
    click.option("--dir", "directory", metavar="PATH", type=DIRECTORY, help=f"Embedded store; default ${ENV_DIR}."),
    click.option("--namespace", metavar="NS", help=f"Key prefix; default ${ENV_NAMESPACE} or pyai_caching."),
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def with_store(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the store options too (after its name), merged with the group's into `where`."""

    @functools.wraps(command)
    def wrapper(*args: Any, redis_url: str | None, directory: Path | None, namespace: str | None, **kwargs: Any) -> T:
        outer = click.get_current_context().find_object(StoreOptions)
        return command(*args, where=StoreOptions(redis_url, directory, namespace).under(outer), **kwargs)

    return add_store_options(wrapper)


def add_store_options(command: Callable[..., T]) -> Callable[..., T]:
    """`--redis-url`, `--dir`, `--namespace` on `command`."""
    for option in reversed(_STORE_OPTIONS):
        command = option(command)
    return command
