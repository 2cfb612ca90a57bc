"""``python -m ollama_openai_proxy.healthcheck``: exit 0 when the local proxy answers ``/health``.

The container's HEALTHCHECK runs this every few seconds, so it imports the standard library only
(no app, no settings) and reads the same variables the server does: ``PROXY_PORT``, ``PROXY_HOST``
and ``SSL_CERTFILE`` (HTTPS, checked without verifying a certificate made for another name).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping

WILDCARDS = {"", "0.0.0.0", "::"}


def url(env: Mapping[str, str] = os.environ) -> str:
    host = env.get("PROXY_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("SSL_CERTFILE") else "http"
    return f"{scheme}://{host}:{env.get('PROXY_PORT', '11434')}/health"


def main() -> int:
    target = url()
    context = ssl._create_unverified_context() if target.startswith("https") else None
    try:
        with urllib.request.urlopen(target, timeout=2, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
