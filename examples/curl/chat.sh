#!/usr/bin/env bash
# The proxy with nothing but curl. OLLAMA_HOST=http://localhost:11434 ./chat.sh
set -euo pipefail
HOST="${OLLAMA_HOST:-http://localhost:11434}"
MODEL="${CHAT_MODEL:-gpt-4o-mini}"

echo "# version"
curl -sS "$HOST/api/version"; echo

echo "# models"
curl -sS "$HOST/api/tags"; echo

echo "# chat, one answer"
curl -sS "$HOST/api/chat" -d '{
  "model": "'"$MODEL"'",
  "messages": [{"role": "user", "content": "Say hello."}],
  "stream": false
}'; echo

echo "# chat, streamed: one JSON object per line, the last with \"done\": true"
curl -sS --no-buffer "$HOST/api/chat" -d '{
  "model": "'"$MODEL"'",
  "messages": [{"role": "user", "content": "Say hello."}]
}'

echo "# generate"
curl -sS "$HOST/api/generate" -d '{"model": "'"$MODEL"'", "prompt": "Say hello.", "stream": false}'; echo

echo "# embeddings"
curl -sS "$HOST/api/embed" -d '{"model": "'"${EMBED_MODEL:-text-embedding-3-small}"'", "input": ["first text", "second text"]}'; echo

echo "# an error: Ollama's shape and status"
curl -sS -w ' (HTTP %{http_code})\n' "$HOST/api/chat" -d '{
  "model": "no-such-model",
  "messages": [{"role": "user", "content": "Say hello."}],
  "stream": false
}'
