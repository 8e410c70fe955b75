"""`python -m frontend`: serve with settings from the LLM_FRONTEND_* environment."""

from frontend.server import run

run()
