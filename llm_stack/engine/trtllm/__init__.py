"""The GPU engine: TensorRT-LLM's LLM API behind the `Engine` interface.

`build` makes the LLM's arguments, `sampling` maps a request, `outputs` reads the streamed
results, `stats` the executor's own figures, `engine` ties them together. Importing this
package never imports `tensorrt_llm`.
"""

from llm_stack.engine.trtllm.build import (
    CHECKED_VERSION,
    LlmBuildError,
    LlmSettings,
    read_llm_args,
)
from llm_stack.engine.trtllm.engine import TrtLlmEngine

__all__ = ["CHECKED_VERSION", "LlmBuildError", "LlmSettings", "TrtLlmEngine", "read_llm_args"]
