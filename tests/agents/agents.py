"""How the tests start Claude Code and OpenAI's Codex CLI: headless, offline, in a scratch home.

Both agents come from tests/agents/node_modules (``make dev`` installs them from the lock in
tests/agents). Each run gets a fresh HOME, CODEX_HOME and working directory, the environment
variables that switch off telemetry, error reports and update checks, and a hard timeout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "node_modules" / ".bin"
CLAUDE = BIN / "claude"
CODEX = BIN / "codex"
TIMEOUT = 120.0  # seconds for one agent run, start to exit
CLAUDE_PROMPT = "Use the Bash tool to write the word hello into the file proof.txt, then stop."
CODEX_PROMPT = "Run a shell command that writes the word hello into proof.txt, then stop."

# Claude Code's switches for telemetry, update checks and error reports. Without them it opens
# two connections to api.anthropic.com:443 in a `-p` run; CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC
# alone stops both (tests/agents/README.md).
CLAUDE_QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
# Codex reads its switches from $CODEX_HOME/config.toml (every key checked by --strict-config).
CODEX_CONFIG = """\
check_for_update_on_startup = false
oss_provider = "ollama"

# Analytics go to ab.chatgpt.com:443 otherwise.
[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
log_user_prompt = false

# Plugin sync fetches from github.com, api.github.com and chatgpt.com at every start.
[features]
plugins = false
"""
CODEX_QUIET = {"NO_COLOR": "1"}
# Variables of the caller that would send an agent somewhere else or change what it does.
SCRUB = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "CLAUDE_CONFIG_DIR",
    "CODEX_HOME",
    "CODEX_OSS_BASE_URL",
    "CODEX_OSS_PORT",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OLLAMA_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@dataclass
class Run:
    """One finished agent run."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    timed_out: bool = False
    env: dict[str, str] = field(default_factory=dict)  # what the run set beyond os.environ

    def report(self) -> str:
        """Everything a failed assertion should show."""
        env = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return (
            f"$ {env} {' '.join(self.argv)}\nexit {self.returncode}"
            f"{' (timed out)' if self.timed_out else ''}\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )


def installed() -> str | None:
    """Why the agents cannot run here, or None when they can."""
    if shutil.which("node") is None:
        return "Node.js is not installed"
    missing = [p.name for p in (CLAUDE, CODEX) if not p.exists()]
    if missing:
        return f"{', '.join(missing)} missing in tests/agents/node_modules: run `make dev`"
    return None


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        NO_PROXY="127.0.0.1,localhost,::1",
        TERM="dumb",
        CI="1",
    )
    return env


def claude_env(base_url: str, home: Path, model: str) -> dict[str, str]:
    """Claude Code's environment as `ollama launch claude` sets it, against ``base_url``."""
    env = _base_env(home)
    env.update(CLAUDE_QUIET)
    env.update(
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_AUTH_TOKEN="ollama",
        ANTHROPIC_API_KEY="",
        # Background work (titles, summaries) goes to the "small fast" model: the same one.
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
        ANTHROPIC_DEFAULT_SONNET_MODEL=model,
        ANTHROPIC_DEFAULT_OPUS_MODEL=model,
        ANTHROPIC_SMALL_FAST_MODEL=model,
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        # A failing answer is retried once, not ten times with back-off: a broken route fails
        # the test in seconds instead of at the timeout.
        CLAUDE_CODE_MAX_RETRIES="1",
    )
    return env


def claude_argv(prompt: str, model: str) -> list[str]:
    return [
        str(CLAUDE),
        "-p",
        prompt,
        "--model",
        model,
        "--output-format",
        "text",
        # Bash runs without asking (--dangerously-skip-permissions refuses to run as root).
        "--allowedTools",
        "Bash,Write,Read",
        "--no-session-persistence",
    ]


def codex_env(base_url: str, home: Path) -> dict[str, str]:
    """Codex's environment for `codex exec --oss` against ``base_url`` (the server's /v1)."""
    env = _base_env(home)
    env.update(CODEX_QUIET)
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    env.update(CODEX_HOME=str(codex_home), CODEX_OSS_BASE_URL=base_url)
    return env


def codex_argv(prompt: str, model: str, workdir: Path) -> list[str]:
    return [
        str(CODEX),
        "exec",
        "--strict-config",
        "--oss",
        "--local-provider",
        "ollama",
        "-m",
        model,
        "--skip-git-repo-check",
        "--ephemeral",
        "--color",
        "never",
        # The shell tool runs without asking and without Codex's own sandbox (bubblewrap needs
        # user namespaces, which containers often lack); the test's scratch directory is the box.
        "--dangerously-bypass-approvals-and-sandbox",
        "-C",
        str(workdir),
        prompt,
    ]


def run(argv: list[str], env: dict[str, str], workdir: Path, timeout: float = TIMEOUT) -> Run:
    """Run an agent to its end, or kill it (and its children) after ``timeout`` seconds."""
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    try:
        out, err = proc.communicate(timeout=timeout)
        return Run(argv, proc.returncode, out, err, workdir, env=changed)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return Run(argv, proc.returncode, out, err, workdir, timed_out=True, env=changed)


class Blackhole:
    """A loopback HTTP proxy that refuses everything and writes down what was asked of it.

    The agents get it as HTTP_PROXY/HTTPS_PROXY (loopback stays direct through NO_PROXY), so a
    request for anywhere else, telemetry or an update check, ends here instead of leaving the
    machine, and shows up in :attr:`asked` (``CONNECT host:443`` or ``GET http://...``)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), self.url)

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0]
                    self.asked.append(line.decode("latin-1"))
                    conn.sendall(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass
