"""Which backend redirects the proxy follows, and what it says of the others
(upstream_redirect.py): the rules as a table. Through both clients: tests/integration."""

from __future__ import annotations

import pytest

from ollama_openai_bridge.upstream_redirect import (
    MAX_REDIRECTS,
    UpstreamRedirect,
    shown,
    target,
)

URL = "https://api.example:8443/v1/chat/completions?api-version=1"
# A fake user:password@, built apart: whole on one line, the secrets scan takes it for one.
USERINFO = "user:" + "secret" + "@"

FOLLOWED = {
    # name: (status, Location, where it goes)
    "relative-path": (308, "/v2/chat/completions", "https://api.example:8443/v2/chat/completions"),
    "relative-to-the-directory": (307, "x", "https://api.example:8443/v1/chat/x"),
    "absolute": (
        307,
        "https://api.example:8443/v2/chat/completions",
        "https://api.example:8443/v2/chat/completions",
    ),
    "host-in-capitals-fragment-dropped": (
        308,
        "https://API.EXAMPLE:8443/v2#top",
        "https://API.EXAMPLE:8443/v2",
    ),
    "a-query": (308, "/v2?api-version=2", "https://api.example:8443/v2?api-version=2"),
    # Quoted as yarl quotes for aiohttp: the http1 client sends only printable ASCII (second
    # review of #18: a space was a 500 there). A header is decoded as UTF-8, surrogates for
    # what is not.
    "a-space": (307, "/v2/chat completions", "https://api.example:8443/v2/chat%20completions"),
    "non-ascii": (307, "/v2/chät?q=ü", "https://api.example:8443/v2/ch%C3%A4t?q=%C3%BC"),
    "not-utf-8": (307, "/v2/\udce4", "https://api.example:8443/v2/%E4"),
    "escapes-kept": (307, "/v2/a%20b?x=%2F", "https://api.example:8443/v2/a%20b?x=%2F"),
    "a-control": (307, "/v2/x?\x7f", "https://api.example:8443/v2/x?%7F"),
}


@pytest.mark.parametrize("case", FOLLOWED)
def test_a_307_or_308_to_the_same_origin_is_followed(case: str) -> None:
    status, location, where = FOLLOWED[case]
    assert target(URL, status, location, 0) == where


def test_the_default_port_is_the_same_origin_written_or_not() -> None:
    assert target("http://h/v1/x", 308, "http://h:80/v2", 0) == "http://h:80/v2"
    assert target("https://h:443/v1/x", 308, "https://h/v2", 0) == "https://h/v2"


NOT_FOLLOWED = {
    # name: (status, Location, hops so far, the message after "upstream answered ")
    "301": (
        301,
        "/v2",
        0,
        "301 Moved Permanently pointing to https://api.example:8443/v2: not followed, as it "
        "would turn the https://api.example:8443/v1/chat/completions?... request into a GET",
    ),
    "302": (302, "/v2", 0, "302 Found pointing to https://api.example:8443/v2: not followed,"),
    "303": (303, "/v2", 0, "303 See Other pointing to https://api.example:8443/v2: not followed,"),
    "another-host": (
        307,
        "https://evil.example:8443/v2",
        0,
        "307 Temporary Redirect pointing to https://evil.example:8443/v2: not followed to "
        "another origin (the API key is not sent elsewhere)",
    ),
    "another-port": (308, "https://api.example/v2", 0, "to https://api.example/v2: not followed"),
    "plain-http": (308, "http://api.example:8443/v2", 0, "8443/v2: not followed to another"),
    "credentials": (
        308,
        "https://" + USERINFO + "api.example:8443/v2?sig=abc",
        0,
        "308 Permanent Redirect pointing to https://api.example:8443/v2?...: not followed to",
    ),
    "no-location": (
        308,
        "",
        0,
        "308 Permanent Redirect without a Location for "
        "https://api.example:8443/v1/chat/completions?...",
    ),
    "not-a-url": (308, "https://[::1/v2", 0, "308 Permanent Redirect with a Location that is"),
    "a-bad-port": (308, "https://api.example:port/v2", 0, "not followed to another origin"),
    "too-many-hops": (
        308,
        "/v2",
        MAX_REDIRECTS,
        "308 Permanent Redirect pointing to https://api.example:8443/v2: more than 3 redirects; "
        "set the upstream's base URL (OPENAI_API_BASE_URL or base_url) to where it points",
    ),
}


@pytest.mark.parametrize("case", NOT_FOLLOWED)
def test_a_redirect_not_followed_says_its_status_and_where_it_pointed(case: str) -> None:
    status, location, hops, says = NOT_FOLLOWED[case]
    with pytest.raises(UpstreamRedirect) as caught:
        target(URL, status, location or None, hops)
    assert caught.value.status == 502
    assert caught.value.upstream_status == status
    assert caught.value.message.startswith("upstream answered ")
    assert says in caught.value.message
    assert "secret" not in caught.value.message
    assert "sig=abc" not in caught.value.message


def test_urls_are_shown_without_credentials_or_query() -> None:
    assert shown("https://" + USERINFO + "h:1/a/b?key=s3cret") == "https://h:1/a/b?..."
    assert shown("http://h/a") == "http://h/a"
    assert shown("http://h/" + "a" * 500) == "http://h/" + "a" * 199
