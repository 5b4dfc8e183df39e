"""LLM backends and what they share: prompts, response schemas, validation of what comes back."""
