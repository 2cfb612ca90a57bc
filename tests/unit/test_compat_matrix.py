"""scripts/compat_matrix.py: the matrix renders to build/, reads back, and the tracked copy is
compared on its cells and client versions -- never rewritten by a test run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.compat_matrix import (
    drift,
    main,
    merge_results,
    parse,
    render,
    versions,
    whole_run,
)

ROOT = Path(__file__).resolve().parents[2]
# A compat-marked test of a pure-Python client (no Node.js needed), run alone below.
ONE_COMPAT_TEST = ["tests/integration/test_ollama_sdk.py::test_list"]

CELLS: list[dict[str, object]] = [
    {"client": "ollama-python 0.6 (PyPI)", "feature": "chat", "status": "pass"},
    {"client": "ollama-python 0.6 (PyPI)", "feature": "tools", "status": "pass"},
    {"client": "ollama-js (npm)", "feature": "chat", "status": "pass"},
    {"client": "ollama 0.3.3 (Python 3.8)", "feature": "chat", "status": "pass"},
]
KNOWN = {
    "ollama-python 0.6 (PyPI)": "ollama 0.6.3",
    "ollama-js (npm)": "ollama 0.6.4",
    "ollama 0.3.3 (Python 3.8)": "ollama 0.3.3 on CPython 3.8",
}


def tracked(known: dict[str, str] = KNOWN) -> str:
    """The matrix as `make compat-doc` would have written it, with these versions."""
    return render(CELLS, known)


def with_status(client: str, feature: str, status: str) -> list[dict[str, object]]:
    return [
        {**c, "status": status} if (c["client"], c["feature"]) == (client, feature) else c
        for c in CELLS
    ]


def test_render_reads_back_cell_for_cell() -> None:
    cells: list[dict[str, object]] = [
        *CELLS,
        {"client": "openai (PyPI) on /v1", "feature": "errors", "status": "fail"},
    ]
    grid, tested = parse(render(cells))
    assert grid == {
        "ollama-python 0.6 (PyPI)": {"chat": "pass", "tools": "pass"},
        "ollama-js (npm)": {"chat": "pass"},
        "ollama 0.3.3 (Python 3.8)": {"chat": "pass"},
        "openai (PyPI) on /v1": {"errors": "fail"},
    }
    assert set(tested) == set(grid)
    assert tested["ollama 0.3.3 (Python 3.8)"] == versions()["ollama 0.3.3 (Python 3.8)"]


def test_the_tracked_matrix_parses() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "COMPATIBILITY.md").read_text()
    grid, tested = parse(doc)
    assert grid["ollama-python 0.6 (PyPI)"]["chat"] == "pass"
    assert set(tested) == set(grid)


def test_the_same_run_on_another_day_is_no_drift() -> None:
    assert drift(tracked(), CELLS, KNOWN) == ([], [])


def test_a_cell_that_changed_is_drift() -> None:
    differences, notes = drift(tracked(), with_status("ollama-js (npm)", "chat", "fail"), KNOWN)
    assert differences == ["ollama-js (npm) / chat: pass in the tracked matrix, fail in this run"]
    assert notes == []


def test_a_new_or_missing_cell_is_drift() -> None:
    added: list[dict[str, object]] = [
        *CELLS,
        {"client": "ollama-js (npm)", "feature": "tools", "status": "pass"},
    ]
    assert drift(tracked(), added, KNOWN)[0] == [
        "ollama-js (npm) / tools: no cell in the tracked matrix, pass in this run"
    ]
    assert drift(tracked(), CELLS[1:], KNOWN)[0] == [
        "ollama-python 0.6 (PyPI) / chat: pass in the tracked matrix, no cell in this run"
    ]


def test_a_new_client_version_is_drift() -> None:
    newer = {**KNOWN, "ollama-python 0.6 (PyPI)": "ollama 0.6.4"}
    assert drift(tracked(), CELLS, newer)[0] == [
        "ollama-python 0.6 (PyPI): tested with ollama 0.6.3 in the tracked matrix, "
        "ollama 0.6.4 in this run"
    ]


def test_a_tool_missing_here_is_a_note_not_drift() -> None:
    """No Python 3.8 on this machine: its cell is skipped and its version not looked at."""
    cells = with_status("ollama 0.3.3 (Python 3.8)", "chat", "skipped")
    differences, notes = drift(tracked(), cells, {**KNOWN, "ollama 0.3.3 (Python 3.8)": ""})
    assert differences == []
    assert notes == ["ollama 0.3.3 (Python 3.8) / chat: skipped here, passed in the tracked run"]


def test_parse_refuses_what_is_not_a_matrix() -> None:
    with pytest.raises(ValueError, match="tables are missing"):
        parse("# Client compatibility\n\nnothing yet\n")


def test_main_writes_build_and_never_the_tracked_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "compat-results.json"
    results.write_text(json.dumps({"cells": CELLS}))
    output = tmp_path / "build" / "COMPATIBILITY.md"
    doc = tmp_path / "COMPATIBILITY.md"
    doc.write_text(tracked(known=dict.fromkeys(KNOWN, "ollama 0.0.1")))
    before = doc.read_bytes()

    code = main(["--results", str(results), "--output", str(output), "--check", str(doc)])

    assert code == 1  # this run's versions are not the tracked 0.0.1
    assert doc.read_bytes() == before
    assert parse(output.read_text())[0] == parse(render(CELLS))[0]
    out = capsys.readouterr().out
    assert "drift: ollama-js (npm): tested with ollama 0.0.1" in out
    assert "`make compat-doc`" in out


def test_main_passes_when_the_tracked_file_agrees(tmp_path: Path) -> None:
    results = tmp_path / "compat-results.json"
    results.write_text(json.dumps({"cells": CELLS}))
    doc = tmp_path / "COMPATIBILITY.md"
    main(["--results", str(results), "--output", str(doc)])  # as `make compat-doc` does
    code = main(
        ["--results", str(results), "--output", str(tmp_path / "b.md"), "--check", str(doc)]
    )
    assert code == 0


def test_a_failed_cell_fails_the_run_without_a_check(tmp_path: Path) -> None:
    results = tmp_path / "compat-results.json"
    results.write_text(json.dumps({"cells": with_status("ollama-js (npm)", "chat", "fail")}))
    assert main(["--results", str(results), "--output", str(tmp_path / "m.md")]) == 1


def test_compat_doc_refuses_a_partial_run_and_leaves_the_tracked_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One file's run once truncated docs/COMPATIBILITY.md to its own cells (issue #19's
    review, M4): `make compat-doc` (--require-complete) now writes nothing from such results."""
    doc = tmp_path / "COMPATIBILITY.md"
    doc.write_text(tracked())
    before = doc.read_bytes()
    results = tmp_path / "compat-results.json"
    for partial in ({"cells": CELLS[:1]}, {"complete": False, "cells": CELLS[:1]}):
        results.write_text(json.dumps(partial))
        code = main(["--results", str(results), "--output", str(doc), "--require-complete"])
        assert code == 2
        assert doc.read_bytes() == before
        assert "holds only part of the matrix" in capsys.readouterr().out
    results.write_text(json.dumps({"complete": True, "cells": CELLS}))
    assert main(["--results", str(results), "--output", str(doc), "--require-complete"]) == 0
    assert parse(doc.read_text())[0] == parse(tracked())[0]


