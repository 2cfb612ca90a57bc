"""A Responses request's tools -> chat-completion tools, and the names the backend calls them by
(``POST /v1/responses``, issue #17; translate/responses.py reads the rest of the request).

OpenAI's Responses tools (openai-python ``types/responses/tool_param.py``) are flatter than chat's
and richer: ``function`` tools become chat functions; a ``namespace`` (Codex sends
``multi_agent_v1``) groups functions the model calls by ``name`` with ``namespace`` beside it,
here flattened to ``<namespace>__<name>`` -- OpenAI's chat function names allow only
``[a-zA-Z0-9_-]``, at most 64 characters, so not Ollama's ``namespace.name``
(ollama/ollama openai/responses.go convertTools) -- and mapped back in the answer
(:class:`ToolNames`); a ``custom`` (free-form) tool becomes a function of one string ``input``.
Hosted tools (``web_search``, ``file_search``, ``computer_use_preview``...) run on OpenAI's side,
which a chat backend cannot do: dropped with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ollama_openai_bridge.errors import BadRequest, echo

SEPARATOR = "__"  # namespace + SEPARATOR + name: a name OpenAI's pattern accepts
MAX_NAME = 64  # OpenAI: "a maximum length of 64" for a function name
Warn = Callable[[str, str], None]  # (key, message): logged once per key


class Named(NamedTuple):
    """What a flat tool name the backend calls stands for: the client's ``name``, its
    ``namespace`` (None at the top level) and whether it is a ``custom`` (free-form) tool, whose
    call carries one string ``input`` rather than JSON arguments."""

    name: str
    namespace: str | None = None
    custom: bool = False


@dataclass(slots=True)
class ToolNames:
    """The flat names of one request's tools: ``by_flat`` (flat -> :class:`Named`, for the
    answer) and the way back, ``(name, namespace)`` -> flat (for the history's calls)."""

    by_flat: dict[str, Named] = field(default_factory=dict)
    _flat: dict[tuple[str, str | None], str] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)  # flat name -> its next suffix

    def add(self, name: str, namespace: str | None, custom: bool) -> str:
        """The flat name of a declared tool: unique among this request's, at most
        :data:`MAX_NAME` characters."""
        base = flat = flatten(name, namespace)
        # f, f_2, f_3: each suffix on the name itself, counted on from the last one given (a
        # thousand tools of one name must not try a thousand suffixes each)
        n = self._next.get(base, 2)
        while flat in self.by_flat:
            suffix = f"_{n}"
            flat = base[: MAX_NAME - len(suffix)] + suffix
            n += 1
        self._next[base] = n
        self.by_flat[flat] = Named(name, namespace, custom)
        self._flat.setdefault((name, namespace), flat)
        return flat

    def find(self, name: Any, namespace: Any) -> str | None:
        """The flat name of the declared tool ``name`` in ``namespace``; a flat name as itself;
        None for a tool not declared."""
        if not isinstance(name, str):
            return None
        ns = namespace if isinstance(namespace, str) else None
        return self._flat.get((name, ns)) or (name if name in self.by_flat else None)


def flatten(name: str, namespace: str | None) -> str:
    """``<namespace>__<name>`` (``name`` alone at the top level, or if it already carries the
    prefix), cut to :data:`MAX_NAME` characters."""
    if namespace and not name.startswith(namespace + SEPARATOR):
        name = f"{namespace}{SEPARATOR}{name}"
    return name[:MAX_NAME]


def read_tools(
    tools: list[Any], names: ToolNames, warn: Warn, adapted: list[str]
) -> list[dict[str, Any]]:
    """The chat tools for Responses ``tools``, their names registered in ``names``. Raises
    BadRequest for a tool without a name, or a namespace holding anything but functions."""
    chat: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        kind = tool.get("type")
        if kind in ("function", "custom"):
            chat.append(_function(tool, where, None, names, adapted))
        elif kind == "namespace":
            ns = tool.get("name")
            if not isinstance(ns, str) or not ns:
                raise BadRequest(f"{where}.name is required for a namespace", param=where)
            for j, member in enumerate(tool.get("tools") or []):
                inner = f"{where}.tools[{j}]"
                if not isinstance(member, dict) or member.get("type") not in ("function", "custom"):
                    raise BadRequest(
                        f"{inner}: a namespace holds function and custom tools only", param=inner
                    )
                chat.append(_function(member, inner, ns, names, adapted))
        else:
            label = echo(str(kind))
            warn(
                f"responses hosted tool {label}",
                f"hosted tool {label!r} dropped: the backend cannot run it",
            )
    return chat


def _function(
    tool: Mapping[str, Any],
    where: str,
    namespace: str | None,
    names: ToolNames,
    adapted: list[str],
) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name is required for a {tool.get('type')} tool", param=where)
    custom = tool.get("type") == "custom"
    fn: dict[str, Any] = {"name": names.add(name, namespace, custom)}
    description = tool.get("description")
    if custom:
        # A free-form tool: the model writes raw text (a patch, a script), here as the one string
        # argument of a function; its format (a grammar) can only be described.
        fmt = tool.get("format")
        hint = f" Input format: {orjson.dumps(fmt).decode()}" if fmt else ""
        fn["description"] = (description or "") + hint
        fn["parameters"] = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "the tool's input"}},
            "required": ["input"],
        }
        adapted.append(f"custom tool {name!r} sent as a function of one string 'input'")
    else:
        if description:
            fn["description"] = description
        parameters = tool.get("parameters")
        fn["parameters"] = (
            parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        )
        if tool.get("strict") is True:
            fn["strict"] = True
    return {"type": "function", "function": fn}


def tool_choice(
    choice: Any, tools: list[dict[str, Any]], names: ToolNames, warn: Warn, adapted: list[str]
) -> Any:
    """Responses' ``tool_choice`` -> chat's, or None (the backend's default, ``auto``): a
    forced function by its flat name; ``allowed_tools`` as ``tools`` cut down (in place) to
    them, and its mode. Raises BadRequest for an unknown mode or an undeclared tool."""
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        raise BadRequest(
            f"invalid tool_choice {echo(choice)!r} (auto, none or required)", param="tool_choice"
        )
    if choice is None or not tools or isinstance(choice, str):
        return choice if tools else None
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        flat = names.find(name, choice.get("namespace"))
        if flat is None:
            raise BadRequest(
                f"tool_choice names {echo(str(name))!r}, which is not among the tools",
                param="tool_choice",
            )
        return {"type": "function", "function": {"name": flat}}
    if kind == "allowed_tools":
        allowed = {
            names.find(t.get("name"), t.get("namespace"))
            for t in choice.get("tools") or ()
            if isinstance(t, dict)
        }
        tools[:] = [t for t in tools if t["function"]["name"] in allowed]
        adapted.append("tool_choice allowed_tools sent as the tools list cut down to them")
        mode = choice.get("mode")
        return mode if tools and mode in ("auto", "required") else None
    label = echo(str(kind))
    warn(
        f"responses tool_choice {label}",
        f"tool_choice {label!r} names a hosted tool the backend cannot run; ignored",
    )
    return None
