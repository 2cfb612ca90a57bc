// Drives the Vercel AI SDK (`ai`) with its Ollama provider, ollama-ai-provider-v2, against the
// proxy. Usage: node provider.mjs <proxy base URL>. Prints one JSON object: {check: {ok, value|error}}.
// The provider validates answers with zod: /api/embed must carry total_duration, load_duration and
// prompt_eval_count, an unstreamed /api/generate must carry context (dist/index.mjs schemas).
import { createServer } from "node:http";
import { embed, embedMany, generateText } from "ai";
import { createOllama } from "ollama-ai-provider-v2";

// The control: a server answering as the proxy did before issue #17 (no context, no
// load_duration), which the provider must refuse -- so a passing check proves the fields matter.
async function oldProxy() {
  const server = createServer((req, res) => {
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    const at = "2026-01-01T00:00:00Z";
    if (req.url === "/api/embed") {
      res.end(JSON.stringify({ model: "e", embeddings: [[1]], total_duration: 5, prompt_eval_count: 1 }));
    } else {
      res.end(JSON.stringify({ model: "m", created_at: at, response: "Hi", done: true, done_reason: "stop", total_duration: 5 }));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

let control = null;
if (process.argv[2] === "--control") control = await oldProxy();
const host = control ? `http://127.0.0.1:${control.address().port}` : process.argv[2];
const results = {};
async function check(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (err) {
    results[name] = { ok: false, error: String(err && err.stack ? err.stack : err) };
  }
}

const ollama = createOllama({ baseURL: `${host}/api` });

await check("embed", async () => {
  const r = await embed({ model: ollama.embedding("text-embedding-3-small"), value: "alpha" });
  return { dimensions: r.embedding.length, tokens: r.usage?.tokens ?? null };
});
await check("embedMany", async () => {
  const r = await embedMany({ model: ollama.embedding("text-embedding-3-small"), values: ["alpha", "beta"] });
  return r.embeddings.length;
});
await check("completion", async () => {
  const r = await generateText({ model: ollama.completion("gpt-4o-mini"), prompt: "say hello" });
  return r.text;
});
if (!control) {
  await check("chat", async () => {
    const r = await generateText({ model: ollama("gpt-4o-mini"), prompt: "say hello" });
    return r.text;
  });
}
control?.close();

console.log(JSON.stringify(results));
