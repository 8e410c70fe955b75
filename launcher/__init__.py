"""The `llm-stack` launcher: starts Triton (launcher.triton_server) and the frontend.

It sits above the packages it launches; `llm_stack`, which the Triton models import,
never imports it.
"""
