// Package sandbox runs Talon's tools: WebAssembly core modules (WASI preview 1
// reactors speaking the tool ABI of ABI.md) under an operator-written manifest.
//
// It owns one wazero runtime with a compilation cache on disk, the registry
// of tools (built-in modules from an fs.FS plus an operator tools directory,
// each with a strictly decoded manifest), the load-time checks of a module's
// imports and exports, the host module "talon" (HTTP through the egress
// broker, capped logging, a secret-name check), a small pool of
// pre-initialised instances per tool, and the limits of a call: deadline,
// memory (linear memory and tables together), output size, HTTP requests
// per call and calls per user per minute; and one budget of memory for
// all instances together, for which calls wait, users served in turn.
//
// Every module is checked against limits of its shape and instrumented
// before it is compiled (see package interrupt): so that compiling it stays
// short, so that a call can be stopped at its deadline, so that a guest
// yields to the Go scheduler often enough never to stall the host, and so
// that table.grow stays within the memory limit. A tool is compiled in a
// goroutine of the Runtime's, not on a caller's path: a call waits for it
// only as long as its context allows, and Close stops it.
//
// Every call runs in a fresh instance that is closed afterwards, so nothing a
// guest keeps survives to another call or user. Guests get no filesystem, no
// environment, no arguments and no sockets: their only way out is the host
// functions, which treat every pointer, length and byte from the guest as
// hostile. The package never makes network requests itself (the egress broker
// does, under the tool's policy), never sees secret values, and never logs
// tool arguments or output; the only guest text it logs is what the guest
// passes to "log", at debug level, capped, and scanned for secrets first.
//
// Nothing is paid before a tool is used: the registry parses manifests but
// reads no module, and a Runtime builds its wazero runtime, reads and
// compiles a module and starts its pool on the tool's first call, so an idle
// gateway holds neither compiled code nor module binaries.
//
// Runtime implements agent.ToolRunner.
package sandbox
