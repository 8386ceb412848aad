"""OpenTelemetry: one span per cached call (PydanticAI's agent-run span its child on a miss; alone on a hit),
attributes in our namespace, nothing when tracing is off, and optional metrics; checked with the SDK's in-memory
exporter and metric reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import CacheMissError, MemoryStore, cached_agent_run
from pyai_caching import _telemetry

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def providers() -> Iterator[None]:
    """The SDK installed globally for this module (OpenTelemetry allows one global provider per process)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    if type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    yield


@pytest.fixture(autouse=True)
def clean() -> None:
    EXPORTER.clear()


def agent(fail: bool = False) -> Agent[None, str]:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if fail:
            raise RuntimeError("provider down")
        return ModelResponse(parts=[TextPart("ok")], usage=RequestUsage(input_tokens=1000, output_tokens=100))

    instrumented = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))
    instrumented.instrument = True  # PydanticAI's own spans (an agent run, its model requests)
    return instrumented


def spans(name: str = "cached_agent_run") -> list[Any]:
    return [s for s in EXPORTER.get_finished_spans() if s.name == name]


async def test_a_miss_has_the_agent_run_as_child_and_a_hit_stands_alone_under_the_caller() -> None:
    store, tracer = MemoryStore(), trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        miss = await cached_agent_run(agent(), "q", "faq", store=store)
        hit = await cached_agent_run(agent(), "q", "faq", store=store)
    first, second = spans()
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    agent_runs = [s for s in EXPORTER.get_finished_spans() if s.parent is not None and s.parent.span_id == first.context.span_id]
    assert agent_runs, "PydanticAI's agent run is a child of the miss's span"
    assert not [s for s in EXPORTER.get_finished_spans() if s.parent is not None and s.parent.span_id == second.context.span_id]
    assert first.attributes["pyai_caching.cache.status"] == "miss" and second.attributes["pyai_caching.cache.status"] == "hit"
    assert first.attributes["pyai_caching.task"] == "faq" and first.attributes["pyai_caching.store"] == "memory"
    assert first.attributes["pyai_caching.key_digest"] == miss.cache_key.rsplit(":", 1)[1]
    assert first.attributes["pyai_caching.cost_usd"] == pytest.approx(miss.cost)
    assert second.attributes["pyai_caching.saved_usd"] == pytest.approx(hit.saved_cost)
    assert second.attributes["pyai_caching.entry.age_s"] >= 0


async def test_bypass_replay_miss_and_error_statuses() -> None:
    store = MemoryStore()
    await cached_agent_run(agent(), "q", "faq", store=store, mode="off")
    with pytest.raises(CacheMissError):
        await cached_agent_run(agent(), "never", "faq", store=store, mode="replay")
    with pytest.raises(RuntimeError):
        await cached_agent_run(agent(fail=True), "q", "faq", store=store, max_wait=0)
    statuses = [s.attributes["pyai_caching.cache.status"] for s in spans()]
    assert statuses == ["bypass", "replay_miss", "error"]
    error = spans()[-1]
    assert error.status.status_code == trace.StatusCode.ERROR and error.events[0].name == "exception"


def test_nothing_is_made_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    made: list[str] = []
    monkeypatch.setattr(_telemetry._TRACER, "start_as_current_span", lambda *a, **k: made.append("span"))
    with _telemetry.run_span("faq", "read_write", MemoryStore()):
        _telemetry.annotate(status="hit", key="k", created=0.0, cost=0.0, saved=0.0, errors=0)
    assert made == []


async def test_an_applications_own_span_is_left_alone_without_a_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """An app tracing with a provider of its own (not the global one, as `InstrumentationSettings(tracer_provider=)`
    allows) gets no cache attributes written on its span: the cache makes no span then, and annotates only its own."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    with provider.get_tracer("app").start_as_current_span("handle_request"):
        await cached_agent_run(agent(), "q", "faq", store=MemoryStore())
    (span,) = own.get_finished_spans()
    assert span.name == "handle_request" and not any(k.startswith("pyai_caching") for k in span.attributes or {})


async def test_metrics_count_calls_by_status_and_money_by_task() -> None:
    store = MemoryStore()
    miss = await cached_agent_run(agent(), "metered", "billing", store=store)
    await cached_agent_run(agent(), "metered", "billing", store=store)
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    for resource in READER.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if not metric.name.startswith("pyai_caching."):
                    continue  # PydanticAI's own (token histograms)
                for point in metric.data.data_points:
                    points[(metric.name, tuple(sorted(point.attributes.items())))] = point.value
    task = ("pyai_caching.task", "billing")
    assert points[("pyai_caching.calls", (("pyai_caching.cache.status", "hit"), task))] == 1
    assert points[("pyai_caching.calls", (("pyai_caching.cache.status", "miss"), task))] == 1
    assert points[("pyai_caching.cost.spent", (task,))] == pytest.approx(miss.cost)
    assert points[("pyai_caching.cost.saved", (task,))] == pytest.approx(miss.cost)


def test_tracing_is_read_from_opentelemetry_whenever_it_could_say_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tracing()` answers "no" by itself only where `get_tracer_provider` would give the proxy: no provider set,
    none named in the environment, and the function not replaced (a test's patch returning a real provider)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert not _telemetry.tracing()
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert _telemetry.tracing()
