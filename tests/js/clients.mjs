// Drives the official Ollama JS SDK and @langchain/ollama against the proxy.
// Usage: node clients.mjs <proxy base URL>. Prints one JSON object: {check: {ok, value|error}}.
// The fake upstream answers by rules the Python test installs (see test_js_clients.py).
import { Ollama } from "ollama";
import { ChatOllama, OllamaEmbeddings } from "@langchain/ollama";
import { HumanMessage, ToolMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { z } from "zod";

const host = process.argv[2];
const results = {};
async function check(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (err) {
    results[name] = { ok: false, error: String(err && err.stack ? err.stack : err) };
  }
}

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

const ollama = new Ollama({ host });

await check("ollama-js list", async () => (await ollama.list()).models.map((m) => [m.name, m.model]));
await check("ollama-js version", async () => (await ollama.version()).version);
await check("ollama-js show", async () => {
  const info = await ollama.show({ model: "qwen3:8b" });
  return { info: info.model_info, capabilities: info.capabilities };
});
await check("ollama-js chat", async () => (await ollama.chat({ model: "gpt-4o-mini", messages: [{ role: "user", content: "say hello" }] })).message.content);
await check("ollama-js chat stream", async () => {
  const parts = [];
  for await (const part of await ollama.chat({ model: "gpt-4o-mini", messages: [{ role: "user", content: "say hello" }], stream: true })) {
    parts.push({ content: part.message.content, done: part.done, eval_count: part.eval_count ?? null });
  }
  return parts;
});
await check("ollama-js generate stream", async () => {
  let text = "";
  for await (const part of await ollama.generate({ model: "gpt-4o-mini", prompt: "say hello", stream: true })) text += part.response;
  return text;
});
await check("ollama-js tools", async () => {
  const messages = [{ role: "user", content: "weather in Paris" }];
  const first = await ollama.chat({ model: "gpt-4o-mini", messages, tools: [weatherTool] });
  messages.push(first.message);
  for (const call of first.message.tool_calls ?? []) {
    messages.push({ role: "tool", content: JSON.stringify({ temp: 17, city: call.function.arguments.city }), tool_name: call.function.name });
  }
  const second = await ollama.chat({ model: "gpt-4o-mini", messages, tools: [weatherTool] });
  return { calls: first.message.tool_calls.map((c) => [c.function.name, c.function.arguments]), answer: second.message.content };
});
await check("ollama-js thinking", async () => {
  const r = await ollama.chat({ model: "qwen3:8b", messages: [{ role: "user", content: "think about 17*3" }], think: true });
  return { thinking: r.message.thinking, content: r.message.content };
});
await check("ollama-js embed", async () => (await ollama.embed({ model: "text-embedding-3-small", input: ["alpha", "beta"] })).embeddings);
await check("ollama-js ps", async () => (await ollama.ps()).models.map((m) => m.name));

const chat = new ChatOllama({ model: "gpt-4o-mini", baseUrl: host });
await check("langchainjs invoke", async () => {
  const r = await chat.invoke("say hello");
  return { content: r.content, usage: r.usage_metadata };
});
await check("langchainjs stream", async () => {
  let text = "";
  for await (const chunk of await chat.stream("say hello")) text += chunk.content;
  return text;
});
await check("langchainjs tools", async () => {
  const getWeather = tool(async ({ city }) => JSON.stringify({ temp: 17, city }), {
    name: "get_weather",
    description: "Get the current weather for a city",
    schema: z.object({ city: z.string() }),
  });
  const llm = chat.bindTools([getWeather]);
  const messages = [new HumanMessage("weather in Paris")];
  const ai = await llm.invoke(messages);
  messages.push(ai);
  for (const call of ai.tool_calls) messages.push(new ToolMessage({ content: await getWeather.invoke(call.args), tool_call_id: call.id }));
  const final = await llm.invoke(messages);
  return { calls: ai.tool_calls.map((c) => [c.name, c.args]), answer: final.content };
});
await check("langchainjs thinking", async () => {
  const r = await new ChatOllama({ model: "qwen3:8b", baseUrl: host, think: true }).invoke("think about 17*3");
  return { content: r.content, reasoning: r.additional_kwargs?.reasoning_content ?? null };
});
await check("langchainjs embeddings", async () => new OllamaEmbeddings({ model: "text-embedding-3-small", baseUrl: host }).embedDocuments(["alpha", "beta"]));

console.log(JSON.stringify(results));
