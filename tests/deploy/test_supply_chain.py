"""The supply chain: locked, hashed dependencies that agree with pyproject.toml and are what
every install uses; scanners that really scan; each exception to them explained where made."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import string
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from scripts.secrets_check import unaudited

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
TEST_LOCK = REQUIREMENTS / "test.lock"
RUN_LOCK = REQUIREMENTS / "run.lock"
TOOLS = REQUIREMENTS / "tools.in"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} missing"))


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """``{name: (version, number of hashes)}`` of a uv (pip-compile format) lock file, for this
    interpreter: the lock is universal, so a package may appear once per Python range under an
    environment marker (``deprecated==1.3.1 ; python_full_version < '3.12'``)."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            name = ""
            marker = line.split(";", 1)[1].rstrip(" \\") if ";" in line else ""
            if marker and not Marker(marker).evaluate():
                continue
            name = str(canonicalize_name(match[1]))
            assert name not in found, f"{name} twice in {lock.name} for this Python"
            found[name] = (Version(match[2]), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def tools_in() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in TOOLS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"runtime": data["dependencies"], "test": data["optional-dependencies"]["test"]}


def test_every_requirement_is_locked_at_a_version_it_allows() -> None:
    """A requirement added to pyproject.toml or tools.in without `make lock` fails here."""
    locked = pins(TEST_LOCK)
    wanted = [Requirement(r) for r in project()["runtime"] + project()["test"]] + tools_in()
    for req in wanted:
        name = str(canonicalize_name(req.name))
        assert name in locked, f"{req} is not in requirements/test.lock: run `make lock`"
        version, _ = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/test.lock has {name} {version}, outside {req}: run `make lock`"
        )


def test_the_runtime_lock_is_the_runtime_part_of_the_test_lock() -> None:
    run, test = pins(RUN_LOCK), pins(TEST_LOCK)
    for req in map(Requirement, project()["runtime"]):
        assert str(canonicalize_name(req.name)) in run, f"{req.name} missing from run.lock"
    for name, (version, _) in run.items():
        assert test[name][0] == version, f"{name}: {version} to run, {test[name][0]} in tests"
    assert not {"pytest", "ruff", "mypy", "openai", "ollama", "bandit"} & set(run)


BUILD_LOCK = REQUIREMENTS / "build.lock"
LITELLM_LOCK = ROOT / "tests" / "litellm" / "requirements.lock"
PY38_LOCK = ROOT / "tests" / "py38" / "requirements.lock"


def test_every_locked_package_is_hashed() -> None:
    for lock in (TEST_LOCK, RUN_LOCK, LITELLM_LOCK):
        locked = pins(lock)
        assert len(locked) > 20
        assert all(hashes for _, hashes in locked.values()), lock.name
    # the small ones: the build tools, and the old SDK's set for Python 3.8 (no marker in it,
    # so this interpreter reads it whole)
    for lock, least in ((BUILD_LOCK, 5), (PY38_LOCK, 8)):
        locked = pins(lock)
        assert len(locked) >= least, lock
        assert all(hashes for _, hashes in locked.values()), lock


def test_every_test_dependency_has_a_hashed_lock_and_is_installed_from_it() -> None:
    """Not only the main virtualenv: the build tools `make run` and the image build with, the
    old SDK's virtualenv on Python 3.8, LiteLLM's, and the n8n tarball npm pack fetches
    (issue #19's review, M3)."""
    build, test = pins(BUILD_LOCK), pins(TEST_LOCK)
    assert {"hatchling", "editables"} <= set(build)
    for name, (version, _) in build.items():
        assert test[name][0] == version, f"{name}: {version} to build, {test[name][0]} in tests"
    assert pins(PY38_LOCK)["ollama"][0] == Version("0.3.3")
    # LiteLLM's lock hashes the exact pins of its .in
    wanted = {
        str(canonicalize_name(m[1])): Version(m[2])
        for line in (ROOT / "tests" / "litellm" / "requirements.in").read_text().splitlines()
        if (m := PIN.match(line))
    }
    assert {n: pins(LITELLM_LOCK)[n][0] for n in wanted} == wanted
    setup = (ROOT / "scripts" / "setup-test-clients.sh").read_text()
    installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", setup)
    assert len(installs) == 2
    assert all("--require-hashes" in i for i in installs), installs
    assert '"$lock38"' in setup
    assert '"$lock"' in setup
    n8n = (ROOT / "tests" / "n8n" / "setup.sh").read_text()
    assert re.search(r"^INTEGRITY=sha512-[A-Za-z0-9+/]{86}==$", n8n, re.MULTILINE)
    assert '[ "$got" != "$INTEGRITY" ]' in n8n
    # nothing built with pip's build isolation, which fetches the build tools unpinned
    makefile = (ROOT / "Makefile").read_text()
    for line in re.findall(r"pip install [^\n]*-e \.", makefile):
        assert "--no-build-isolation" in line, line
    stamp = makefile.split("$(VENV)/.stamp-run:", 1)[1].split("\n\n", 1)[0]
    assert "-r requirements/build.lock" in stamp
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/build.lock" in dockerfile
    assert "pip wheel --no-deps --no-build-isolation" in dockerfile
    assert "!requirements/build.lock" in (ROOT / ".dockerignore").read_text().splitlines()
    # make lock writes every one of them
    lock_rule = makefile.split("\nlock lock-upgrade:", 1)[1].split("\n\n", 1)[0]
    for path in ("requirements/build.lock", "tests/litellm/requirements.lock", "tests/py38/"):
        assert path in lock_rule, path
    assert "--python-version 3.8 --generate-hashes" in lock_rule


