"""pyai_caching: cache, price and replay PydanticAI agent runs."""
