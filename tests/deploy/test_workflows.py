"""The GitHub workflows and Dependabot's configuration: valid against their schemas
(check-jsonschema), every action pinned to a commit, and the CI and release jobs doing what
docs/RELEASING.md says they do."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} missing"))


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((GITHUB / "workflows" / name).read_text())
    assert isinstance(data, dict)
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found = job["steps"]
    assert isinstance(found, list)
    return found


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if s.get("uses", "").startswith(f"{action}@")]


def runs(job: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        *((p, "vendor.github-workflows") for p in WORKFLOWS),
        (GITHUB / "dependabot.yml", "vendor.dependabot"),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_schema(path: Path, schema: str) -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}
    out = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path: Path) -> None:
    """A tag can be moved to other code (aquasecurity/trivy-action#541); a commit cannot. The
    comment names the release, which Dependabot updates with the commit."""
    lines = [line for line in path.read_text().splitlines() if "uses:" in line]
    assert lines
    for line in lines:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$", line), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert job["timeout-minutes"] <= 45, name
        for checkout in uses(job, "actions/checkout"):
            assert checkout["with"]["persist-credentials"] is False, name


def test_ci_runs_the_readme_test_command_and_the_audit() -> None:
    test = load("ci.yml")["jobs"]["test"]
    commands = runs(test)
    assert re.search(r"^REQUIRE_AUDIT=1 make test\b", commands, re.MULTILINE)
    # the tree is checked after the tests, not before
    assert commands.index("git status --porcelain") > commands.index("make test")


def test_ci_scans_and_signs_the_image() -> None:
    image = load("ci.yml")["jobs"]["image"]
    build = [s for s in uses(image, "docker/build-push-action") if s.get("id") == "build"]
    assert build[0]["with"]["platforms"] == "linux/amd64,linux/arm64"
    (trivy,) = uses(image, "aquasecurity/trivy-action")
    assert trivy["with"]["exit-code"] == "1"
    assert image["permissions"]["id-token"] == "write"
    assert "cosign sign --yes" in runs(image)


def test_release_runs_on_version_tags_only() -> None:
    release = load("release.yml")
    # PyYAML reads the key `on` as True (YAML 1.1)
    assert release[True] == {"push": {"tags": ["v*"]}}
    ci = load("ci.yml")
    assert "tags" not in ci[True]["push"], "tags are released by release.yml alone"


def test_release_refuses_a_tag_without_its_changelog_entry() -> None:
    jobs = load("release.yml")["jobs"]
    assert 'scripts/changelog.py "$GITHUB_REF_NAME"' in runs(jobs["changelog"])
    # nothing is published before the entry and the whole test suite passed
    for name in ("dist", "image", "helm"):
        needs = jobs[name]["needs"]
        assert "test" in ([needs] if isinstance(needs, str) else needs), name
    assert jobs["test"]["needs"] == "changelog"
    assert "REQUIRE_AUDIT=1 make test" in runs(jobs["test"])


def test_release_publishes_to_pypi_by_trusted_publishing() -> None:
    pypi = load("release.yml")["jobs"]["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}
    assert pypi["environment"]["name"] == "pypi"
    (publish,) = uses(pypi, "pypa/gh-action-pypi-publish")
    assert not {"password", "user"} & set(publish.get("with", {})), "no token: OIDC"


def test_release_images_are_multi_arch_scanned_signed_in_both_registries() -> None:
    image = load("release.yml")["jobs"]["image"]
    order = [s.get("uses", s.get("run", "")).split("@")[0] for s in steps(image)]
    (meta,) = [s for s in steps(image) if s.get("id") == "meta"]
    assert "ghcr.io/" in meta["with"]["images"]
    assert "docker.io/" in meta["with"]["images"]
    (build,) = [s for s in steps(image) if s.get("id") == "build"]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True
    assert "cache-from" not in build["with"], "a release builds from no shared cache"
    # scanned before anything is pushed, signed after
    assert order.index("aquasecurity/trivy-action") < order.index("docker/login-action")
    signing = runs(image)
    assert 'cosign sign --yes "ghcr.io/' in signing
    assert 'cosign sign --yes "docker.io/' in signing
    assert {s["with"]["registry"] for s in uses(image, "docker/login-action")} == {
        "ghcr.io",
        "docker.io",
    }


def test_release_pushes_the_helm_chart_to_ghcr() -> None:
    helm = runs(load("release.yml")["jobs"]["helm"])
    assert "deploy/helm/*/" in helm
    assert 'helm package "$chart" --version "$VERSION"' in helm
    assert "oci://ghcr.io/" in helm


def test_the_github_release_carries_the_notes_dists_sbom_and_chart() -> None:
    jobs = load("release.yml")["jobs"]
    dist = runs(jobs["dist"])
    assert "cyclonedx-py environment" in dist
    assert "--require-hashes -r requirements/run.lock" in dist
    release = jobs["github-release"]
    assert set(release["needs"]) >= {"pypi", "image", "helm"}
    create = runs(release)
    for attached in ("artifacts/dist/*", "artifacts/sbom/*", "artifacts/chart/*"):
        assert attached in create
    assert "--notes-file artifacts/release-notes/release-notes.md" in create


def test_dependabot_updates_the_pinned_actions_after_a_cooldown() -> None:
    config = yaml.safe_load((GITHUB / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert "github-actions" in ecosystems
    assert all(u["cooldown"]["default-days"] >= 7 for u in config["updates"])
    npm = set(ecosystems["npm"]["directories"])
    locked = {
        f"/{p.parent.relative_to(ROOT)}" for p in (ROOT / "tests").glob("*/package-lock.json")
    }
    assert npm == locked
