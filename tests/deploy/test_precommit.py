"""The pre-commit hooks (.pre-commit-config.yaml): a configuration pre-commit accepts, local hooks
only (nothing downloaded), and the hooks run on a copy of the tree: they pass on it as committed
and fail on a lint error, an unformatted file and a stale generated file. mypy's hook is only
validated here: `make typecheck` runs it, and a whole run takes half a minute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".pre-commit-config.yaml"
VENV = Path(sys.executable).parent.parent
HOOKS = {
    "ruff",
    "ruff-format",
    "mypy",
    "openapi-drift",
    "settings-docs-drift",
    "helm-drift",
    "detect-secrets",
}
# Skipped in the whole-tree runs: mypy (`make typecheck` runs it), detect-secrets (a scan of
# every file takes most of a minute; `make security` does it): each is run on its own below.
SKIPPED = "mypy,detect-secrets"


def pre_commit(
    *args: str, cwd: Path, home: Path, skip: str = SKIPPED
) -> subprocess.CompletedProcess[str]:
    # Without coverage's subprocess measurement: it would count the copy's modules as more files.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")}
    env = {
        **inherited,
        "PRE_COMMIT_HOME": str(home),  # its cache, not the user's
        "VIRTUAL_ENV": str(VENV),  # scripts/in-venv runs this environment's tools
        "PYTHONPATH": str(cwd / "src"),  # the copy's package, not an installed one
        "SKIP": skip,
        "PRE_COMMIT_COLOR": "never",
    }
    return subprocess.run(
        [str(VENV / "bin" / "pre-commit"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_configuration_is_valid(tmp_path: Path) -> None:
    out = pre_commit("validate-config", str(CONFIG), cwd=ROOT, home=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning" not in (out.stdout + out.stderr).lower()  # e.g. a deprecated language


def test_the_hooks_are_local_and_use_the_projects_tools() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"
    assert {h["id"] for h in repo["hooks"]} == HOOKS
    for hook in repo["hooks"]:
        assert hook["language"] == "unsupported", hook["id"]  # nothing to install
        assert hook["entry"].startswith("scripts/in-venv "), hook["id"]
    assert os.access(ROOT / "scripts" / "in-venv", os.X_OK)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The committed tree, copied into a repository of its own."""
    copy = tmp_path / "tree"
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "tree"], cwd=copy, check=True)
    return copy


def test_the_hooks_pass_on_the_tree_and_catch_each_kind_of_drift(
    tree: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    out = pre_commit("run", "--all-files", cwd=tree, home=home)
    assert out.returncode == 0, out.stdout + out.stderr
    skipped = dict.fromkeys(SKIPPED.split(","), "Skipped")
    assert outcomes(out.stdout) == dict.fromkeys(HOOKS, "Passed") | skipped

    (tree / "scripts" / "lint_error.py").write_text("import os\n")  # F401, unused import
    (tree / "scripts" / "unformatted.py").write_text("x = {  'a':1 }\n")
    openapi = tree / "docs" / "openapi.json"
    openapi.write_text(openapi.read_text().replace('"openapi"', '"openapi" ', 1))
    schema = tree / "deploy" / "helm" / "ollama-openai-bridge" / "values.schema.json"
    schema.write_text(schema.read_text().replace("Proxy default", "Default", 1))
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    out = pre_commit("run", "--all-files", cwd=tree, home=home)
    assert out.returncode == 1
    failed = {hook for hook, outcome in outcomes(out.stdout).items() if outcome == "Failed"}
    assert failed == {"ruff", "ruff-format", "openapi-drift", "helm-drift"}, out.stdout
    assert "F401" in out.stdout
    assert "run python scripts/helm_chart.py" in out.stdout


def outcomes(stdout: str) -> dict[str, str]:
    """Hook id -> Passed, Failed or Skipped, from pre-commit's lines "<name>.....<outcome>"."""
    names = {h["name"]: h["id"] for h in yaml.safe_load(CONFIG.read_text())["repos"][0]["hooks"]}
    found = {}
    for line in stdout.splitlines():
        name, dots, outcome = line.rpartition("..")
        if dots and name.rstrip(".") in names:
            found[names[name.rstrip(".")]] = outcome.lstrip(".")
    return found


def test_the_secrets_hook_stops_a_key_and_lets_a_placeholder_through(
    tree: Path, tmp_path: Path
) -> None:
    """The staged file is scanned with the baseline's plugins, the project's own among them
    (scripts/secret_plugins.py): an OpenRouter key is refused, its placeholder in prose is not."""
    home = tmp_path / "home"
    # built here, so that the scan of this repository does not see a key in this file
    key = "sk-or-v1-" + "5f0e" * 16
    planted = tree / "docs" / "planted.md"
    planted.write_text("OpenRouter's keys look like sk-or-v1-... (64 hexadecimal digits).\n")
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    out = pre_commit("run", "detect-secrets", "--files", str(planted), cwd=tree, home=home, skip="")
    assert out.returncode == 0, out.stdout + out.stderr
    planted.write_text(f"export OPENROUTER_API_KEY={key}\n")
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    out = pre_commit("run", "detect-secrets", "--files", str(planted), cwd=tree, home=home, skip="")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "OpenRouter API Key" in out.stdout
    assert outcomes(out.stdout) == {"detect-secrets": "Failed"}
