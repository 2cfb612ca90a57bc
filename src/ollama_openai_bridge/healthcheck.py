"""``python -m ollama_openai_bridge.healthcheck [--ready]``: exit 0 when the local proxy answers.

Without an argument it asks ``/health`` (liveness: the container's HEALTHCHECK and the Kubernetes
start-up and liveness probes). With ``--ready`` it asks ``/ready`` (the backend answers), sending
the first inbound key when ``PROXY_API_KEYS`` or ``PROXY_API_KEYS_FILE`` is set: ``/ready`` is
not open like ``/health`` (security.OPEN_PATHS), so an ``httpGet`` readiness probe, which cannot
read a key from a Secret, gets 401 on a proxy with keys and the pod never becomes ready.

It runs every few seconds, so it imports the standard library only (no app, no settings) and reads
the same variables the server does: ``PROXY_PORT``, ``PROXY_HOST``, ``SSL_CERTFILE`` (HTTPS,
checked without verifying a certificate made for another name) and ``HEALTH_CHECK_TIMEOUT``.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

# bandit B104: an address that means "all interfaces", recognised in order to probe
# 127.0.0.1 instead; nothing binds to it here
ANY_IPV4 = "0.0.0.0"  # nosec B104
WILDCARDS = {"", ANY_IPV4, "::"}


def url(env: Mapping[str, str] = os.environ, path: str = "/health") -> str:
    """The local proxy's URL for ``path``, e.g. ``http://127.0.0.1:11434/health``."""
    host = env.get("PROXY_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("SSL_CERTFILE") else "http"
    return f"{scheme}://{host}:{env.get('PROXY_PORT', '11434')}{path}"


def inbound_key(env: Mapping[str, str] = os.environ) -> str | None:
    """The first key of PROXY_API_KEYS, else of PROXY_API_KEYS_FILE (as Settings.inbound_keys
    reads them), or None when the proxy has none. Raises OSError if the file cannot be read."""
    for key in env.get("PROXY_API_KEYS", "").split(","):
        if key.strip():
            return key.strip()
    file = env.get("PROXY_API_KEYS_FILE")
    if file:
        for raw in Path(file).read_text().splitlines():
            if raw.strip() and not raw.strip().startswith("#"):
                return raw.strip()
    return None


def main(argv: Sequence[str] = sys.argv[1:], env: Mapping[str, str] = os.environ) -> int:
    """Exit status 0 when the answer is 200, else 1 with the reason on stderr; the key is never
    printed (urllib's errors name the URL and status, not the headers)."""
    ready = "--ready" in argv
    target = url(env, "/ready" if ready else "/health")
    request = urllib.request.Request(target)
    # /ready waits up to HEALTH_CHECK_TIMEOUT for the backend, then answers 503 itself.
    timeout = float(env.get("HEALTH_CHECK_TIMEOUT", "5")) + 1 if ready else 2.0
    # bandit B323: the probe asks this container's own server over loopback, whose certificate
    # is made for the public name, not 127.0.0.1; the inbound key it may send (--ready) never
    # leaves the host.
    context = ssl._create_unverified_context() if target.startswith("https") else None  # nosec B323
    try:
        key = inbound_key(env) if ready else None
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        # Never through HTTP_PROXY and the like, which a container that reaches its backends
        # through a proxy has set (docs/DEPLOYMENT.md): urlopen would send the probe, and the
        # inbound key with it, to that proxy, for this container's own loopback address.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        # bandit B310: url() builds an http(s) URL only, never file: or another scheme
        with opener.open(request, timeout=timeout) as response:  # nosec B310
            return 0 if response.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