def test_the_tools_are_pinned_exactly() -> None:
    for req in tools_in():
        assert str(req.specifier).startswith("=="), req
    names = {req.name for req in tools_in()}
    assert {"bandit", "pip-audit", "detect-secrets", "cyclonedx-bom", "uv", "zizmor"} <= names


def test_every_install_uses_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements/test.lock" in makefile
    assert "pip install -q --require-hashes -r requirements/run.lock" in makefile
    # `make run` installs the runtime set alone: no test clients, no npm
    (run_rule,) = re.findall(r"^run: (.*)$", makefile, re.MULTILINE)
    assert run_rule.split() == ["$(VENV)/.stamp-run"]
    stamp = makefile.split("$(VENV)/.stamp-run:", 1)[1].split("\n\n", 1)[0]
    assert "test.lock" not in stamp
    assert "setup-test-clients" not in stamp
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/run.lock" in dockerfile


def test_ci_runs_the_readme_command_and_leaves_the_tree_clean() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", run, re.MULTILINE)
    assert "git status --porcelain" in run.split("make test", 1)[1]
    assert "make test" in (ROOT / "README.md").read_text()
    # what the tests generate lands in an ignored folder, not over a tracked document
    makefile = (ROOT / "Makefile").read_text()
    test_rule = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "compat_matrix.py --check docs/COMPATIBILITY.md" in test_rule
    assert "--output docs/" not in test_rule
    assert "build/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_security_checks_run_with_the_tests() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (test_rule,) = re.findall(r"^test: (.*)$", makefile, re.MULTILINE)
    assert "security" in test_rule.split()
    script = (ROOT / "scripts" / "security.sh").read_text()
    for command in ("bandit", "zizmor", "detect-secrets", "pip-audit", "cyclonedx-py"):
        assert f'"$BIN/{command}"' in script, command
    # bandit reads the scripts and the benchmark harness too, not only what is shipped
    bandit = re.findall(r'^"\$BIN/bandit" -q -r (.*) --skip (\S+)$', script, re.MULTILINE)
    assert {d for dirs, _ in bandit for d in dirs.split()} == {"src", "scripts", "bench"}
    for _, skipped in bandit:
        for check in skipped.split(","):
            assert check == "B101" or re.search(rf"\b{check}\b", script.split('"$BIN/bandit"')[1])


def nosec_lines() -> list[tuple[Path, int, str]]:
    found = []
    scanned = [p for d in ("src", "scripts", "bench") for p in (ROOT / d).rglob("*.py")]
    for path in sorted(scanned):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "# nosec" in line:
                found.append((path, number, line))
    return found


def test_every_nosec_names_its_checks_and_says_why() -> None:
    """`# nosec Bxxx` only, never a blanket one, under a `# bandit Bxxx: why` comment."""
    assert nosec_lines(), "bandit's exceptions are all gone: drop this test"
    for path, number, line in nosec_lines():
        ids = re.findall(r"B\d{3}", line.split("# nosec", 1)[1])
        assert ids, f"{path.name}:{number}: a blanket nosec"
        lines = path.read_text().splitlines()
        above = []
        for previous in reversed(lines[: number - 1]):
            if not previous.strip().startswith("#"):
                break
            above.append(previous)
        explained = " ".join(above)
        if "import " in line:  # an import's reason is given where it is used
            explained = path.read_text()
        for check in ids:
            assert re.search(rf"# bandit [^:]*{check}", explained), (
                f"{path.name}:{number}: no `# bandit {check}: why` above"
            )


