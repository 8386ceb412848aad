"""Pricing of PydanticAI token usage.

`price_usage` turns a `RunUsage` or `RequestUsage` into US dollars. Prices come, in this order, from
the caller's `custom_costs`, from `DEFAULT_COSTS` (list prices of popular models), and from the
prices bundled with `genai-prices`. An unknown model prices to `None`, never to an error.

Token accounting follows PydanticAI: `input_tokens` includes `cache_read_tokens` and
`cache_write_tokens`, so the uncached input is `input_tokens - cache_read_tokens - cache_write_tokens`.
The `ModelCosts` tables have one price per token kind, which means:

* one-hour cache writes (`cache_write_1h_tokens`, a part of `cache_write_tokens`) are priced at the
  cache-write price like five-minute writes (Anthropic bills them higher, so this understates them);
* audio tokens (`input_audio_tokens`, `cache_audio_read_tokens`, `output_audio_tokens`) are parts of
  the text totals and are priced at the text prices; `audio_seconds`, searches and other
  provider-specific counters are not priced;
* long-context price tiers are not modelled: the base (shortest-context) price applies.

The `genai-prices` fallback prices all of the above itself. It only reads the data bundled with the
installed package: it downloads newer prices only if the application starts
`genai_prices.UpdatePrices` (or `pydantic_ai.prices.update_in_background()`), which this module never does.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Real
from typing import TYPE_CHECKING, Literal

from genai_prices import calc_price

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelResponse
    from pydantic_ai.usage import RequestUsage, RunUsage

__all__ = ("DEFAULT_COSTS", "ModelCosts", "Price", "normalize_model_name", "price_usage", "price_responses")

logger = logging.getLogger("pyai_caching")

_PROVIDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:/[A-Za-z0-9_-]+)*")
"""What may precede the first `:` of a model name to be read as a provider (`openai`, `gateway/openai`).

