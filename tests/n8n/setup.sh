#!/usr/bin/env bash
# Installs what the n8n checks need, once: the packages n8n's Ollama nodes require (npm ci, no
# install scripts), and the published @n8n/n8n-nodes-langchain tarball unpacked into vendor/
# (a full n8n install needs Node >= 24 and native builds). npm's cache makes reruns cheap.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=2.41.1
# The registry's integrity of that tarball (`npm view @n8n/n8n-nodes-langchain@2.41.1
# dist.integrity`), checked here: npm pack alone trusts whatever the registry serves now, where
# npm ci checks each package against package-lock.json. Change both together.
INTEGRITY=sha512-ANQYlKE2DZZKzUndfOIxK8f/NbsANeZmGsOG0DsTwtX8KF9noEdMyiS2KXGGysvjGqR5nYZdz2pSXPQe0tAYvQ==
stamp=node_modules/.stamp-$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f "$stamp" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
if [ ! -f vendor/n8n-nodes-langchain/package.json ] || ! grep -q "\"version\": \"$VERSION\"" vendor/n8n-nodes-langchain/package.json; then
  rm -rf vendor && mkdir -p vendor
  tarball=n8n-n8n-nodes-langchain-$VERSION.tgz
  (cd vendor && npm pack "@n8n/n8n-nodes-langchain@$VERSION" --loglevel=error >/dev/null)
  got=$(node -e 'const c = require("crypto"), fs = require("fs");
    process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' \
    "vendor/$tarball")
  if [ "$got" != "$INTEGRITY" ]; then
    rm -rf vendor
    echo "*** @n8n/n8n-nodes-langchain $VERSION: integrity $got, expected $INTEGRITY ***" >&2
    exit 1
  fi
  (cd vendor && mkdir n8n-nodes-langchain \
    && tar xzf "$tarball" -C n8n-nodes-langchain --strip-components=1 && rm "$tarball")
fi
