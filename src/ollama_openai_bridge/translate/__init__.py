"""Pure translation between Ollama's and OpenAI's wire formats.

Nothing here does I/O or imports a web framework: functions take plain dicts and return plain
dicts or bytes, and the stream translator is fed SSE payloads and returns NDJSON lines. What a
caller must log (dropped options, repaired history) is returned, not logged.
"""
