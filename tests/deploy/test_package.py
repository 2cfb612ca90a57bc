"""The wheel and sdist build, carry the one version, and run from the wheel alone."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ollama_openai_proxy import __version__

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
    assert wheel.name.startswith(f"ollama_openai_proxy-{__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"ollama_openai_proxy-{__version__}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"Version: {__version__}" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "aiohttp" in metadata
    assert "orjson" in metadata
    assert "ollama-openai-proxy = ollama_openai_proxy.cli:main" in entry_points
    sources = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}
    assert sources <= names, sources - names
    assert not any(n.startswith("tests/") for n in names)


def test_sdist_contents(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.name == f"ollama_openai_proxy-{__version__}.tar.gz"
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/ollama_openai_proxy/cli.py"} <= names


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
            "import sys, ollama_openai_proxy as p, ollama_openai_proxy.cli as c;"
            "print(p.__file__); sys.argv = ['ollama-openai-proxy', '--version']; c.main()",
        ],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.stdout.splitlines()[0].startswith(str(target)), out.stderr
    assert out.stdout.splitlines()[1] == f"ollama-openai-proxy {__version__}"
