"""The HTTP frontend in front of Triton: `create_app(settings)` in frontend.app, `run()` in
frontend.server, settings (env prefix LLM_FRONTEND_) in frontend.settings."""
