"""What the `pyai-caching` command line (`_cli`) prints.

Data goes to stdout (rich tables for people, JSON with `--json`); progress bars and prompts go to stderr, so
`pyai-caching export --json ... | jq` reads clean JSON. Like `_cli`, only the command line imports this module.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._cli_data import PRUNE_REASONS, Recording
from .stats import TaskStats

__all__ = (
    "TaskRow",
    "entries",
    "format_age",
    "print_done",
    "print_explanation",
    "print_pruned",
    "print_stats",
    "progress",
)

_PIPE_WIDTH = 120
"""Columns for output that is not a terminal (rich's own default, 80, wraps the stats table)."""


# --- printing --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    """One task of the stats table: its stored entries and its counters."""

    task: str
    entries: int
    stats: TaskStats


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), 120 columns wide when it is not a terminal. Markup is off:
    task names, keys and manifest values are printed as they are, `[brackets]` included."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, markup=False, width=None if stream.isatty() else _PIPE_WIDTH)


def emit_json(document: Any) -> None:
    """Print `document` as indented JSON on stdout."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def print_done(message: str, document: Mapping[str, Any], as_json: bool) -> None:
    """One line for people, or `document` as JSON."""
    if as_json:
        emit_json(document)
    else:
        click.echo(message)


def entries(count: int) -> str:
    """`1 entry`, `3 entries`."""
    return f"{count} entr{'y' if count == 1 else 'ies'}"


@contextlib.contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr; yields the function that advances it by one."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:.6f}"


def _stats_document(row: TaskRow) -> dict[str, Any]:
    s = row.stats
    return {
        "entries": row.entries,
        "requests": s.requests,
        "hits": s.hits,
        "misses": s.misses,
        "errors": s.errors,
        "uncached": s.uncached,
        "failed": s.failed,
        "hit_rate": s.hit_rate,
        "cost_spent": s.cost_spent,
        "cost_saved": s.cost_saved,
        "time_saved": s.time_saved,
    }


def print_stats(namespace: str, rows: list[TaskRow], as_json: bool) -> None:
    """Per task and in total: entries, hits, misses, hit rate, spend, savings, time saved."""
    total = TaskRow("total", sum(r.entries for r in rows), sum((r.stats for r in rows), TaskStats()))
    if as_json:
        tasks = {row.task: _stats_document(row) for row in rows}
        emit_json({"namespace": namespace, "tasks": tasks, "total": _stats_document(total)})
        return
    if not rows:
        click.echo(f"no entries and no counters in namespace {namespace!r}")
        return
    table = Table(title=f"namespace {namespace}", title_justify="left")
    table.add_column("task")
    for name in ("entries", "hits", "misses", "hit rate", "spent (USD)", "saved (USD)", "time saved (s)"):
        table.add_column(name, justify="right")
    for row in [*rows, total]:
        s = row.stats
        cells = (str(row.entries), str(s.hits), str(s.misses), f"{s.hit_rate:.0%}")
        money = (f"{s.cost_spent:.6f}", f"{s.cost_saved:.6f}", f"{s.time_saved:.2f}")
        table.add_row(row.task, *cells, *money, end_section=row is rows[-1], style="bold" if row is total else None)
    console().print(table)


def format_age(seconds: float | None) -> str:
    """`45s`, `12m 5s`, `3h 20m`, `2d 4h`: the two largest units."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.2f}s"
    parts: list[str] = []
    rest = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or parts:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts[:2])


def _entry_table(recording: Recording) -> Table:
    table = Table(title="entry", title_justify="left", show_header=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("key", recording.key)
    table.add_row("status", "past its TTL (only replay reads it)" if recording.expired else "live")
    if recording.envelope is None:
        table.add_row("value", "not an entry of this library (unreadable)")
        return table
    created = recording.created
    written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created is not None else "unknown"
    table.add_row("written", f"{written} ({format_age(recording.age)} ago)")
    table.add_row("model", str(recording.field("model")))
    table.add_row("cost", _usd(recording.field("cost")))
    latency = recording.field("latency")
    table.add_row("latency", f"{latency:.3f}s" if isinstance(latency, (int, float)) else "unknown")
    return table


def _manifest_table(manifest: Mapping[str, Any]) -> Table:
    table = Table(title="manifest (what the key was made of)", title_justify="left")
    table.add_column("item")
    table.add_column("value")
    for name, value in dict(manifest.get("items") or {}).items():
        table.add_row(str(name), str(value))
    for index, message in enumerate(manifest.get("messages") or (), start=1):
        table.add_row(f"message {index}", str(message))
    return table


def print_explanation(
    recording: Recording, other: Recording | None, differences: list[str] | None, as_json: bool
) -> None:
    """The entry, its manifest and, with a second entry, what differs from that one to this one."""
    if as_json:
        document = recording.document()
        if other is not None:
            document["other"] = other.document()
            document["differences"] = differences
        emit_json(document)
        return
    out = console()
    out.print(_entry_table(recording))
    if recording.manifest is not None:
        out.print(_manifest_table(recording.manifest))
    elif recording.envelope is not None:
        out.print("no manifest (written by an older version)")
    if other is None:
        return
    if differences is None:
        lines = [f"\ncannot compare with {other.key}: both entries need a manifest"]
    elif not differences:
        lines = [f"\nno differences from {other.key} in their manifests"]
    else:
        lines = [f"\ndifferences from {other.key} to {recording.key}:", *(f"  - {d}" for d in differences)]
    for line in lines:
        out.print(line, soft_wrap=True)


def print_pruned(found: Mapping[str, list[str]], as_json: bool) -> None:
    """What `prune` deleted, per reason."""
    if as_json:
        emit_json({"deleted": sum(len(keys) for keys in found.values()), "reasons": dict(found)})
        return
    if not any(found.values()):
        click.echo("nothing to prune: every entry is readable and of the current key version")
        return
    table = Table(title="pruned", title_justify="left")
    table.add_column("reason")
    table.add_column("deleted", justify="right")
    for reason, keys in found.items():
        if keys:
            table.add_row(PRUNE_REASONS[reason], str(len(keys)))
    console().print(table)
