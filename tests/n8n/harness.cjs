// Runs n8n's own Ollama node code headless (@n8n/n8n-nodes-langchain, unpacked by setup.sh):
// the credential test and model dropdown requests as its declarative definitions describe them,
// and the Ollama Chat Model / Embeddings Ollama nodes' supplyData() with a minimal execution
// context. Usage: node harness.cjs <proxy base URL>. Prints one JSON object: {check: {ok, ...}}.
// With a workflow file as second argument (examples/n8n), it runs that workflow's Basic LLM Chain
// with the Ollama Chat Model connected to it instead, with the parameters the file gives them.
"use strict";
const fs = require("fs");
const path = require("path");
const { HumanMessage, ToolMessage } = require("@langchain/core/messages");
const { tool } = require("@langchain/core/tools");
const { passthroughEgressFilter } = require("@n8n/backend-network/egress");

const baseUrl = process.argv[2];
const dist = path.join(__dirname, "vendor", "n8n-nodes-langchain", "dist");
const { OllamaApi } = require(path.join(dist, "credentials/OllamaApi.credentials.js"));
const { ollamaModel } = require(path.join(dist, "nodes/llms/LMOllama/description.js"));
const { LmChatOllama } = require(path.join(dist, "nodes/llms/LMChatOllama/LmChatOllama.node.js"));
const { EmbeddingsOllama } = require(path.join(dist, "nodes/embeddings/EmbeddingsOllama/EmbeddingsOllama.node.js"));

const credentials = { baseUrl, apiKey: "" }; // n8n's default: no key

// The few pieces of IExecuteFunctions / ISupplyDataFunctions these nodes touch.
function context(type, params, typeVersion = 1) {
  const node = { id: "1", name: type, type, typeVersion, parameters: params, position: [0, 0] };
  const noop = () => {};
  return {
    getCredentials: async () => credentials,
    getNode: () => node,
    getNodeParameter: (name, _item, fallback) => (name in params ? params[name] : fallback),
    helpers: { getSecureEgressFilter: () => passthroughEgressFilter },
    logger: { debug: noop, info: noop, warn: noop, error: noop },
    addInputData: () => ({ index: 0 }),
    addOutputData: noop,
    getExecutionCancelSignal: () => undefined,
    getWorkflow: () => ({ id: "workflow" }),
    getExecutionId: () => "execution",
    getNextRunIndex: () => 0,
    getMode: () => "manual",
    sendMessageToUI: noop,
  };
}

// n8n resolves "={{ ... }}" expressions; these two are all the credential uses.
function resolve(expr) {
  return String(expr)
    .replace(/^=/, "")
    .replace("{{ $credentials.baseUrl }}", credentials.baseUrl)
    .replace("{{$credentials.apiKey}}", credentials.apiKey);
}

const results = {};
async function check(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (err) {
    results[name] = { ok: false, error: String(err && err.stack ? err.stack : err) };
  }
}

// The workflow's Basic LLM Chain run by n8n's own executeChain(), fed by its connected chat model.
// (processItem() around it only reads the prompt parameter, and needs n8n-core for that.)
async function runWorkflow(file) {
  const wf = JSON.parse(fs.readFileSync(file, "utf8"));
  const node = (type) => wf.nodes.find((n) => n.type === `@n8n/n8n-nodes-langchain.${type}`);
  const chat = node("lmChatOllama");
  const chain = node("chainLlm");
  await check("workflow", async () => {
    const link = wf.connections[chat.name]?.ai_languageModel?.[0]?.[0];
    if (!link || link.node !== chain.name) throw new Error("the chat model does not feed the chain");
    if (!chat.credentials?.ollamaApi) throw new Error("the chat model has no Ollama credential");
    const { response: model } = await new LmChatOllama().supplyData.call(context("lmChatOllama", chat.parameters), 0);
    const { executeChain } = require(path.join(dist, "nodes/chains/ChainLLM/methods/chainExecutor.js"));
    if (chain.parameters.promptType !== "define") throw new Error("the example defines its prompt");
    const output = await executeChain({
      context: context("chainLlm", chain.parameters, chain.typeVersion),
      itemIndex: 0,
      query: chain.parameters.text,
      llm: model,
      outputParser: undefined,
      messages: chain.parameters.messages?.messageValues ?? [],
      fallbackLlm: null,
    });
    return { prompt: chain.parameters.text, output };
  });
  console.log(JSON.stringify(results));
}

(async () => {
  if (process.argv[3]) return runWorkflow(process.argv[3]);
  const cred = new OllamaApi();
  const authHeaders = Object.fromEntries(
    Object.entries(cred.authenticate.properties.headers).map(([k, v]) => [k, resolve(v)]),
  );
  await check("credential test", async () => {
    const req = cred.test.request;
    const res = await fetch(resolve(req.baseURL) + req.url, { method: req.method, headers: authHeaders });
    const body = await res.json();
    return { status: res.status, authorization: authHeaders.Authorization, models: body.models.length };
  });
  await check("model dropdown", async () => {
    const req = ollamaModel.typeOptions.loadOptions.routing.request;
    const res = await fetch(credentials.baseUrl.replace(/\/$/, "") + req.url, { method: req.method, headers: authHeaders });
    const items = (await res.json()).models; // postReceive: rootProperty "models"
    return items.map((m) => ({ name: m.name, value: m.name })).sort((a, b) => a.name.localeCompare(b.name));
  });

  const chatParams = { model: "gpt-4o-mini", options: { temperature: 0.2, numCtx: 2048, topK: 40, keepAlive: "5m", numPredict: -1 } };
  const { response: model } = await new LmChatOllama().supplyData.call(context("lmChatOllama", chatParams), 0);
  await check("chat invoke", async () => {
    const r = await model.invoke("say hello");
    return { content: r.content, usage: r.usage_metadata };
  });
  await check("chat stream", async () => {
    let text = "";
    for await (const chunk of await model.stream("say hello")) text += chunk.content;
    return text;
  });
  await check("chat tools", async () => {
    const getWeather = tool(async ({ city }) => JSON.stringify({ temp: 17, city }), {
      name: "get_weather",
      description: "Get the current weather for a city",
      schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    });
    const llm = model.bindTools([getWeather]);
    const messages = [new HumanMessage("weather in Paris")];
    const ai = await llm.invoke(messages);
    messages.push(ai);
    for (const call of ai.tool_calls) messages.push(new ToolMessage({ content: await getWeather.invoke(call.args), tool_call_id: call.id }));
    const final = await llm.invoke(messages);
    return { calls: ai.tool_calls.map((c) => [c.name, c.args]), answer: final.content };
  });
  await check("chat thinking", async () => {
    const params = { model: "qwen3:8b", options: { think: true } };
    const { response } = await new LmChatOllama().supplyData.call(context("lmChatOllama", params), 0);
    const r = await response.invoke("think about 17*3");
    return { content: r.content, reasoning: r.additional_kwargs?.reasoning_content ?? null };
  });

  const { response: embeddings } = await new EmbeddingsOllama().supplyData.call(
    context("embeddingsOllama", { model: "text-embedding-3-small" }), 0,
  );
  await check("embeddings", async () => ({
    documents: await embeddings.embedDocuments(["alpha", "beta"]),
    query: await embeddings.embedQuery("alpha"),
  }));
  console.log(JSON.stringify(results));
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
