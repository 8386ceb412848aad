"""OpenTelemetry: one span per cached call and optional metrics, through `opentelemetry-api` only.

The span (`cached_agent_run`, tracer `pyai_caching`) wraps the whole call; on a miss PydanticAI's
own agent-run span is its child, on a hit it stands alone under the caller's span. Attributes are
in our own namespace (no semantic convention exists for response caches). With no tracer provider
(or meter provider) installed, nothing is created: one type check per call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

from ._config import env

__all__ = ("annotate", "count", "run_span", "tracing")

_TRACER = trace.get_tracer("pyai_caching")
_GET_TRACER_PROVIDER = trace.get_tracer_provider
_NAMESPACE = "pyai_caching"

STATUSES = ("hit", "miss", "bypass", "replay_miss", "error")


def tracing() -> bool:
    """Whether a tracer provider is installed (`run_span` makes spans only then)."""
    if (
        getattr(trace, "_TRACER_PROVIDER", False) is None
        and env(OTEL_PYTHON_TRACER_PROVIDER) is None
        and trace.get_tracer_provider is _GET_TRACER_PROVIDER  # (not replaced, as a test's mock.patch does)
    ):
        return False  # none set, and none to load: what `get_tracer_provider` finds, without its `os.environ` check
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextlib.contextmanager
def run_span(task_name: str, mode: str, store: Any) -> Iterator[None]:
    """The span of one cached call (nothing when tracing is off). A call that raises is marked `error` (a
    `CacheMissError` in replay: `replay_miss`) with the exception recorded."""
    if not tracing():
        yield
        return
    with _TRACER.start_as_current_span(
        "cached_agent_run", kind=trace.SpanKind.INTERNAL, record_exception=False, set_status_on_exception=False
    ) as span:
        if span.is_recording():
            span.set_attributes(
                {f"{_NAMESPACE}.task": task_name, f"{_NAMESPACE}.mode": mode, f"{_NAMESPACE}.store": store_kind(store)}
            )
        try:
            yield
        except BaseException as exc:
            from .exceptions import CacheMissError  # noqa: PLC0415 - leaf module: no import cycle at load

            if span.is_recording():
                status = "replay_miss" if isinstance(exc, CacheMissError) else "error"
                span.set_attribute(f"{_NAMESPACE}.cache.status", status)
                if status == "error":
                    span.record_exception(exc)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise


def annotate(
    *, status: str, key: str | None, created: float | None, cost: float | None, saved: float | None, errors: int
) -> None:
    """What the call came to, on the current span (ours) if one is recording."""
    if not tracing():  # no span of ours: the current span, if any, is the application's own
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {f"{_NAMESPACE}.cache.status": status, f"{_NAMESPACE}.store_errors": errors}
    if key is not None:
        attributes[f"{_NAMESPACE}.key_digest"] = key.rsplit(":", 1)[-1]
    if created is not None and status == "hit":
        attributes[f"{_NAMESPACE}.entry.age_s"] = max(0.0, time.time() - created)
    if cost is not None:
        attributes[f"{_NAMESPACE}.cost_usd"] = cost
    if saved is not None:
        attributes[f"{_NAMESPACE}.saved_usd"] = saved
    span.set_attributes(attributes)


def store_kind(store: Any) -> str:
    name = type(store).__name__
    return name[: -len("Store")].lower() if name.endswith("Store") and name != "Store" else name


# -- metrics: created on first use once a meter provider is installed

_instruments: dict[str, Any] = {}


def _metering() -> bool:
    if _instruments:  # made once a meter provider was installed, and a provider cannot be replaced
        return True
    return type(metrics.get_meter_provider()).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def count(task_name: str, status: str, *, spent: float, saved: float, errors: int) -> None:
    """Add one call to the metrics `pyai_caching.calls` (by task and status), `pyai_caching.store_errors`,
    `pyai_caching.cost.spent` and `pyai_caching.cost.saved` (USD), when a meter provider is installed."""
    if not _metering():
        return
    if not _instruments:
        meter = metrics.get_meter("pyai_caching")
        _instruments.update(
            calls=meter.create_counter("pyai_caching.calls", unit="{call}", description="Cached calls by status"),
            errors=meter.create_counter("pyai_caching.store_errors", unit="{error}", description="Store failures"),
            spent=meter.create_counter("pyai_caching.cost.spent", unit="USD", description="Paid for misses"),
            saved=meter.create_counter("pyai_caching.cost.saved", unit="USD", description="Saved by hits"),
        )
    attributes = {"pyai_caching.task": task_name}
    _instruments["calls"].add(1, {**attributes, "pyai_caching.cache.status": status})
    if errors:
        _instruments["errors"].add(errors, attributes)
    if spent:
        _instruments["spent"].add(spent, attributes)
    if saved:
        _instruments["saved"].add(saved, attributes)
