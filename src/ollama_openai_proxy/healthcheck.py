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

# bandit B104: an address that means "all interfaces", recognised in order to probe
# 127.0.0.1 instead; nothing binds to it here
ANY_IPV4 = "0.0.0.0"  # nosec B104
WILDCARDS = {"", ANY_IPV4, "::"}


def url(env: Mapping[str, str] = os.environ) -> str:
    host = env.get("PROXY_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("SSL_CERTFILE") else "http"
    return f"{scheme}://{host}:{env.get('PROXY_PORT', '11434')}/health"


def main() -> int:
    target = url()
    # bandit B323: the probe asks this container's own server over loopback, whose certificate
    # is made for the public name, not 127.0.0.1; it reads a status code, sends no secret.
    context = ssl._create_unverified_context() if target.startswith("https") else None  # nosec B323
    try:
        # bandit B310: url() builds an http(s) URL only, never file: or another scheme
        with urllib.request.urlopen(target, timeout=2, context=context) as response:  # nosec B310
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
