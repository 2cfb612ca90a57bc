"""Serve Ollama's REST API from any OpenAI-compatible backend."""

__version__ = "0.1.0"
