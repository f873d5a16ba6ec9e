#!/bin/sh
# Rebuilds every test guest from its WAT source. Needs wat2wasm (wabt).
set -eu
cd "$(dirname "$0")"
for f in *.wat; do
	wat2wasm -o "${f%.wat}.wasm" "$f"
done
