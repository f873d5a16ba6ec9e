// Package tools holds Talon's built-in tools: one WebAssembly module per
// tool (compiled from the package main in the directory of the same name,
// with the guest SDK in sandbox/guest) and the default operator manifest
// next to it. The modules are committed gzipped (<name>.wasm.gz, with their
// SHA-256 before compression in modules.sha256); `go generate
// ./sandbox/tools` rebuilds them reproducibly. FS serves them as
// <name>.wasm, decompressed when a module is read.
//
// The package only embeds files. It never runs a tool: cmd hands FS to the
// sandbox registry, which compiles and instantiates the modules.
package tools
