"""LangChain's ChatOllama and OllamaEmbeddings through the proxy.

pip install langchain-ollama
OLLAMA_HOST=http://localhost:11434 python langchain_chat.py
"""

from __future__ import annotations

import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings

BASE_URL = os.environ.get("OLLAMA_HOST", "http://localhost:11434")
llm = ChatOllama(
    base_url=BASE_URL, model=os.environ.get("CHAT_MODEL", "gpt-4o-mini"), temperature=0
)

print("invoke:", llm.invoke("Say hello.").content)
print("stream:", "".join(chunk.content for chunk in llm.stream("Say hello.")))


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"17 degrees and sunny in {city}"


with_tools = llm.bind_tools([get_weather])
messages = [HumanMessage("What is the weather in Paris?")]
ai = with_tools.invoke(messages)
messages.append(ai)
for call in ai.tool_calls:
    messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
print("tool calls:", [(c["name"], c["args"]) for c in ai.tool_calls])
print("tools:", with_tools.invoke(messages).content)

embeddings = OllamaEmbeddings(
    base_url=BASE_URL, model=os.environ.get("EMBED_MODEL", "text-embedding-3-small")
)
print(f"embed: {len(embeddings.embed_documents(['first text', 'second text']))} vectors")
