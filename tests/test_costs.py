"""Tests of pyai_caching.costs: price tables, model-name matching, genai-prices fallback, unknown models."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pytest
from pydantic_ai.usage import RequestUsage, RunUsage

from pyai_caching import costs
from pyai_caching.costs import DEFAULT_COSTS, ModelCosts, Price, normalize_model_name, price_usage

# 1M input tokens, of which 200k read from and 100k written to the cache, plus 10k output tokens.
CACHED_USAGE = RunUsage(
    requests=1, input_tokens=1_000_000, cache_read_tokens=200_000, cache_write_tokens=100_000, output_tokens=10_000
)
SIMPLE = ModelCosts(cost_per_million_input_tokens=1.0, cost_per_million_output_tokens=2.0)


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    costs._reset_warnings()
    yield
    costs._reset_warnings()


def _usage(input_tokens: int = 0, output_tokens: int = 0) -> RunUsage:
    return RunUsage(requests=1, input_tokens=input_tokens, output_tokens=output_tokens)


# ModelCosts


def test_model_costs_optional_prices_default_to_none_and_values_become_floats() -> None:
    c = ModelCosts(3, 15)
    assert c.cost_per_million_caching_input_tokens is None
    assert c.cost_per_million_caching_hit_tokens is None
    assert type(c.cost_per_million_input_tokens) is float
    assert ModelCosts(0, 0, 0, 0).cost_per_million_caching_hit_tokens == 0.0


@pytest.mark.parametrize(
    "field", ["input_tokens", "output_tokens", "caching_input_tokens", "caching_hit_tokens"]
)
@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf, -math.inf])
def test_model_costs_rejects_negative_and_non_finite(field: str, bad: float) -> None:
    kwargs = {"cost_per_million_input_tokens": 1.0, "cost_per_million_output_tokens": 1.0}
    kwargs[f"cost_per_million_{field}"] = bad
    with pytest.raises(ValueError, match=f"cost_per_million_{field}"):
        ModelCosts(**kwargs)


@pytest.mark.parametrize("bad", ["1.0", True, None])
def test_model_costs_rejects_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError, match="cost_per_million_input_tokens"):
        ModelCosts(bad, 1.0)  # type: ignore[arg-type]


def test_model_costs_is_frozen() -> None:
    with pytest.raises(AttributeError):
        SIMPLE.cost_per_million_input_tokens = 5.0  # type: ignore[misc]


def test_default_costs_are_valid_and_cover_the_main_providers() -> None:
    assert 15 <= len(DEFAULT_COSTS) <= 30
    for name, c in DEFAULT_COSTS.items():
        assert normalize_model_name(name) == (None, name), name
        assert isinstance(c, ModelCosts)
        assert 0 < c.cost_per_million_input_tokens <= c.cost_per_million_output_tokens, name
        hit = c.cost_per_million_caching_hit_tokens
        assert hit is None or 0 < hit < c.cost_per_million_input_tokens, name
        write = c.cost_per_million_caching_input_tokens
        assert write is None or write >= c.cost_per_million_input_tokens, name
    for name in ["claude-3-5-haiku-latest", "claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini",
                 "gemini-2.5-flash", "gemini-2.5-pro"]:
        assert name in DEFAULT_COSTS


def test_default_anthropic_cache_prices_follow_list_ratios() -> None:
    c = DEFAULT_COSTS["claude-sonnet-4-5"]
    assert (c.cost_per_million_input_tokens, c.cost_per_million_output_tokens) == (3.0, 15.0)
    assert c.cost_per_million_caching_input_tokens == pytest.approx(3.75)
    assert c.cost_per_million_caching_hit_tokens == pytest.approx(0.30)


# normalize_model_name


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("gpt-4o", (None, "gpt-4o")),
        ("google-gla:gemini-2.5-flash", ("google-gla", "gemini-2.5-flash")),
        ("gateway/openai:gpt-4o", ("gateway/openai", "gpt-4o")),
        ("bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0", ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")),
        # A Bedrock id has a colon but no provider before it.
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", (None, "us.anthropic.claude-sonnet-4-5-20250929-v1:0")),
        ("openai:", (None, "openai:")),
    ],
)
def test_normalize_model_name(model: str, expected: tuple[str | None, str]) -> None:
    assert normalize_model_name(model) == expected


# Table pricing


def test_cache_read_and_write_are_priced_separately() -> None:
    c = ModelCosts(3.0, 15.0, cost_per_million_caching_input_tokens=3.75, cost_per_million_caching_hit_tokens=0.30)
    price = price_usage("my-model", CACHED_USAGE, custom_costs={"my-model": c})
    # 700k uncached * 3 + 100k written * 3.75 + 200k read * 0.30 + 10k output * 15, per million.
    assert price == Price(usd=pytest.approx(2.1 + 0.375 + 0.06 + 0.15), source="custom")


def test_missing_cache_prices_fall_back_to_input_price() -> None:
    price = price_usage("my-model", CACHED_USAGE, custom_costs={"my-model": ModelCosts(3.0, 15.0)})
    assert price is not None
    assert price.usd == pytest.approx(1_000_000 * 3.0 / 1e6 + 0.15)


def test_request_usage_is_priced_like_run_usage() -> None:
    request = RequestUsage(input_tokens=1_000_000, cache_read_tokens=200_000, cache_write_tokens=100_000,
                           output_tokens=10_000)
    assert price_usage("claude-sonnet-4-5", request) == price_usage("claude-sonnet-4-5", CACHED_USAGE)


def test_default_price_for_known_model() -> None:
    # gpt-4o: input 2.50, cached input 1.25 (writes at the input price), output 10.
    price = price_usage("gpt-4o", CACHED_USAGE)
    assert price == Price(usd=pytest.approx(0.8 * 2.5 + 0.2 * 1.25 + 0.01 * 10), source="default")


def test_uncached_input_is_clamped_at_zero() -> None:
    usage = RunUsage(input_tokens=100, cache_read_tokens=1_000_000, output_tokens=0)
    price = price_usage("m", usage, custom_costs={"m": ModelCosts(1000.0, 0.0, None, 1.0)})
    assert price is not None
    assert price.usd == pytest.approx(1.0)


def test_multi_request_run_usage_is_priced_over_the_whole_usage() -> None:
    run = RunUsage()
    run.incr(RequestUsage(input_tokens=600_000, cache_write_tokens=500_000, output_tokens=1_000))
    run.incr(RequestUsage(input_tokens=700_000, cache_read_tokens=500_000, output_tokens=3_000))
    run.requests = 2
    c = ModelCosts(2.0, 10.0, 2.5, 0.2)
    price = price_usage("m", run, custom_costs={"m": c})
    assert price is not None
    # Uncached: 100k + 200k; written 500k; read 500k; output 4k.
    assert price.usd == pytest.approx(0.3 * 2.0 + 0.5 * 2.5 + 0.5 * 0.2 + 0.004 * 10.0)
    single_0 = price_usage("m", RequestUsage(input_tokens=600_000, cache_write_tokens=500_000, output_tokens=1_000),
                           custom_costs={"m": c})
    single_1 = price_usage("m", RequestUsage(input_tokens=700_000, cache_read_tokens=500_000, output_tokens=3_000),
                           custom_costs={"m": c})
    assert single_0 is not None and single_1 is not None
    assert price.usd == pytest.approx(single_0.usd + single_1.usd)


# Name matching and precedence


@pytest.mark.parametrize(
    ("key", "query", "provider"),
    [
        ("gpt-4o-custom", "gpt-4o-custom", None),
        ("gpt-4o-custom", "openai:gpt-4o-custom", None),
        ("openai:gpt-4o-custom", "gpt-4o-custom", None),
        ("openai:gpt-4o-custom", "openai:gpt-4o-custom", None),
        ("openai:gpt-4o-custom", "gpt-4o-custom", "openai"),
    ],
)
def test_custom_costs_match_with_or_without_prefix(key: str, query: str, provider: str | None) -> None:
    price = price_usage(query, _usage(1_000_000), custom_costs={key: SIMPLE}, provider=provider)
    assert price == Price(usd=1.0, source="custom")


def test_prefixed_key_does_not_match_another_provider() -> None:
    table = {"azure:my-model": SIMPLE}
    assert price_usage("openai:my-model", _usage(1_000_000), custom_costs=table) is None
    assert price_usage("my-model", _usage(1_000_000), custom_costs=table, provider="openai") is None


def test_default_costs_match_prefixed_query() -> None:
    usage = _usage(1_000_000, 1_000_000)
    expected = Price(usd=pytest.approx(2.5 + 10.0), source="default")
    assert price_usage("openai:gpt-4o", usage) == expected
    assert price_usage("gateway/openai:gpt-4o", usage) == expected
    assert price_usage("gpt-4o", usage, provider="openai") == expected


def test_qualified_key_wins_over_bare_key() -> None:
    table = {"my-model": ModelCosts(1.0, 0.0), "azure:my-model": ModelCosts(7.0, 0.0)}
    usage = _usage(1_000_000)
    assert price_usage("azure:my-model", usage, custom_costs=table) == Price(7.0, "custom")
    assert price_usage("my-model", usage, custom_costs=table, provider="azure") == Price(7.0, "custom")
    assert price_usage("my-model", usage, custom_costs=table) == Price(1.0, "custom")
    assert price_usage("openai:my-model", usage, custom_costs=table) == Price(1.0, "custom")


def test_custom_costs_override_defaults() -> None:
    usage = _usage(1_000_000)
    assert price_usage("gpt-4o", usage) == Price(2.5, "default")
    assert price_usage("gpt-4o", usage, custom_costs={"gpt-4o": SIMPLE}) == Price(1.0, "custom")
    assert price_usage("openai:gpt-4o", usage, custom_costs={"gpt-4o": SIMPLE}) == Price(1.0, "custom")
    assert price_usage("gpt-4o", usage, custom_costs={"openai:gpt-4o": SIMPLE}) == Price(1.0, "custom")
    # Other models still use the defaults.
    assert price_usage("gpt-4o-mini", usage, custom_costs={"gpt-4o": SIMPLE}) == Price(0.15, "default")


def test_default_table_beats_genai_prices() -> None:
    # genai-prices knows gpt-4o too; the default table answers first.
    price = price_usage("gpt-4o", _usage(1_000_000))
    assert price is not None and price.source == "default"


# genai-prices fallback


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("mistral-large-latest", None),
        ("mistral:mistral-large-latest", None),
        ("mistral-large-latest", "mistral"),
        # genai-prices only finds this model when told the provider (the Gateway prefix is dropped).
        ("groq:llama-3.3-70b-versatile", None),
        ("gateway/groq:llama-3.3-70b-versatile", None),
        ("llama-3.3-70b-versatile", "gateway/groq"),
        ("deepseek-chat", "deepseek"),
        # A provider genai-prices doesn't know is dropped, not fatal.
        ("some-unknown-provider:mistral-large-latest", None),
    ],
)
def test_genai_prices_fallback_prices_models_outside_the_tables(model: str, provider: str | None) -> None:
    assert normalize_model_name(model)[1] not in DEFAULT_COSTS
    price = price_usage(model, _usage(1_000_000, 1_000_000), provider=provider)
    assert price is not None
    assert price.source == "genai-prices"
    assert price.usd > 0


def test_genai_prices_fallback_uses_cache_prices() -> None:
    # genai-prices prices cache reads below uncached input for deepseek-chat: a cached prompt must cost less.
    uncached = price_usage("deepseek-chat", _usage(1_000_000))
    cached = price_usage("deepseek-chat", RunUsage(input_tokens=1_000_000, cache_read_tokens=900_000))
    assert uncached is not None and cached is not None
    assert 0 < cached.usd < uncached.usd


def test_genai_prices_fallback_clamps_inconsistent_cache_counts() -> None:
    # genai-prices itself rejects cache reads above the input total; the usage is clamped instead.
    price = price_usage("deepseek-chat", RunUsage(input_tokens=10, cache_read_tokens=1_000_000))
    assert price is not None and price.usd > 0


def test_genai_prices_does_not_auto_update() -> None:
    from genai_prices.data_snapshot import get_snapshot

    price_usage("mistral-large-latest", _usage(1_000))
    assert get_snapshot().from_auto_update is False


# Unknown models


def test_unknown_model_returns_none_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    usage = _usage(1_000, 1_000)
    assert price_usage("acme:no-such-model-xyz", usage) is None
    assert price_usage("acme:no-such-model-xyz", usage) is None
    records = [r for r in caplog.records if r.name == "pyai_caching"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "acme:no-such-model-xyz" in message
    assert 'custom_costs={"acme:no-such-model-xyz": ModelCosts(cost_per_million_input_tokens=' in message

    # Another unknown model gets its own warning.
    assert price_usage("no-such-model-abc", usage, provider="openai") is None
    assert len([r for r in caplog.records if r.name == "pyai_caching"]) == 2

    # Known models never warn.
    assert price_usage("gpt-4o", usage) is not None
    assert len([r for r in caplog.records if r.name == "pyai_caching"]) == 2


def test_reset_warnings_allows_warning_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    assert price_usage("no-such-model-xyz", _usage(1)) is None
    costs._reset_warnings()
    assert price_usage("no-such-model-xyz", _usage(1)) is None
    assert len([r for r in caplog.records if r.name == "pyai_caching"]) == 2


def test_custom_costs_for_unknown_model_silence_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    price = price_usage("no-such-model-xyz", _usage(2_000_000), custom_costs={"no-such-model-xyz": SIMPLE})
    assert price == Price(2.0, "custom")
    assert not [r for r in caplog.records if r.name == "pyai_caching"]


def test_empty_model_name_is_unknown() -> None:
    assert price_usage("", _usage(1_000)) is None


# ----------------------------------------------------------------- the name the user knows


def test_custom_costs_win_by_the_requested_name_over_a_dated_answer() -> None:
    mine = ModelCosts(1.0, 2.0)
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    price = price_usage("gpt-4o-mini-2024-07-18", usage, custom_costs={"gpt-4o-mini": mine}, requested="openai:gpt-4o-mini")
    assert price is not None and price.source == "custom" and price.usd == pytest.approx(3.0)
    qualified = price_usage(
        "gpt-4o-mini-2024-07-18", usage, custom_costs={"openai:gpt-4o-mini": mine}, requested="openai:gpt-4o-mini"
    )
    assert qualified is not None and qualified.source == "custom"
    # the answering name, when priced by the caller, wins over the requested one
    exact = price_usage(
        "gpt-4o-mini-2024-07-18",
        usage,
        custom_costs={"gpt-4o-mini": mine, "gpt-4o-mini-2024-07-18": ModelCosts(0.0, 0.0)},
        requested="gpt-4o-mini",
    )
    assert exact is not None and exact.usd == 0.0


def test_a_fine_tune_is_priced_by_its_configured_name(caplog: pytest.LogCaptureFixture) -> None:
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=0)
    tuned = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    price = price_usage(tuned, usage, custom_costs={"support-bot": ModelCosts(9.0, 9.0)}, requested="openai:support-bot")
    assert price is not None and price.usd == pytest.approx(9.0)
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert price_usage(tuned, usage, requested="openai:support-bot-2") is None
    assert tuned in caplog.text and "support-bot-2" in caplog.text
