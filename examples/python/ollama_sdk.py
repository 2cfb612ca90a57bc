"""Chat, stream, call a tool and embed through the proxy with the official Ollama SDK.

    pip install ollama
    OLLAMA_HOST=http://localhost:11434 python ollama_sdk.py

The code is what it would be against Ollama itself: only the model names are the backend's.
"""

from __future__ import annotations

import os

import ollama

client = ollama.Client(host=os.environ.get("OLLAMA_HOST", "http://localhost:11434"))
MODEL = os.environ.get("CHAT_MODEL", "gpt-4o-mini")
EMBED_MODEL = os.environ.get("EMBED_MODEL", "text-embedding-3-small")

# One answer.
reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hello."}])
print("chat:", reply.message.content)

# The same, streamed: each part carries the next piece of text.
print("stream: ", end="")
for part in client.chat(
    model=MODEL, messages=[{"role": "user", "content": "Say hello."}], stream=True
):
    print(part.message.content, end="", flush=True)
print()


# A tool: the SDK builds its schema from the signature and docstring.
def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name.
    """
    return f"17 degrees and sunny in {city}"


messages: list = [{"role": "user", "content": "What is the weather in Paris?"}]
response = client.chat(model=MODEL, messages=messages, tools=[get_weather])
messages.append(response.message)
for call in response.message.tool_calls or []:
    # Arguments arrive as a dict, as Ollama sends them.
    messages.append(
        {
            "role": "tool",
            "tool_name": call.function.name,
            "content": get_weather(**call.function.arguments),
        }
    )
final = client.chat(model=MODEL, messages=messages, tools=[get_weather])
print(
    "tool calls:",
    [(c.function.name, c.function.arguments) for c in response.message.tool_calls or []],
)
print("tools:", final.message.content)

# Embeddings for several inputs in one call.
vectors = client.embed(model=EMBED_MODEL, input=["first text", "second text"])
print(f"embed: {len(vectors.embeddings)} vectors of {len(vectors.embeddings[0])} numbers")
