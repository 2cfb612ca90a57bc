"""The project's first name, kept for one release: ``ollama-openai-proxy`` is now
``ollama-openai-bridge``.

The distribution had to be renamed because ``ollama-openai-proxy`` is taken on PyPI by an
unrelated project (docs/RELEASING.md). Everything written against the old name keeps working
for this release and says how to move:

- the ``ollama-openai-proxy`` command and ``python -m ollama_openai_proxy`` print one line to
  stderr and run ``ollama-openai-bridge`` (``ollama_openai_bridge.cli.deprecated_main``);
- ``ollama_openai_proxy.<module>`` is the same module object as ``ollama_openai_bridge.<module>``
  (an import alias), so ``python -m ollama_openai_proxy.healthcheck`` in an existing probe and
  ``uvicorn ollama_openai_proxy.app:create_app --factory`` still run. Importing it raises a
  :class:`DeprecationWarning`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import CodeType, ModuleType

from ollama_openai_bridge import __version__

__all__ = ["__version__", "main"]

OLD, NEW = "ollama_openai_proxy", "ollama_openai_bridge"
NOTICE = (
    "the ollama_openai_proxy module is now ollama_openai_bridge; the old name will be removed "
    "in a later release"
)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``ollama_openai_proxy.X`` is ``ollama_openai_bridge.X``: one module object under both
    names (a second copy would hold a second metrics registry, a second settings cache, ...)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(OLD + "."):
            return None
        if importlib.util.find_spec(NEW + fullname[len(OLD) :]) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(NEW + spec.name[len(OLD) :])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing: the module was executed once, under its new name."""

    def get_code(self, fullname: str) -> CodeType | None:
        """What ``python -m ollama_openai_proxy.X`` runs (runpy asks the loader for code)."""
        name = NEW + fullname[len(OLD) :]
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        get_code = getattr(loader, "get_code", None)
        return get_code(name) if get_code is not None else None


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.append(_Alias())

warnings.warn(NOTICE, DeprecationWarning, stacklevel=2)


def main(argv: list[str] | None = None) -> int:
    """``python -m ollama_openai_proxy``: :func:`ollama_openai_bridge.cli.deprecated_main`."""
    # Here, not at the top: importing the old name for its modules needs no uvicorn.
    from ollama_openai_bridge.cli import deprecated_main  # noqa: PLC0415

    return deprecated_main(argv)
