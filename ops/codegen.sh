#!/usr/bin/env bash
# Regenerates codecs/generated/ from codecs/schema/*.fbs with flatc (Debian: flatbuffers-compiler).
# The generated code is committed: building and testing do not need flatc.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v flatc >/dev/null || { echo "codegen: flatc is missing: apt-get install -y flatbuffers-compiler" >&2; exit 1; }
rm -rf codecs/generated
flatc --ts --ts-flat-files -o codecs/generated codecs/schema/tick_batch.fbs
# NodeNext needs explicit .js extensions on relative imports.
sed -i -E "s#(from '\./[^']+)';#\1.js';#" codecs/generated/*.ts
echo "codegen: wrote $(ls codecs/generated)"
