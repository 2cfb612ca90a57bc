"""scripts/release_chart.py, which the release workflow runs before `helm package`: the published
chart pulls the image that release pushed (not ghcr.io/OWNER/...) at the release's version,
rendered by Helm's engine from a copy of the chart, with values.yaml's comments kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import helm_python
import pytest
import yaml
from scripts import release_chart
from scripts.helm_chart import CHART

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/acme/ollama-openai-bridge"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release_chart.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_released_chart_pulls_the_released_image(tmp_path: Path) -> None:
    chart = tmp_path / "ollama-openai-bridge"
    shutil.copytree(CHART, chart)
    before = (chart / "values.yaml").read_text()
    source = "https://github.com/acme/ollama-openai-bridge"
    out = run(str(chart), IMAGE, "1.2.3", "--source", source)
    assert out.returncode == 0, out.stderr
    after = (chart / "values.yaml").read_text()
    # one line changed: the comments and every other value stay
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        ("  repository: ghcr.io/OWNER/ollama-openai-bridge", f"  repository: {IMAGE}")
    ]
    # Redis's image is not the proxy's
    assert yaml.safe_load(after)["redis"]["image"]["repository"] == "redis"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert (meta["version"], meta["appVersion"], meta["sources"]) == ("1.2.3", "1.2.3", [source])
    with helm_python.Chart.load(chart) as loaded:
        rendered = loaded.render(None, name="proxy", namespace="default", is_install=True)
    docs = [
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "proxy-ollama-openai-bridge"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE}:1.2.3"


@pytest.mark.parametrize(
    ("repository", "version", "message"),
    [
        ("ghcr.io/Acme/ollama-openai-bridge", "1.2.3", "lower case"),
        ("ghcr.io/acme/ollama-openai-bridge:1.2.3", "1.2.3", "without tag"),
        (IMAGE, "v1.2.3", "not a SemVer version"),
    ],
)
def test_a_wrong_name_or_version_is_refused_and_nothing_written(
    tmp_path: Path, repository: str, version: str, message: str
) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    out = run(str(chart), repository, version)
    assert out.returncode == 1
    assert message in out.stderr
    for name in ("values.yaml", "Chart.yaml"):
        assert (chart / name).read_text() == (CHART / name).read_text()


def test_a_chart_of_another_shape_is_refused() -> None:
    """Each rewrite must happen exactly once: a second `image:` block or none is an error,
    not a silently unchanged chart."""
    with pytest.raises(release_chart.ChartShapeError, match=r"image\.repository"):
        release_chart.release_values("image:\n  tag: x\n", IMAGE)
    twice = "version: 1\nappVersion: '1'\nversion: 2\n"
    with pytest.raises(release_chart.ChartShapeError, match=r"Chart\.yaml version"):
        release_chart.release_chart_yaml(twice, "1.2.3", None)
