"""vLLM's /tokenize and /detokenize, answered by Triton's preprocessing model."""