def test_bandit_is_really_checking(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import subprocess\n\n\ndef run(cmd: str) -> None:\n    subprocess.call(cmd, shell=True)\n"
    )
    out = subprocess.run(
        [tool("bandit"), "-q", "-r", str(tmp_path), "--skip", "B101", "-f", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 1
    assert "B602" in {r["test_id"] for r in json.loads(out.stdout)["results"]}


def baseline_settings() -> dict[str, Any]:
    """.secrets.baseline with its own plugins' paths made absolute: they are relative to the
    repository's root, and the scans below run in a scratch repository."""
    settings: dict[str, Any] = json.loads((ROOT / ".secrets.baseline").read_text())
    for plugin in settings["plugins_used"]:
        if "path" in plugin:
            plugin["path"] = "file://" + str(ROOT / plugin["path"].removeprefix("file://"))
    return settings


def test_a_new_secret_fails_the_scan_and_an_audited_one_does_not(tmp_path: Path) -> None:
    """The check scripts/security.sh runs, in a scratch repository with the project's baseline
    settings: a planted AWS key is reported; once audited as a fake, it passes."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    key = "AKIA" + "QYLPMN5HHHFPZAM2"  # split: the scan of this repository must not see it
    (tmp_path / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{key}"\n')
    (tmp_path / "README.md").write_text("nothing to see\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True, timeout=30)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({**baseline_settings(), "results": {}}))

    def scan() -> list[str]:
        subprocess.run(
            [tool("detect-secrets"), "scan", "-n", "--baseline", str(baseline)],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return unaudited(baseline)

    assert scan() == ["settings.py:1: AWS Access Key"]
    audited = json.loads(baseline.read_text())
    for found in audited["results"]["settings.py"]:
        found["is_secret"] = False
    baseline.write_text(json.dumps(audited))
    assert scan() == []


def random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


ALNUM = string.ascii_letters + string.digits
# Keys in each provider's published shape, made at run time (a literal one here would be a
# finding of this repository's own scan): detect-secrets 1.5 has no detector for any of them.
PROVIDER_KEYS = {
    "Anthropic API Key": lambda: "sk-ant-api03-" + random_text(ALNUM + "-_", 93) + "AA",
    "OpenRouter API Key": lambda: "sk-or-v1-" + secrets.token_hex(32),
    "Groq API Key": lambda: "gsk_" + random_text(ALNUM, 52),
    "Google API Key": lambda: "AIza" + random_text(ALNUM + "-_", 35),
    # a Redis URL with a password and no user name (the second review of #19, M2)
    "Password in a URL": lambda: "rediss://:" + random_text(ALNUM, 20) + "7q@cache.example:6380/0",
}


def scratch_scan(tmp_path: Path, files: dict[str, str]) -> list[str]:
    """detect-secrets as scripts/security.sh runs it, with the project's baseline settings and
    plugins, over ``files`` in a scratch repository: the unaudited findings."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True, timeout=30)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({**baseline_settings(), "results": {}}))
    subprocess.run(
        [tool("detect-secrets"), "scan", "-n", "--baseline", str(baseline)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return unaudited(baseline)


@pytest.mark.parametrize("kind", PROVIDER_KEYS)
def test_each_providers_key_fails_the_scan(tmp_path: Path, kind: str) -> None:
    """The keys this project's users hold, planted where they would leak: .env.example and a
    guide's shell block (issue #19's review, M5)."""
    key = PROVIDER_KEYS[kind]()
    found = scratch_scan(
        tmp_path,
        {
            ".env.example": f"# BACKEND_KEY={key}\n",
            "docs/GUIDE.md": f"```bash\nexport BACKEND_TOKEN='{key}'\n```\n",
        },
    )
    assert f".env.example:1: {kind}" in found
    assert f"docs/GUIDE.md:2: {kind}" in found


def test_the_provider_plugins_pass_over_placeholders(tmp_path: Path) -> None:
    """The docs name each key's shape with a placeholder: not a finding."""
    prose = (
        "Anthropic's keys start sk-ant-api03-..., OpenRouter's sk-or-v1-..., Groq's gsk_..., "
        "Redis's redis://:password@redis:6379/0, redis://:PASSWORD@r:6379"
    )
    found = scratch_scan(tmp_path, {"docs/KEYS.md": f"{prose}, Google's AIza....\n"})
    assert found == []


def test_the_baselines_own_plugins_exist() -> None:
    """detect-secrets skips a custom plugin whose file is missing without a word: the scan
    would pass while blind to those keys."""
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    custom = [p for p in baseline["plugins_used"] if "path" in p]
    assert {p["name"] for p in custom} == {
        "AnthropicKeyDetector",
        "OpenRouterKeyDetector",
        "GroqKeyDetector",
        "GoogleApiKeyDetector",
        "PasswordOnlyURLDetector",
    }
    for plugin in custom:
        path = ROOT / plugin["path"].removeprefix("file://")
        assert path.is_file(), plugin
        assert f"class {plugin['name']}(" in path.read_text()


def test_the_baseline_holds_only_audited_fakes() -> None:
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    assert baseline["results"], "an empty baseline: is the scan still configured?"
    assert unaudited(ROOT / ".secrets.baseline") == []
    excluded = next(
        f["pattern"] for f in baseline["filters_used"] if f["path"].endswith("should_exclude_file")
    )
    # the baseline's own hashes, the locks' hashes and the generated OpenAPI document only
    hashed = (
        "requirements/test.lock",
        "requirements/build.lock",
        "tests/litellm/requirements.lock",
    )
    for path in (".secrets.baseline", *hashed, "tests/py38/requirements.lock", "docs/openapi.json"):
        assert any(re.search(p, path) for p in excluded), path
    assert not any(re.search(p, "src/ollama_openai_bridge/config/security.py") for p in excluded)
