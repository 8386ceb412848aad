"""Hit/miss benchmark of `pyai_caching.cached_agent_run` against a real redis-server.

    . .venv/bin/activate && python bench/bench.py            # + 0.4.1 side by side if bench/.venv-old exists
    python bench/bench.py --compare --old-async              # also 0.4.1 with use_async=True
    python bench/bench.py --no-compare --quick               # a fast smoke run

Starts its own redis-server on a free private port (and stops it), runs every workload with an
instant `FunctionModel` (never a live LLM), then prints one table with targets and PASS/FAIL.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

import _common as c

HERE = Path(__file__).resolve().parent
OLD_VENV = HERE / ".venv-old"
OLD_PYTHON = OLD_VENV / "bin" / "python"

FULL = {
    "small": {"seq": 2000, "conc": 4000, "warmup": 200, "miss": 300},
    "large": {"seq": 500, "conc": 1000, "warmup": 50, "miss": 100},
}
QUICK = {
    "small": {"seq": 300, "conc": 600, "warmup": 30, "miss": 40},
    "large": {"seq": 80, "conc": 160, "warmup": 10, "miss": 15},
}

TARGET_HIT_RATIO = 1.5
TARGET_RATE_RATIO = 0.3
TARGET_MISS_MS = 1.5
"""Miss overhead p50 for the small entry, including encoding, the read-back check and the write."""
TARGET_FIRST_HIT_MS = 50.0
TARGET_STAMPEDE_CALLS = 1
TARGET_NEW_CONNS_SEQ = 2
"""At most this many connections opened during the whole sequential hit loop (i.e. none per call)."""


# --- redis-server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a private port, no persistence; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found on PATH")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="pyai-bench-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--maxclients", "10000",
            "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# --- this repo's workload ------------------------------------------------------------------------


def floor_calls(raw: aioredis.Redis, key: str, output_type: Any) -> dict[str, Any]:
    """The least a hit can cost: one raw GET of the stored bytes, and GET + `_codec.decode` of them."""
    from pyai_caching._codec import decode

    async def get() -> bytes | None:
        return await raw.get(key)

    async def get_decode() -> Any:
        return decode(await raw.get(key), output_type)

    return {"get": get, "get_decode": get_decode}


async def new_workload(url: str, counts: dict[str, dict[str, int]], gc_freeze: bool = False) -> dict[str, Any]:
    import pyai_caching
    from pyai_caching import cached_agent_run

    if gc_freeze:
        c.freeze_heap()

    raw = aioredis.Redis.from_url(url, client_name=c.BENCH_CLIENT_NAME)
    out: dict[str, Any] = {"sizes": {}, "origin": pyai_caching.__file__}
    for size, output_type in c.SIZES.items():
        n = counts[size]
        agent = c.make_agent(output_type)
        task = f"bench-{size}"

        def call(prompt: str, agent: Any = agent, task: str = task) -> Any:
            return cached_agent_run(agent, prompt, task, redis_url=url)

        prompt = f"hit {size} prompt"
        expected = c.SMALL_TEXT if output_type is str else c.LARGE_REPORT
        first, second = await call(prompt), await call(prompt)
        if first.cached or not second.cached or second.output != expected or second.cache_key is None:
            raise SystemExit(f"cached_agent_run did not miss then hit for {size}: {first!r} / {second!r}")
        data = await raw.get(second.cache_key)
        assert data is not None
        floor = floor_calls(raw, second.cache_key, output_type)
        if (await floor["get_decode"]()).run.output != expected:
            raise SystemExit(f"decoding the stored entry did not give the expected output for {size}")
        res: dict[str, Any] = {"entry_bytes": len(data)}
        res.update(
            await c.hit_workload(
                call=call,
                prompt=prompt,
                n_seq=n["seq"],
                n_conc=n["conc"],
                warmup=n["warmup"],
                info_client=raw,
                floor=floor,
            )
        )
        # a miss returns once its entry is encoded, checked to read back and written
        res["miss"] = await c.miss_overhead(lambda p, agent=agent: agent.run(p), call, n["miss"], tag=f"new {size}")
        out["sizes"][size] = res

    stampede: dict[str, Any] = {}
    for delay in c.STAMPEDE_DELAYS:
        t0 = time.perf_counter()
        stampede[str(delay)] = await c.stampede(
            lambda agent: lambda p: cached_agent_run(agent, p, "stampede", redis_url=url),
            delay,
            f"new stampede {delay} {time.time_ns()}",
        )
        stampede[f"{delay}_wall_s"] = round(time.perf_counter() - t0, 2)
    out["stampede"] = stampede
    await raw.aclose()
    out["first_hit"] = first_hit(url)
    return out


def first_hit(url: str, runs: int = 5) -> dict[str, float]:
    """The first hit of an output type in a fresh process (`bench/_first_hit.py`), and what importing costs."""
    script = str(Path(__file__).with_name("_first_hit.py"))
    subprocess.run([sys.executable, script, url, "store"], check=True, capture_output=True)
    hits = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, script, url, "hit"], check=True, capture_output=True, text=True)
        hits.append(json.loads(out.stdout)["ms"])
    imports = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", "import time; t = time.perf_counter(); import pyai_caching; print(time.perf_counter() - t)"],
            check=True, capture_output=True, text=True,
        )
        imports.append(float(out.stdout) * 1000)
    return {"p50_ms": statistics.median(hits), "max_ms": max(hits), "import_ms": statistics.median(imports)}


# --- pyai-caching 0.4.1 in its own venv ----------------------------------------------------------


def old_workload(url: str, counts: dict[str, dict[str, int]], use_async: bool, gc_freeze: bool = False) -> dict[str, Any]:
    """Run `_old_workload.py` in bench/.venv-old against the same (emptied) redis-server."""
    flush = redis.Redis.from_url(url)
    flush.flushall()  # every run starts cold: no entry of an earlier run is served as a "miss"
    flush.close()
    config = {"redis_url": url, "use_async": use_async, "sizes": counts, "gc_freeze": gc_freeze}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            [str(OLD_PYTHON), str(HERE / "_old_workload.py"), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": str(HERE)},
            check=False,
        )
        err.seek(0)
        lines = err.read().splitlines()
    if proc.returncode != 0:
        tail = "\n".join(lines[-20:])
        raise SystemExit(f"0.4.1 workload failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    distinct: dict[str, int] = {}
    for line in lines:
        distinct[line] = distinct.get(line, 0) + 1
    result["stderr_lines"] = len(lines)
    result["stderr_top"] = sorted(distinct.items(), key=lambda kv: -kv[1])[:3]
    return result


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    import importlib.metadata as md

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis-server": server.split()[2].removeprefix("v=") if server else "?",
        "redis-py": md.version("redis"),
        "pydantic-ai-slim": md.version("pydantic-ai-slim"),
        "pyai-caching": md.version("pyai-caching"),
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _us(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.0f} / {summary['p99']:.0f}"


def _ms(us: float) -> str:
    return f"{us / 1000:+.2f}"


class Table:
    def __init__(self, old_columns: list[str]) -> None:
        self.head = ["metric", "target", "this repo", "verdict", *old_columns]
        self.rows: list[list[str] | str] = []

    def section(self, title: str) -> None:
        self.rows.append(title)

    def row(self, metric: str, target: str, value: str, verdict: str = "", old: list[str] | None = None) -> None:
        self.rows.append([metric, target, value, verdict, *(old or [])])

    def render(self) -> str:
        cells = [r for r in self.rows if isinstance(r, list)]
        widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [self.head, *cells]) for i in range(len(self.head))]
        fmt = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r + [""] * len(widths), widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        out = [fmt(self.head), sep]
        for r in self.rows:
            out.append(fmt([f"**{r}**"]) if isinstance(r, str) else fmt(r))
        return "\n".join(out)


def build_table(new: dict[str, Any], olds: list[tuple[str, dict[str, Any]]]) -> tuple[str, list[str]]:
    table = Table([name for name, _ in olds])
    failures: list[str] = []

    def check(name: str, ok: bool) -> str:
        if not ok:
            failures.append(name)
        return _verdict(ok)

    def old_vals(fn: Any) -> list[str]:
        vals = []
        for _, o in olds:
            try:
                vals.append(fn(o))
            except (KeyError, TypeError, ZeroDivisionError):
                vals.append("n/a")
        return vals

    for size, output_type in c.SIZES.items():
        r = new["sizes"][size]
        fl = r["floor"]
        kind = "str" if output_type is str else "BaseModel"
        table.section(f"{size}: {kind} output, entry {r['entry_bytes'] / 1024:.1f} KB")
        table.row(
            "entry size (bytes)", "", str(r["entry_bytes"]), "", old_vals(lambda o: f"{o['sizes'][size]['entry_bytes']} (pickle)")
        )
        table.row("floor: raw GET p50 / p99 (µs)", "", _us(fl["get"]))
        table.row("floor: GET + decode p50 / p99 (µs)", "", _us(fl["get_decode"]))
        table.row("floor: raw GETs/s, 50 callers", "", f"{fl['get_rate']:,.0f}")
        table.row("floor: GET + decode/s, 50 callers", "", f"{fl['get_decode_rate']:,.0f}")

        lat = r["latency"]
        table.row(
            "hit p50 / p99 (µs), sequential", "", _us(lat), "", old_vals(lambda o: _us(o["sizes"][size]["latency"]))
        )
        p50_ratio = lat["p50"] / fl["get_decode"]["p50"]
        p99_ratio = lat["p99"] / fl["get_decode"]["p99"]
        table.row(
            "hit p50 / floor p50",
            f"<= {TARGET_HIT_RATIO}x",
            f"{p50_ratio:.2f}x",
            check(f"{size} hit p50 ratio", p50_ratio <= TARGET_HIT_RATIO),
            old_vals(lambda o: f"{o['sizes'][size]['latency']['p50'] / fl['get_decode']['p50']:.2f}x"),
        )
        table.row(
            "hit p99 / floor p99",
            f"<= {TARGET_HIT_RATIO}x",
            f"{p99_ratio:.2f}x",
            check(f"{size} hit p99 ratio", p99_ratio <= TARGET_HIT_RATIO),
            old_vals(lambda o: f"{o['sizes'][size]['latency']['p99'] / fl['get_decode']['p99']:.2f}x"),
        )
        rate_ratio = r["rate"] / fl["get_decode_rate"]
        table.row("hits/s, 50 callers", "", f"{r['rate']:,.0f}", "", old_vals(lambda o: f"{o['sizes'][size]['rate']:,.0f}"))
        table.row(
            "hits/s / floor (GET + decode)/s",
            f">= {TARGET_RATE_RATIO}x",
            f"{rate_ratio:.2f}x",
            check(f"{size} hit rate ratio", rate_ratio >= TARGET_RATE_RATIO),
            old_vals(lambda o: f"{o['sizes'][size]['rate'] / fl['get_decode_rate']:.2f}x"),
        )
        table.row("hits/s / floor raw GETs/s (info)", "", f"{r['rate'] / fl['get_rate']:.2f}x", "",
                  old_vals(lambda o: f"{o['sizes'][size]['rate'] / fl['get_rate']:.2f}x"))

        m = r["miss"]
        table.row("bare agent.run mean / p50 (ms)", "", f"{m['bare_mean'] / 1000:.2f} / {m['bare_p50'] / 1000:.2f}", "",
                  old_vals(lambda o: f"{o['sizes'][size]['miss']['bare_mean'] / 1000:.2f} / {o['sizes'][size]['miss']['bare_p50'] / 1000:.2f}"))
        table.row("cached miss mean / p50 (ms)", "", f"{m['cached_mean'] / 1000:.2f} / {m['cached_p50'] / 1000:.2f}", "",
                  old_vals(lambda o: f"{o['sizes'][size]['miss']['cached_mean'] / 1000:.2f} / {o['sizes'][size]['miss']['cached_p50'] / 1000:.2f}"))
        small = size == "small"
        table.row(
            "miss overhead incl. encode, check, write: mean / p50 (ms)",
            f"p50 <= {TARGET_MISS_MS:g} ms" if small else "info",
            f"{_ms(m['overhead_mean'])} / {_ms(m['overhead_p50'])}",
            check(f"{size} miss overhead", m["overhead_p50"] <= TARGET_MISS_MS * 1000) if small else "",
            old_vals(lambda o: f"{_ms(o['sizes'][size]['miss']['overhead_mean'])} / {_ms(o['sizes'][size]['miss']['overhead_p50'])}"),
        )

        clients = lambda x: f"{x['clients_after_warmup']} -> {x['clients_after_seq']} -> {x['clients_after_conc']}"  # noqa: E731
        table.row("library connections open: warm-up -> seq -> 50 callers", "", clients(r), "", old_vals(lambda o: clients(o["sizes"][size])))
        table.row(
            f"connections opened: {r['n_seq']} seq hits / {r['n_conc']} concurrent",
            f"seq <= {TARGET_NEW_CONNS_SEQ}",
            f"{r['new_conns_seq']} / {r['new_conns_conc']}",
            check(f"{size} connections", r["new_conns_seq"] <= TARGET_NEW_CONNS_SEQ),
            old_vals(lambda o: f"{o['sizes'][size]['new_conns_seq']} / {o['sizes'][size]['new_conns_conc']}"),
        )
        table.row(
            "full GCs in seq hits (longest, ms)",
            "info",
            f"{r['gc_full_seq']} ({r['gc_full_max_ms']:.0f})",
            "",
            old_vals(lambda o: f"{o['sizes'][size]['gc_full_seq']} ({o['sizes'][size]['gc_full_max_ms']:.0f})"),
        )
        table.row(
            "max loop lag (ms): seq / 50 callers",
            "report",
            f"{r['lag_seq_ms']:.1f} / {r['lag_conc_ms']:.1f}",
            "",
            old_vals(lambda o: f"{o['sizes'][size]['lag_seq_ms']:.1f} / {o['sizes'][size]['lag_conc_ms']:.1f}"),
        )

    fh = new["first_hit"]
    table.section("a fresh process")
    table.row(
        "first hit of an output type p50 / max (ms)",
        f"<= {TARGET_FIRST_HIT_MS:g} ms",
        f"{fh['p50_ms']:.1f} / {fh['max_ms']:.1f}",
        check("first hit", fh["p50_ms"] <= TARGET_FIRST_HIT_MS),
        old_vals(lambda o: ""),
    )
    table.row("import pyai_caching p50 (ms, pydantic-ai included)", "info", f"{fh['import_ms']:.0f}", "", old_vals(lambda o: ""))

    table.section(f"stampede: {c.STAMPEDE_CALLERS} concurrent identical cold calls")
    for delay in c.STAMPEDE_DELAYS:
        calls = new["stampede"][str(delay)]
        table.row(
            f"model calls, model takes {delay:g} s",
            f"== {TARGET_STAMPEDE_CALLS}",
            f"{calls} ({new['stampede'][f'{delay}_wall_s']} s)",
            check(f"stampede {delay}s", calls == TARGET_STAMPEDE_CALLS),
            old_vals(lambda o: f"{o['stampede'][str(delay)]} ({o['stampede'][f'{delay}_wall_s']} s)"),
        )
    return table.render(), failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--compare", action="store_true", help="also run pyai-caching 0.4.1 (needs bench/setup_old.sh)")
    group.add_argument("--no-compare", action="store_true", help="skip 0.4.1 even if bench/.venv-old exists")
    parser.add_argument("--old-async", action="store_true", help="also run 0.4.1 with use_async=True")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run, noisy numbers)")
    parser.add_argument("--json", metavar="PATH", help="write the raw results to PATH")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() the heap after imports (both libraries): shows p99 without full-collection pauses",
    )
    args = parser.parse_args()

    compare = args.compare or (OLD_PYTHON.exists() and not args.no_compare)
    if compare and not OLD_PYTHON.exists():
        parser.error(f"{OLD_PYTHON} not found: run bench/setup_old.sh first")
    counts = QUICK if args.quick else FULL
    info = machine()
    started = time.perf_counter()

    with redis_server() as url:
        print(f"redis-server {info['redis-server']} at {url}; {'quick' if args.quick else 'full'} run", file=sys.stderr)
        new = asyncio.run(new_workload(url, counts, args.gc_freeze))
        print(f"this repo done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        olds: list[tuple[str, dict[str, Any]]] = []
        if compare:
            modes = [False, True] if args.old_async else [False]
            for use_async in modes:
                t0 = time.perf_counter()
                olds.append((f"0.4.1{' use_async' if use_async else ''}", old_workload(url, counts, use_async, args.gc_freeze)))
                print(f"0.4.1 (use_async={use_async}) done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    table, failures = build_table(new, olds)
    print()
    print(" | ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"runs: {json.dumps(counts)}; {c.CONCURRENCY} concurrent callers; "
        f"gc.freeze: {'yes' if args.gc_freeze else 'no'}; total {time.perf_counter() - started:.0f} s"
    )
    print()
    print(table)
    print()
    for name, o in olds:
        print(
            f"{name}: hits return {o['sizes']['small']['hit_type']}; an unnamed agent made "
            f"{o['unnamed_agent_model_calls_for_3_identical_calls']} model calls for 3 identical calls; "
            f"{o['stderr_lines']} log lines on stderr, top: {o['stderr_top'][0][0][:90]!r} x{o['stderr_top'][0][1]}"
            if o["stderr_top"]
            else f"{name}: no log lines"
        )
    print("all targets PASS" if not failures else f"FAIL: {', '.join(failures)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "counts": counts, "new": new, "old": dict(olds)}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
