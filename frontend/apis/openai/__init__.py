"""OpenAI's API under /v1: models, completions and chat completions."""
