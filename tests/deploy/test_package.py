"""The wheel and sdist build, carry the one version, and run from the wheel alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from ollama_openai_bridge import __version__
from ollama_openai_bridge.allocator import find_jemalloc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes from the test extras, so no download is needed here.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return out


def test_wheel_metadata_and_contents(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"ollama_openai_bridge-{__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"ollama_openai_bridge-{__version__}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"Version: {__version__}" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "aiohttp" in metadata
    assert "orjson" in metadata
    assert "ollama-openai-bridge = ollama_openai_bridge.cli:main" in entry_points
    # The first name, kept for one release (src/ollama_openai_proxy/__init__.py).
    assert "ollama-openai-proxy = ollama_openai_bridge.cli:deprecated_main" in entry_points
    assert "ollama_openai_proxy/__main__.py" in names
    sources = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}
    assert sources <= names, sources - names
    assert not any(n.startswith("tests/") for n in names)


def test_sdist_contents(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.name == f"ollama_openai_bridge-{__version__}.tar.gz"
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/ollama_openai_bridge/cli.py"} <= names


def test_installed_wheel_runs(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The wheel's copy comes first on the path; dependencies come from this environment.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ollama_openai_bridge as p, ollama_openai_bridge.cli as c;"
            "print(p.__file__); sys.argv = ['ollama-openai-bridge', '--version']; c.main()",
        ],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.stdout.splitlines()[0].startswith(str(target)), out.stderr
    assert out.stdout.splitlines()[1] == f"ollama-openai-bridge {__version__}"


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a virtual environment of its own, so its two console scripts
    exist as pip writes them. Its dependencies come from this environment, through a .pth file
    read after the venv's own site-packages: the wheel's copy of the package comes first."""
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "zz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --target, not --prefix: --prefix would first uninstall this environment's own copy.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for script in (site / "bin").iterdir():
        script.rename(venv / "bin" / script.name)
    return venv / "bin"


RENAMED = "ollama-openai-proxy is now ollama-openai-bridge"


@pytest.mark.parametrize(
    "command",
    [["ollama-openai-bridge"], ["ollama-openai-proxy"], ["python", "-m", "ollama_openai_proxy"]],
    ids=["new-command", "old-command", "old-module"],
)
def test_old_names_still_run_and_say_so(installed: Path, command: list[str]) -> None:
    """The rename keeps the old command and ``python -m ollama_openai_proxy`` for one release:
    each runs the new command and says once, on stderr, what to use instead."""
    # pip wrote the scripts with this interpreter's #! line: run them with the venv's own.
    argv = command[1:] if command[0] == "python" else [str(installed / command[0])]
    out = subprocess.run(
        [str(installed / "python"), *argv, "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=installed,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ollama-openai-bridge {__version__}\n"
    if command == ["ollama-openai-bridge"]:
        assert out.stderr == ""
    else:
        # One plain line, no Python warning frame (DeprecationWarning is for importers).
        assert out.stderr.count(RENAMED) == 1, out.stderr
        assert out.stderr.startswith("warning: ")
        assert out.stderr.count("\n") == 1


@pytest.mark.skipif(find_jemalloc() is None, reason="needs libjemalloc2 (Debian)")
def test_the_old_command_says_it_once_when_it_starts_again(installed: Path, tmp_path: Path) -> None:
    """MEMORY_ALLOCATOR=jemalloc: the command executes itself again to preload the library;
    the deprecation line came twice (the second review of #19, L5). Here the start then stops
    at a taken port, after the second execution."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PATH": "/usr/bin:/bin",
            "MEMORY_ALLOCATOR": "jemalloc",
            "PROXY_PORT": str(taken.getsockname()[1]),
        }
        out = subprocess.run(
            [str(installed / "python"), str(installed / "ollama-openai-proxy")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
    assert "cannot listen on" in out.stderr  # it got past the second execution
    assert out.stderr.count(RENAMED) == 1, out.stderr


def test_old_module_names_are_the_same_modules(installed: Path) -> None:
    """``ollama_openai_proxy.X`` is ``ollama_openai_bridge.X`` (one object, so one metrics
    registry), importing it warns with DeprecationWarning, and an existing probe's
    ``python -m ollama_openai_proxy.healthcheck`` still runs the health check."""
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import ollama_openai_proxy.app as old\n"
        "import ollama_openai_bridge.app as new\n"
        "print(old is new, [w.category.__name__ for w in caught])\n"
    )
    python = str(installed / "python")
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.stdout == "True ['DeprecationWarning']\n", out.stderr
    probe = subprocess.run(
        [python, "-m", "ollama_openai_proxy.healthcheck"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PROXY_PORT": "9"},  # nothing listens on port 9
    )
    assert probe.returncode == 1
    assert probe.stderr.startswith("unhealthy: http://127.0.0.1:9/health"), probe.stderr