No dots: a Bedrock model id such as `us.anthropic.claude-sonnet-4-5-20250929-v1:0` is a bare name.
"""


@dataclass(frozen=True)
class ModelCosts:
    """Prices of one model, in USD per million tokens.

    Attributes:
        cost_per_million_input_tokens: Uncached input tokens.
        cost_per_million_output_tokens: Output tokens (reasoning tokens included).
        cost_per_million_caching_input_tokens: Tokens written to the prompt cache; `None` means the input price.
        cost_per_million_caching_hit_tokens: Tokens read from the prompt cache; `None` means the input price.

    Raises:
        TypeError: A price is not a real number (`bool` included).
        ValueError: A price is negative, NaN or infinite. The message names the field.
    """

    cost_per_million_input_tokens: float
    cost_per_million_output_tokens: float
    cost_per_million_caching_input_tokens: float | None = None
    cost_per_million_caching_hit_tokens: float | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value: object = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"ModelCosts.{field.name} must be a number, got {value!r}")
            number = float(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"ModelCosts.{field.name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, field.name, number)


DEFAULT_COSTS: dict[str, ModelCosts] = {
    # Anthropic: 5-minute cache writes cost 1.25x the input price, cache reads 0.1x.
    "claude-3-5-haiku-latest": ModelCosts(0.80, 4.0, 1.0, 0.08),
    "claude-3-7-sonnet-latest": ModelCosts(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": ModelCosts(1.0, 5.0, 1.25, 0.10),
    "claude-sonnet-4-0": ModelCosts(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": ModelCosts(3.0, 15.0, 3.75, 0.30),
    "claude-opus-4-0": ModelCosts(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4-1": ModelCosts(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4-5": ModelCosts(5.0, 25.0, 6.25, 0.50),
    # OpenAI: no cache-write surcharge; cached input 0.5x (gpt-4o, o3-mini), 0.25x (gpt-4.1, o3, o4-mini)
    # or 0.1x (gpt-5).
    "gpt-4o": ModelCosts(2.50, 10.0, None, 1.25),
    "gpt-4o-mini": ModelCosts(0.15, 0.60, None, 0.075),
    "gpt-4.1": ModelCosts(2.0, 8.0, None, 0.50),
    "gpt-4.1-mini": ModelCosts(0.40, 1.60, None, 0.10),
    "gpt-4.1-nano": ModelCosts(0.10, 0.40, None, 0.025),
    "gpt-5": ModelCosts(1.25, 10.0, None, 0.125),
    "gpt-5-mini": ModelCosts(0.25, 2.0, None, 0.025),
    "gpt-5-nano": ModelCosts(0.05, 0.40, None, 0.005),
    "o3": ModelCosts(2.0, 8.0, None, 0.50),
    "o3-mini": ModelCosts(1.10, 4.40, None, 0.55),
    "o4-mini": ModelCosts(1.10, 4.40, None, 0.275),
    # Google Gemini API (prompts up to 200k tokens): cached input 0.25x (2.0) or 0.1x (2.5); cache storage
    # is billed per hour, not per token, so it is not priced.
    "gemini-2.0-flash": ModelCosts(0.10, 0.40, None, 0.025),
    "gemini-2.0-flash-lite": ModelCosts(0.075, 0.30),
    "gemini-2.5-flash": ModelCosts(0.30, 2.50, None, 0.03),
    "gemini-2.5-flash-lite": ModelCosts(0.10, 0.40, None, 0.01),
    "gemini-2.5-pro": ModelCosts(1.25, 10.0, None, 0.125),
}
"""List prices (USD per million tokens, 2025) of popular models, keyed by model name without provider prefix."""


@dataclass(frozen=True)
class Price:
    """What a usage cost.

    Attributes:
        usd: Total cost in US dollars.
        source: Where the price came from: the caller's `custom_costs`, `DEFAULT_COSTS`, or `genai-prices`.
    """

    usd: float
    source: Literal["custom", "default", "genai-prices"]


def normalize_model_name(model: str) -> tuple[str | None, str]:
    """Split a PydanticAI model string into provider and model name.

    `"openai:gpt-4o"` gives `("openai", "gpt-4o")` and `"gpt-4o"` gives `(None, "gpt-4o")`. The split is at
    the first `:`, and only when what precedes it looks like a provider name (letters, digits, `-`, `_`
    and `/`, no dots); otherwise the whole string is the model name.
    """
    provider, sep, name = model.partition(":")
    if sep and name and _PROVIDER_RE.fullmatch(provider):
        return provider, name
    return None, model


def price_usage(
    model: str,
    usage: RunUsage | RequestUsage,
    *,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    provider: str | None = None,
    requested: str | None = None,
) -> Price | None:
    """Price a usage in USD.

    `custom_costs` wins over every built-in price: it is looked up by the answering `model`, then by the
    `requested` name (APIs answer with dated snapshots, `gpt-4o-mini-2024-07-18`, while `custom_costs` is
    written with the name the caller configured, `gpt-4o-mini` or a fine-tune's name). Then `DEFAULT_COSTS`
    and `genai-prices` are tried, by the answering name, then the requested one. In the tables a
    provider-qualified key (`"openai:gpt-4o"`) is tried before the bare one (`"gpt-4o"`), and a query
    without provider also matches a qualified key. A `RunUsage` is priced as a whole; for models with
    long-context tiers, `genai-prices` applies the tier to its total input, which can overstate a run of
    many requests. Responses that omitted usage (`usage.unmeasured_requests`) add no tokens, so the price
    is then a lower bound.

    Args:
        model: Model name, with or without `provider:` prefix: the one that answered.
        usage: Token usage, e.g. `AgentRunResult.usage`.
        custom_costs: Prices that override the defaults, keyed like `DEFAULT_COSTS` (prefix optional).
        provider: Provider of the model (`"openai"`, `"google-gla"`, ...) when `model` has no prefix.
        requested: The name the caller asked for (`"openai:gpt-4o-mini"`), when it may differ from `model`.

    Returns:
        The price, or `None` when no source knows the model. Never raises for an unknown model; logs one
        warning per model name and process.
    """
    provider = provider or None
    names = [normalize_model_name(model)]
    if requested and requested != model:
        names.append(normalize_model_name(requested))
    if custom_costs:
        for prefix, name in names:
            costs = _lookup(custom_costs, prefix or provider, name)
            if costs is not None:
                return Price(_table_usd(costs, usage), "custom")
    for prefix, name in names:
        costs = _lookup(DEFAULT_COSTS, prefix or provider, name)
        if costs is not None:
            return Price(_table_usd(costs, usage), "default")
        usd = _genai_prices_usd(name, usage, (prefix, provider)) if name else None
        if usd is not None:
            return Price(usd, "genai-prices")
    _warn_unknown(model, requested if requested != model else None)
    return None


def price_responses(
    responses: Sequence[ModelResponse],
    *,
    requested: str | None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
) -> tuple[str | None, float | None]:
    """The answering model's name and the price of `responses` (every response that came back), summed.

    `None` as the price when one of them has no price; never raises (a pricing bug must not cost a paid answer).
    """
    model = responses[-1].model_name if responses and responses[-1].model_name else requested
    try:
        total = 0.0
        for response in responses:
            price = price_usage(
                response.model_name or model or "",
                response.usage,
                custom_costs=custom_costs,
                provider=response.provider_name,
                requested=requested,
            )
            if price is None:
                return model, None
            total += price.usd
    except Exception:  # noqa: BLE001 - pricing must never cost a paid answer
        logger.exception("pricing the run failed; its cost is reported as unknown")
        return model, None
    return model, total


def _lookup(table: Mapping[str, ModelCosts], qualifier: str | None, name: str) -> ModelCosts | None:
    """The costs of `qualifier:name`, else of bare `name`, else (no qualifier) of the first `*:name` key."""
    if qualifier is not None:
        costs = table.get(f"{qualifier}:{name}")
        if costs is not None:
            return costs
    costs = table.get(name)
    if costs is not None or qualifier is not None:
        return costs
    for key, costs in table.items():
        key_provider, key_name = normalize_model_name(key)
        if key_provider is not None and key_name == name:
            return costs
    return None


def _table_usd(costs: ModelCosts, usage: RunUsage | RequestUsage) -> float:
    """Cost in USD of `usage` at `costs`; the uncached input is clamped at zero."""
    input_price = costs.cost_per_million_input_tokens
    write_price = costs.cost_per_million_caching_input_tokens
    read_price = costs.cost_per_million_caching_hit_tokens
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    uncached = max(usage.input_tokens - cache_read - cache_write, 0)
    total = (
        uncached * input_price
        + cache_write * (input_price if write_price is None else write_price)
        + cache_read * (input_price if read_price is None else read_price)
        + usage.output_tokens * costs.cost_per_million_output_tokens
    )
    return total / 1_000_000


def _genai_provider_id(provider: str | None) -> str | None:
    """The genai-prices provider id for a PydanticAI provider name.

    genai-prices resolves PydanticAI's names itself (`google-gla`, `openai-chat`, `bedrock`, `xai`, ...);
    only the Pydantic AI Gateway's `gateway/` prefix has to go.
    """
    return None if provider is None else provider.removeprefix("gateway/")


def _genai_prices_usd(name: str, usage: RunUsage | RequestUsage, providers: tuple[str | None, ...]) -> float | None:
    """Price with genai-prices' bundled data, trying each provider then none; `None` if it can't."""
    covered = usage.cache_read_tokens + usage.cache_write_tokens
    if usage.input_tokens < covered:
        # genai-prices rejects cache counts above the input total; clamp like `_table_usd` does.
        usage = copy.copy(usage)
        usage.input_tokens = covered
    tried: set[str | None] = set()
    for provider_id in (*map(_genai_provider_id, providers), None):
        if provider_id in tried:
            continue
        tried.add(provider_id)
        try:
            calculation = calc_price(usage, name, provider_id=provider_id)
        except LookupError:
            continue
        except Exception:
            logger.debug("genai-prices failed to price %r (provider %r)", name, provider_id, exc_info=True)
            continue
        return float(calculation.total_price)
    return None


_warned_models: set[tuple[str, str | None]] = set()
_warned_lock = threading.Lock()


def _warn_unknown(model: str, requested: str | None = None) -> None:
    """Log, once per model name and process, that `model` has no price and how to give it one."""
    with _warned_lock:
        if (model, requested) in _warned_models:
            return
        _warned_models.add((model, requested))
    asked = f" (requested as {requested!r})" if requested else ""
    logger.warning(
        "No price known for model %r%s (not in custom_costs, DEFAULT_COSTS or genai-prices): its cost is "
        'reported as unknown. To price it, pass custom_costs={"%s": ModelCosts('
        "cost_per_million_input_tokens=..., cost_per_million_output_tokens=...)}",
        model,
        asked,
        normalize_model_name(requested)[1] if requested else model,
    )


def _reset_warnings() -> None:
    """Forget which models were warned about (for tests)."""
    with _warned_lock:
        _warned_models.clear()
