package tools

import "embed"

//go:generate go run ./internal/build

// FS holds the built-in tools: <name>.wasm, the compiled module, and
// <name>.yaml, its default operator manifest (format in sandbox/ABI.md).
// An operator may override a manifest, or disable a tool, with a file of
// the same name in the configured tools directory.
//
//go:embed *.wasm *.yaml
var FS embed.FS
