"""Run by an old ``ollama`` SDK (0.3.3, plain-dict API) on Python 3.8 against the proxy.

Keep this file Python 3.8 syntax. Usage: python3.8 old_sdk.py <proxy URL>; prints one JSON object.
"""

import json
import sys

import ollama

client = ollama.Client(host=sys.argv[1])
results = {}  # type: ignore[var-annotated]


def check(name, fn):
    try:
        results[name] = {"ok": True, "value": fn()}
    except Exception as exc:  # every failure is reported as data
        results[name] = {"ok": False, "error": repr(exc)}


USER = [{"role": "user", "content": "say hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def tools():
    messages = [{"role": "user", "content": "weather in Paris"}]
    first = client.chat(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    calls = first["message"]["tool_calls"]
    messages.append(first["message"])
    messages.append({"role": "tool", "content": '{"temp": 17}'})
    second = client.chat(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    return {
        "calls": [[c["function"]["name"], c["function"]["arguments"]] for c in calls],
        "answer": second["message"]["content"],
    }


check("version", lambda: list(sys.version_info[:2]))
check("list", lambda: [m["name"] for m in client.list()["models"]])
check("show", lambda: client.show("gpt-4o-mini")["model_info"]["gpt.context_length"])
check("chat", lambda: client.chat(model="gpt-4o-mini", messages=USER)["message"]["content"])
check(
    "chat stream",
    lambda: "".join(
        p["message"]["content"]
        for p in client.chat(model="gpt-4o-mini", messages=USER, stream=True)
    ),
)
check("generate", lambda: client.generate(model="gpt-4o-mini", prompt="say hello")["response"])
check(
    "generate stream",
    lambda: "".join(
        p["response"] for p in client.generate(model="gpt-4o-mini", prompt="say hello", stream=True)
    ),
)
check("tools", tools)
check("embed", lambda: client.embed(model="text-embedding-3-small", input=["alpha"])["embeddings"])
check(
    "embeddings",
    lambda: client.embeddings(model="text-embedding-3-small", prompt="alpha")["embedding"],
)
check("ps", lambda: [m["name"] for m in client.ps()["models"]])
print(json.dumps(results))
