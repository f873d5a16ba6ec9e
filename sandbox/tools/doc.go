// Package tools holds Talon's built-in tools: one WebAssembly module per
// tool (compiled from the package main in the directory of the same name,
// with the guest SDK in sandbox/guest) and the default operator manifest
// next to it. The modules are committed; `go generate ./sandbox/tools`
// rebuilds them reproducibly.
//
// The package only embeds files. It never runs a tool: cmd hands FS to the
// sandbox registry, which compiles and instantiates the modules.
package tools
