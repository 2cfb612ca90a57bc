#!/usr/bin/env bash
# Installs what the n8n checks need, once: the packages n8n's Ollama nodes require (npm ci, no
# install scripts), and the published @n8n/n8n-nodes-langchain tarball unpacked into vendor/
# (a full n8n install needs Node >= 24 and native builds). npm's cache makes reruns cheap.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=2.41.1
stamp=node_modules/.stamp-$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f "$stamp" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
if [ ! -f vendor/n8n-nodes-langchain/package.json ] || ! grep -q "\"version\": \"$VERSION\"" vendor/n8n-nodes-langchain/package.json; then
  rm -rf vendor && mkdir -p vendor
  (cd vendor && npm pack "@n8n/n8n-nodes-langchain@$VERSION" --loglevel=error >/dev/null \
    && mkdir n8n-nodes-langchain && tar xzf n8n-n8n-nodes-langchain-$VERSION.tgz -C n8n-nodes-langchain --strip-components=1 \
    && rm n8n-n8n-nodes-langchain-$VERSION.tgz)
fi
