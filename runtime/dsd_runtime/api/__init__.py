"""OpenAI-compatible HTTP API served by the draft role."""
