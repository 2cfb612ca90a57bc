// Chat, stream, call a tool and embed through the proxy with the official Ollama JS SDK.
//   npm install ollama
//   OLLAMA_HOST=http://localhost:11434 node ollama_chat.mjs
import { Ollama } from "ollama";

const ollama = new Ollama({ host: process.env.OLLAMA_HOST ?? "http://localhost:11434" });
const model = process.env.CHAT_MODEL ?? "gpt-4o-mini";
const embedModel = process.env.EMBED_MODEL ?? "text-embedding-3-small";

const reply = await ollama.chat({ model, messages: [{ role: "user", content: "Say hello." }] });
console.log("chat:", reply.message.content);

let text = "";
for await (const part of await ollama.chat({ model, messages: [{ role: "user", content: "Say hello." }], stream: true })) {
  text += part.message.content;
}
console.log("stream:", text);

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
const getWeather = ({ city }) => `17 degrees and sunny in ${city}`;
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
const first = await ollama.chat({ model, messages, tools });
messages.push(first.message);
for (const call of first.message.tool_calls ?? []) {
  // Arguments arrive as an object, as Ollama sends them.
  messages.push({ role: "tool", tool_name: call.function.name, content: getWeather(call.function.arguments) });
}
const final = await ollama.chat({ model, messages, tools });
console.log("tool calls:", JSON.stringify((first.message.tool_calls ?? []).map((c) => [c.function.name, c.function.arguments])));
console.log("tools:", final.message.content);

const { embeddings } = await ollama.embed({ model: embedModel, input: ["first text", "second text"] });
console.log(`embed: ${embeddings.length} vectors of ${embeddings[0].length} numbers`);
