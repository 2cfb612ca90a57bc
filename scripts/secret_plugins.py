"""detect-secrets plugins for the keys this project's users hold that detect-secrets 1.5 has no
detector for (issue #19's review, M5): Anthropic, OpenRouter, Groq and Google AI Studio keys,
and a URL with a password but no user name (the second review, M2).
OpenAI's keys (OpenAIDetector), GitHub, AWS and the rest are detected by the built-in plugins.

.secrets.baseline names this file in ``plugins_used`` (``"path": "file://scripts/secret_plugins.py"``,
relative to the repository's root, where scripts/security.sh and the pre-commit hook run), so
every scan with that baseline loads them. Each pattern is the provider's published key shape,
tight enough that placeholders such as ``sk-ant-...`` or ``gsk-...`` in the docs do not match;
tests/deploy/test_supply_chain.py plants a key of each kind and sees the scan report it.
"""

from __future__ import annotations

import re

from detect_secrets.plugins.base import RegexBasedDetector


class AnthropicKeyDetector(RegexBasedDetector):
    """Anthropic API and admin keys: ``sk-ant-api03-`` / ``sk-ant-admin01-`` and about 95
    characters (docs.anthropic.com, "API keys")."""

    # bandit B105: the name of a kind of key in the scan's report, not a key.
    secret_type = "Anthropic API Key"  # nosec B105
    denylist = (re.compile(r"\bsk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_-]{40,}"),)


class OpenRouterKeyDetector(RegexBasedDetector):
    """OpenRouter keys: ``sk-or-v1-`` and 64 hexadecimal digits (openrouter.ai/settings/keys)."""

    # bandit B105: the name of a kind of key in the scan's report, not a key.
    secret_type = "OpenRouter API Key"  # nosec B105
    denylist = (re.compile(r"\bsk-or-v1-[0-9a-f]{64}\b"),)


class GroqKeyDetector(RegexBasedDetector):
    """Groq keys: ``gsk_`` and 52 letters and digits (console.groq.com/keys)."""

    # bandit B105: the name of a kind of key in the scan's report, not a key.
    secret_type = "Groq API Key"  # nosec B105
    denylist = (re.compile(r"\bgsk_[A-Za-z0-9]{52}\b"),)


class GoogleApiKeyDetector(RegexBasedDetector):
    """Google API keys, Gemini's (AI Studio) among them: ``AIza`` and 35 characters."""

    # bandit B105: the name of a kind of key in the scan's report, not a key.
    secret_type = "Google API Key"  # nosec B105
    denylist = (re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),)


class PasswordOnlyURLDetector(RegexBasedDetector):
    """A password in a URL without a user name, as Redis URLs carry it
    (``rediss://:PASSWORD@host:6380/0``, the form docs/DEPLOYMENT.md shows for
    RATE_LIMIT_STORAGE_URI): the built-in BasicAuthDetector needs a user name. Twelve or more
    characters with a letter and a digit, so that ``:password@`` in an example is not one."""

    # bandit B105: the name of a kind of key in the scan's report, not a key.
    secret_type = "Password in a URL"  # nosec B105
    denylist = (
        re.compile(
            r"\b[A-Za-z][A-Za-z0-9+.-]*://:(?=[^\s@/]*[0-9])(?=[^\s@/]*[A-Za-z])"
            r"[A-Za-z0-9._~%+!$&'()*,;=-]{12,}@"
        ),
    )
