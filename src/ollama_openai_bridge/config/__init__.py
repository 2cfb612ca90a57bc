"""The proxy's configuration: environment variables and ``.env``, validated once at start.

Import from here (``from ollama_openai_bridge.config import Settings, load_settings``); the
modules are one concern each:

- :mod:`.settings`: ``Settings``, which combines the concerns below, and ``load_settings``;
- :mod:`.backends`: the backends, their timeouts, retries, circuit breaker and HTTP client;
- :mod:`.server`: listening, TLS, the HTTP/1.1 front's limits and timeouts, the Ollama version;
- :mod:`.requests`: request limits and translation (mapping file, thinking, output tokens);
- :mod:`.security`: origins, inbound keys, throttles, rate limits, token budgets, their stores;
- :mod:`.operations`: logs, metrics, documentation endpoints, workers, memory;
- :mod:`.cache`: the response cache (RESPONSE_CACHE_*);
- :mod:`.model_mapping`: MODEL_MAPPING_FILE read into a ``ModelMap``;
- :mod:`.parsing`: sizes, lists and JSON objects from text; ``ConfigError``.
"""

from ollama_openai_bridge.config.model_mapping import load_model_map
from ollama_openai_bridge.config.parsing import ConfigError, parse_size
from ollama_openai_bridge.config.security import DEFAULT_AUTH_FAILURE_LIMIT
from ollama_openai_bridge.config.server import OLLAMA_API_VERSION
from ollama_openai_bridge.config.settings import Settings, load_settings

__all__ = [
    "DEFAULT_AUTH_FAILURE_LIMIT",
    "OLLAMA_API_VERSION",
    "ConfigError",
    "Settings",
    "load_model_map",
    "load_settings",
    "parse_size",
]
