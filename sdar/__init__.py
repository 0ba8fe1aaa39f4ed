"""sdar: a lean multi-turn GRPO + SDAR trainer for LLM agents, built on sdar_kernels."""

__version__ = "0.1.0"
