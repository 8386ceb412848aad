"""A model behind PydanticAI's two kinds of fallback, for tests that must work through either."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai.models import Model


def behind_a_fallback(wrapping: str, model: Model, backup: Model) -> tuple[Model, list[Any]]:
    """`model` wrapped in a `FallbackModel`, or with a `ModelFallback(backup)` capability to add to the agent
    (skipped on a PydanticAI without it): the agent's model and the capabilities the fallback needs."""
    if wrapping == "FallbackModel":
        from pydantic_ai.models.fallback import FallbackModel

        return FallbackModel(model), []
    capabilities_module = pytest.importorskip("pydantic_ai.capabilities")
    if not hasattr(capabilities_module, "ModelFallback"):
        pytest.skip("ModelFallback arrived after this PydanticAI")
    return model, [capabilities_module.ModelFallback(backup)]
