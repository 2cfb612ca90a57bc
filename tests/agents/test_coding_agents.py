"""Claude Code and OpenAI's Codex CLI finish a tool-using task through the proxy (issue #17).

Each agent runs headless, for real, in a scratch directory, against the proxy on loopback, which
forwards to a scripted fake OpenAI backend (:class:`~tests.fake_upstream.FakeUpstream`):

* Claude Code (``claude -p``) speaks the Anthropic Messages API: ``POST /v1/messages?beta=true``;
* Codex (``codex exec --oss``) checks ``/v1/models``, ``/api/version`` and ``/api/tags``, then
  speaks the OpenAI Responses API: ``POST /v1/responses``.

The fake answers the agent's first request with a call of the agent's own shell tool that writes
``hello`` to ``proof.txt``, and the request that carries the tool's result with a final text. The
test passes when the file exists, the agent printed the final text and exited 0, and the backend
saw the tool result come back. What the agents send and which events they need is in
tests/agents/README.md and tests/fixtures/agents/.

The agents come from tests/agents (``make dev``). Without Node.js or those packages the tests
skip, or fail when REQUIRE_AGENTS is set. A loopback proxy that refuses everything stands in for
the internet (:class:`~tests.agents.agents.Blackhole`): nothing leaves the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents import agents
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

MODEL = "qwen3-coder:30b"
COMMAND = "printf hello > proof.txt"
FINAL = "Done: proof.txt holds hello. PROOF-OK"
CODEX_MIN_OLLAMA = (0, 13, 4)  # `codex --oss` refuses an older Ollama

pytestmark = pytest.mark.timeout(agents.TIMEOUT * 2)


def tool_call(call_id: str, name: str, arguments: str) -> Script:
    """A call of ``name``, streamed in two pieces, or whole when not streamed."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    half = len(arguments) // 2
    return Script(
        chunks=[
            {
                "tool_calls": [
                    {**call, "index": 0, "function": {"name": name, "arguments": arguments[:half]}}
                ]
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
        ],
        message={"role": "assistant", "content": None, "tool_calls": [call]},
        finish_reason="tool_calls",
    )


# Claude Code's shell tool is "Bash" ({"command", "description"}); Codex's is "exec_command"
# ({"cmd"}): tests/fixtures/agents/claude_code_01_*.json and codex_04_*.json.
BASH = tool_call(
    "call_cc1", "Bash", f'{{"command": "{COMMAND}", "description": "Write hello to proof.txt"}}'
)
EXEC = tool_call("call_cx1", "exec_command", f'{{"cmd": "{COMMAND}"}}')
DONE = Script(chunks=[{"content": FINAL[:5]}, {"content": FINAL[5:]}])
OTHER = Script(chunks=[{"content": "OK"}])  # a request that is not the task (a title, ...)


def _tools(body: dict[str, Any]) -> set[str]:
    return {
        t.get("function", {}).get("name") for t in body.get("tools") or [] if isinstance(t, dict)
    }


def _has_tool_result(body: dict[str, Any]) -> bool:
    # Not "the last message": Claude Code's first request ends with a mid-conversation system
    # turn, so its translation need not end with the user's message.
    return any(m.get("role") == "tool" for m in body.get("messages") or [])


def install(fake: FakeUpstream) -> None:
    fake.rules[:] = [
        (_has_tool_result, DONE),
        (lambda b: "Bash" in _tools(b), BASH),
        (lambda b: "exec_command" in _tools(b), EXEC),
        (lambda _: True, OTHER),
    ]


@pytest.fixture(scope="module")
def installed() -> None:
    reason = agents.installed()
    if reason is not None:
        if os.environ.get("REQUIRE_AGENTS"):
            pytest.fail(f"{reason} (REQUIRE_AGENTS is set)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(models=[MODEL]).start()
    install(fake)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def served(installed: None, backend: FakeUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(settings_for(backend.url)) as server:
        yield server


@pytest.fixture
def fake(backend: FakeUpstream) -> FakeUpstream:
    backend.journal.clear()
    return backend


def sent_back(fake: FakeUpstream, tool: str) -> list[dict[str, Any]]:
    """The tool messages the backend received after its call of ``tool``."""
    results: list[dict[str, Any]] = []
    for entry in fake.journal:
        if entry["path"] != "/v1/chat/completions" or not isinstance(entry["body"], dict):
            continue
        messages = entry["body"].get("messages") or []
        called = {
            c.get("id")
            for m in messages
            for c in m.get("tool_calls") or []
            if c.get("function", {}).get("name") == tool
        }
        results.extend(
            m for m in messages if m.get("role") == "tool" and m.get("tool_call_id") in called
        )
    return results


def check(run: agents.Run, fake: FakeUpstream, tool: str, asked: list[str]) -> None:
    report = run.report()
    assert not run.timed_out, report
    assert run.returncode == 0, report
    proof = run.workdir / "proof.txt"
    assert proof.exists(), f"the agent's {tool} call did not create proof.txt\n{report}"
    assert proof.read_text() == "hello", report
    assert FINAL in run.stdout, report
    assert sent_back(fake, tool), f"the backend never got {tool}'s result back\n{report}"
    assert not asked, f"the agent tried to reach the internet: {asked}\n{report}"


def scratch(tmp_path: Path) -> tuple[Path, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    return home, work


@pytest.mark.compat("Claude Code 2.1.332 (npm)", "tools")
def test_claude_code_runs_a_tool_through_the_proxy(
    served: ProxyServer, fake: FakeUpstream, tmp_path: Path
) -> None:
    home, work = scratch(tmp_path)
    with agents.Blackhole() as hole:
        env = agents.claude_env(served.url, home, MODEL) | hole.env()
        run = agents.run(agents.claude_argv(agents.CLAUDE_PROMPT, MODEL), env, work)
    check(run, fake, "Bash", hole.asked)


@pytest.mark.compat("Codex CLI 0.171.0 (npm)", "tools")
def test_codex_runs_a_tool_through_the_proxy(
    served: ProxyServer, fake: FakeUpstream, tmp_path: Path
) -> None:
    version = httpx.get(served.url + "/api/version", timeout=10).json()["version"]
    numbers = tuple(int(n) for n in version.split("-")[0].split("."))
    assert numbers >= CODEX_MIN_OLLAMA, (
        f"/api/version says {version}: `codex --oss` refuses an Ollama older than 0.13.4"
    )
    home, work = scratch(tmp_path)
    with agents.Blackhole() as hole:
        env = agents.codex_env(served.url + "/v1", home) | hole.env()
        run = agents.run(agents.codex_argv(agents.CODEX_PROMPT, MODEL, work), env, work)
    check(run, fake, "exec_command", hole.asked)
