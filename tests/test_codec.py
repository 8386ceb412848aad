"""The codec: a finished run <-> a versioned JSON envelope, re-validated against the output type on read."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, AgentRunResult, TextOutput, ToolOutput
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.test import TestModel

from pyai_caching._codec import FORMAT, CachedRun, DecodeError, decode, encode


class Capital(BaseModel):
    country: str
    city: str
    population: int


class Landmark(BaseModel):
    name: str


async def run_agent(output_type: Any = Capital, **model_kwargs: Any) -> AgentRunResult[Any]:
    if output_type is Capital and not model_kwargs:
        model_kwargs = {"custom_output_args": {"country": "France", "city": "Paris", "population": 2_100_000}}
    agent = Agent(TestModel(**model_kwargs), output_type=output_type, instructions="Be accurate.")
    return await agent.run("Capital of France?")


def entry(run: AgentRunResult[Any], **kwargs: Any) -> CachedRun[Any]:
    fields: dict[str, Any] = {"model": "test", "cost": 0.0012, "latency": 1.25, "created": 1_732_252_800.0}
    fields.update(kwargs)
    return CachedRun(run=run, **fields)


# --------------------------------------------------------------------------- round trip


async def test_round_trip_of_a_real_run() -> None:
    run = await run_agent()
    decoded = decode(encode(entry(run), Capital), Capital)

    assert isinstance(decoded.run, AgentRunResult)
    assert isinstance(decoded.run.output, Capital)
    assert decoded.run.output == Capital(country="France", city="Paris", population=2_100_000)
    assert decoded.run.usage == run.usage
    assert decoded.run.usage.requests == 1
    assert decoded.run.all_messages() == run.all_messages()
    assert decoded.run.new_messages() == run.new_messages()
    assert decoded.run.all_messages_json() == run.all_messages_json()
    assert decoded.run.new_messages_json() == run.new_messages_json()
    assert decoded.run.run_id == run.run_id


async def test_an_entry_holds_the_new_messages_and_how_much_history_they_followed() -> None:
    """With message history, the entry holds only this run's messages (a hit gets its caller's own history):
    entries do not grow with the conversation."""
    earlier = [
        ModelRequest(parts=[UserPromptPart(content="Hi")]),
        ModelResponse(parts=[TextPart(content="Hello!")]),
    ]
    agent = Agent(TestModel(custom_output_text="Paris."))
    run = await agent.run("Capital of France?", message_history=earlier)
    assert len(run.new_messages()) < len(run.all_messages())

    data = encode(entry(run), str)
    decoded = decode(data, str)
    assert decoded.run.output == "Paris."
    assert decoded.history == len(earlier)
    assert decoded.run.all_messages() == decoded.run.new_messages() == run.new_messages()
    assert decoded.run.new_messages_json() == run.new_messages_json()
    assert b"Hello!" not in data


async def test_round_trip_of_str_output() -> None:
    run = await run_agent(str, custom_output_text="Paris is the capital.")
    decoded = decode(encode(entry(run), str), str)
    assert decoded.run.output == "Paris is the capital."
    assert decoded.run.all_messages() == run.all_messages()


def shout(text: str) -> str:
    return text.upper()


@pytest.mark.parametrize(
    ("spec", "expected_type"),
    [
        pytest.param([Capital, Landmark], Capital, id="list of types"),
        pytest.param(Capital | Landmark, Capital, id="union"),
        pytest.param(ToolOutput(Capital), Capital, id="ToolOutput"),
        pytest.param(TextOutput(shout), str, id="TextOutput"),
        pytest.param(int, int, id="int"),
        pytest.param(list[int], list, id="list[int]"),
    ],
)
async def test_round_trip_keeps_the_output_typed_for_output_specs(spec: Any, expected_type: type) -> None:
    """An output spec that names its type(s) rather than being one still decodes to typed output."""
    run = await run_agent(spec)
    decoded = decode(encode(entry(run), spec), spec)
    assert isinstance(run.output, expected_type)
    assert type(decoded.run.output) is type(run.output)
    assert decoded.run.output == run.output


async def test_schema_drift_is_caught_for_list_output_specs() -> None:
    run = await run_agent([Capital, Landmark])
    data = encode(entry(run), [Capital, Landmark])

    class Renamed(BaseModel):
        title: str

    with pytest.raises(DecodeError):
        decode(data, [Renamed])


# --------------------------------------------------------------------------- envelope


async def test_envelope_fields() -> None:
    run = await run_agent()
    data = encode(entry(run, model="openai:gpt-4o", cost=0.0012, latency=1.25, created=1_732_252_800.0), Capital)

    envelope = json.loads(data)
    assert envelope["format"] == FORMAT == 1
    assert envelope["model"] == "openai:gpt-4o"
    assert envelope["cost"] == 0.0012
    assert envelope["latency"] == 1.25
    assert envelope["created"] == 1_732_252_800.0
    assert envelope["run"]["output"] == {"country": "France", "city": "Paris", "population": 2_100_000}

    decoded = decode(data, Capital)
    assert decoded.model == "openai:gpt-4o"
    assert decoded.cost == 0.0012
    assert isinstance(decoded.cost, float)
    assert decoded.latency == 1.25
    assert decoded.created == 1_732_252_800.0


async def test_envelope_with_no_price_and_no_model() -> None:
    run = await run_agent()
    data = encode(entry(run, model=None, cost=None), Capital)
    envelope = json.loads(data)
    assert envelope["cost"] is None
    assert envelope["model"] is None
    decoded = decode(data, Capital)
    assert decoded.cost is None
    assert decoded.model is None


async def test_zero_cost_is_not_none() -> None:
    run = await run_agent()
    decoded = decode(encode(entry(run, cost=0.0), Capital), Capital)
    assert decoded.cost == 0.0
    assert decoded.cost is not None


# --------------------------------------------------------------------------- decode errors


@pytest.fixture
async def capital_bytes() -> bytes:
    return encode(entry(await run_agent()), Capital)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not json at all", id="not JSON"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", id="not UTF-8"),
        pytest.param(b"[1, 2, 3]", id="JSON but not an object"),
        pytest.param(b"{}", id="empty object"),
        pytest.param(b"null", id="null"),
    ],
)
def test_decode_rejects_non_entries(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data, Capital)


def test_decode_rejects_truncated_bytes(capital_bytes: bytes) -> None:
    for cut in (1, len(capital_bytes) // 3, len(capital_bytes) // 2, len(capital_bytes) - 1):
        with pytest.raises(DecodeError):
            decode(capital_bytes[:cut], Capital)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_decode_rejects_another_format_version(capital_bytes: bytes, version: Any) -> None:
    envelope = json.loads(capital_bytes)
    envelope["format"] = version
    with pytest.raises(DecodeError):
        decode(json.dumps(envelope).encode(), Capital)


def test_decode_rejects_a_missing_format(capital_bytes: bytes) -> None:
    envelope = json.loads(capital_bytes)
    del envelope["format"]
    with pytest.raises(DecodeError):
        decode(json.dumps(envelope).encode(), Capital)


def test_decode_accepts_its_own_format(capital_bytes: bytes) -> None:
    """The baseline for the error tests: the unmodified bytes, re-serialized, decode fine."""
    assert decode(json.dumps(json.loads(capital_bytes)).encode(), Capital).run.output.city == "Paris"


class CapitalWithRequiredField(BaseModel):
    """`Capital` after a schema change: a new required field."""

    country: str
    city: str
    population: int
    mayor: str


class CapitalWithChangedType(BaseModel):
    """`Capital` after a schema change: `population` became a nested model."""

    class Population(BaseModel):
        count: int
        year: int

    country: str
    city: str
    population: Population


class CapitalWithOptionalField(BaseModel):
    country: str
    city: str
    population: int
    mayor: str | None = None


@pytest.mark.parametrize("new_type", [CapitalWithRequiredField, CapitalWithChangedType], ids=["field required", "type changed"])
def test_decode_rejects_output_that_no_longer_validates(capital_bytes: bytes, new_type: type[BaseModel]) -> None:
    with pytest.raises(DecodeError):
        decode(capital_bytes, new_type)


def test_decode_accepts_a_compatible_schema_change(capital_bytes: bytes) -> None:
    """Baseline for the schema tests: an added optional field still validates."""
    decoded = decode(capital_bytes, CapitalWithOptionalField)
    assert isinstance(decoded.run.output, CapitalWithOptionalField)
    assert decoded.run.output.mayor is None


def test_decode_rejects_structured_entry_for_str_output(capital_bytes: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(capital_bytes, str)


async def test_decode_rejects_str_entry_for_structured_output() -> None:
    data = encode(entry(await run_agent(str, custom_output_text="Paris")), str)
    assert decode(data, str).run.output == "Paris"
    with pytest.raises(DecodeError):
        decode(data, Capital)


def test_decode_rejects_corrupted_messages(capital_bytes: bytes) -> None:
    envelope = json.loads(capital_bytes)
    envelope["run"]["messages"][0]["kind"] = "nonsense"
    with pytest.raises(DecodeError):
        decode(json.dumps(envelope).encode(), Capital)


@pytest.mark.parametrize("field", ["latency", "created"])
def test_decode_rejects_bad_envelope_fields(capital_bytes: bytes, field: str) -> None:
    envelope = json.loads(capital_bytes)
    envelope[field] = "yesterday"
    with pytest.raises(DecodeError):
        decode(json.dumps(envelope).encode(), Capital)


# --------------------------------------------------------------------------- entries are data


_EXECUTED: list[str] = []


def _record_execution(marker: str) -> str:
    _EXECUTED.append(marker)
    return marker


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record_execution, ("unpickled",))


def test_encoded_entry_is_plain_json(capital_bytes: bytes) -> None:
    assert isinstance(json.loads(capital_bytes), dict)
    assert capital_bytes.startswith(b"{")
    assert not capital_bytes.startswith(b"\x80"), "no pickle protocol header"
    capital_bytes.decode("utf-8")
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(capital_bytes)


def test_decode_never_executes_code() -> None:
    """A pickle that would run code if unpickled is rejected as not an entry, and nothing runs."""
    payload = pickle.dumps(_Payload())
    pickle_protocol_0 = pickle.dumps(_Payload(), protocol=0)
    _EXECUTED.clear()
    for data in (payload, pickle_protocol_0):
        with pytest.raises(DecodeError):
            decode(data, Capital)
    assert _EXECUTED == []
    # Sanity: the payload really would execute code when unpickled.
    pickle.loads(payload)
    assert _EXECUTED == ["unpickled"]