def test_a_partial_run_merges_into_the_last_whole_one() -> None:
    whole = merge_results(None, CELLS, whole=True)
    assert whole == {"complete": True, "cells": CELLS}
    # one client's file run again: its cell changes, the others stay, still complete
    rerun: list[dict[str, object]] = [
        {"client": "ollama-js (npm)", "feature": "chat", "status": "fail"}
    ]
    merged = merge_results(whole, rerun, whole=False)
    assert merged["complete"] is True
    assert len(merged["cells"]) == len(CELLS)
    cells = {(c["client"], c["feature"]): c["status"] for c in merged["cells"]}
    assert cells[("ollama-js (npm)", "chat")] == "fail"
    assert cells[("ollama-python 0.6 (PyPI)", "tools")] == "pass"
    # a partial run over nothing is not complete; a whole run replaces everything
    assert merge_results(None, rerun, whole=False) == {"complete": False, "cells": rerun}
    assert merge_results(merged, rerun, whole=True) == {"complete": True, "cells": rerun}


@pytest.mark.parametrize(
    ("args", "narrowed", "deselected", "stopped", "whole"),
    [
        ([], False, 0, False, True),  # pytest, no arguments: the testpaths
        (["tests"], False, 0, False, True),
        (["tests/clients"], False, 0, False, False),
        (["tests", "tests/unit"], False, 0, False, False),
        (["tests"], True, 0, False, False),  # -k / -m
        (["tests"], False, 3, False, False),  # --lf, --deselect
        (["tests"], False, 0, True, False),  # -x after a failure
    ],
)
def test_whole_run_is_the_testpaths_unnarrowed(
    tmp_path: Path, args: list[str], narrowed: bool, deselected: int, stopped: bool, whole: bool
) -> None:
    paths = [tmp_path / a for a in args]
    assert whole_run(paths, [tmp_path / "tests"], narrowed, deselected, stopped) is whole


def test_the_suites_own_results_say_whether_they_are_whole(tmp_path: Path) -> None:
    """tests/conftest.py, in a pytest run of one compat test: a partial run, merged."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"complete": True, "cells": CELLS}))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ONE_COMPAT_TEST],
        cwd=ROOT,
        # without coverage's subprocess measurement, which would count this run as the suite's
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")},
            "COMPAT_RESULTS": str(results),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    written = json.loads(results.read_text())
    assert written["complete"] is True  # the whole run before it stays whole
    assert len(written["cells"]) > len(CELLS)  # its cell added, the earlier ones kept
    assert {(c["client"], c["feature"]) for c in CELLS} <= {
        (c["client"], c["feature"]) for c in written["cells"]
    }
