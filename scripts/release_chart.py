"""Make a chart under deploy/helm/ the one a release publishes: its default image is the image
that release pushed, and its version and appVersion are the release's.

The tracked chart names ``ghcr.io/OWNER/...`` (the repository's owner is only known where it is
published), so a chart packaged as it is would pull an image that does not exist unless every
user passed ``--set image.repository`` (issue #19's review, M6). The release workflow runs, on
its own checkout, before ``helm package``::

    python3 scripts/release_chart.py deploy/helm/ollama-openai-bridge \\
        ghcr.io/acme/ollama-openai-bridge 1.2.3 --source https://github.com/acme/ollama-openai-bridge

The standard library alone (the Helm job installs no package): the two files are edited as
text, each change checked to happen exactly once, so that the comments of values.yaml stay.
Exits with a message (status 1) when a file is not shaped as expected.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# "  repository: ..." right under "image:" (the chart's own image, not Redis's).
IMAGE_REPOSITORY = re.compile(r"^(image:\n(?:  #.*\n)*  repository: )\S+$", re.MULTILINE)
VERSION = re.compile(r"^version: .*$", re.MULTILINE)
APP_VERSION = re.compile(r"^appVersion: .*$", re.MULTILINE)
SOURCE = re.compile(r"^(sources:\n  - )\S+$", re.MULTILINE)
IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


class ChartShapeError(Exception):
    """A chart file does not hold the line this script rewrites, or holds it more than once."""


def _once(pattern: re.Pattern[str], replacement: str, text: str, where: str) -> str:
    new, count = pattern.subn(replacement, text)
    if count != 1:
        raise ChartShapeError(f"{where}: expected one line matching {pattern.pattern!r}")
    return new


def release_values(text: str, repository: str) -> str:
    """values.yaml's text with ``image.repository`` set to ``repository`` (a lower-case image
    name without tag, e.g. ``ghcr.io/acme/ollama-openai-bridge``); raises ValueError for another
    shape of name and ChartShapeError when the line is not found once."""
    if not IMAGE.match(repository):
        raise ValueError(f"not an image name without tag, in lower case: {repository!r}")
    return _once(IMAGE_REPOSITORY, rf"\g<1>{repository}", text, "values.yaml image.repository")


def release_chart_yaml(text: str, version: str, source: str | None) -> str:
    """Chart.yaml's text with ``version`` and ``appVersion`` set to ``version`` (SemVer 2, as
    Helm requires) and the first of ``sources`` to ``source`` when given."""
    if not SEMVER.match(version):
        raise ValueError(f"not a SemVer version: {version!r}")
    text = _once(VERSION, f"version: {version}", text, "Chart.yaml version")
    text = _once(APP_VERSION, f'appVersion: "{version}"', text, "Chart.yaml appVersion")
    if source is not None:
        text = _once(SOURCE, rf"\g<1>{source}", text, "Chart.yaml sources")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Set a chart to the release's image and version.")
    parser.add_argument("chart", type=Path, help="the chart's folder")
    parser.add_argument("repository", help="the released image, without tag")
    parser.add_argument("version", help="the release's version, X.Y.Z")
    parser.add_argument("--source", help="the repository's URL, for Chart.yaml's sources")
    args = parser.parse_args(argv)
    values, chart = args.chart / "values.yaml", args.chart / "Chart.yaml"
    try:
        new_values = release_values(values.read_text(), args.repository)
        new_chart = release_chart_yaml(chart.read_text(), args.version, args.source)
    except (ValueError, ChartShapeError) as exc:
        sys.exit(f"release_chart: {exc}")
    values.write_text(new_values)
    chart.write_text(new_chart)
    print(f"{args.chart}: image {args.repository}:{args.version}, chart {args.version}")


if __name__ == "__main__":
    main()
