"""When the command re-executes itself on jemalloc, and when the operator's choice wins."""

from __future__ import annotations

import pytest

from ollama_openai_proxy import allocator
from ollama_openai_proxy.allocator import JEMALLOC_CONF, AllocatorError, exec_environment

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: LIB)


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)


@pytest.mark.usefixtures("installed")
def test_auto_switches_to_jemalloc_when_installed() -> None:
    env = exec_environment("auto", {"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "LD_PRELOAD": LIB,
        "PYTHONMALLOC": "malloc",
        "MALLOC_CONF": JEMALLOC_CONF,
    }
    # the re-executed process sees both set and carries on: no loop
    assert exec_environment("auto", env) is None
    assert allocator.current(env) == "jemalloc"


@pytest.mark.usefixtures("installed")
def test_operator_malloc_conf_is_kept() -> None:
    env = exec_environment("jemalloc", {"MALLOC_CONF": "narenas:1"})
    assert env is not None
    assert env["MALLOC_CONF"] == "narenas:1"


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    "preset", [{"LD_PRELOAD": "/opt/libtcmalloc.so"}, {"PYTHONMALLOC": "debug"}]
)
def test_auto_respects_an_allocator_the_operator_chose(preset: dict[str, str]) -> None:
    assert exec_environment("auto", preset) is None
    with pytest.raises(AllocatorError, match="conflicts"):
        exec_environment("jemalloc", preset)


@pytest.mark.usefixtures("installed")
def test_pymalloc_never_re_executes() -> None:
    assert exec_environment("pymalloc", {}) is None


@pytest.mark.usefixtures("missing")
def test_missing_library() -> None:
    assert exec_environment("auto", {}) is None
    with pytest.raises(AllocatorError, match="libjemalloc2"):
        exec_environment("jemalloc", {})


def test_current_names_the_allocator() -> None:
    assert allocator.current({}) == "pymalloc"
    assert allocator.current({"PYTHONMALLOC": "malloc"}) == "malloc"
    assert allocator.current({"LD_PRELOAD": LIB}) == "pymalloc"


def test_find_jemalloc_returns_a_loadable_library_or_none() -> None:
    found = allocator.find_jemalloc()
    assert found is None or "jemalloc" in found
