// Package guest is the Go SDK for writing Talon tools: WebAssembly modules
// that run inside the Talon sandbox (see sandbox/ABI.md, ABI version 1).
//
// A tool is a package main built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o mytool.wasm ./mytool
//
// Its author writes only a handler and registers it from init (a reactor's
// main.main never runs; the Go runtime runs package initialisers from the
// exported _initialize function):
//
//	type args struct{ Name string `json:"name"` }
//
//	func init() {
//		guest.Run(func(a args) (string, error) { return "hello " + a.Name, nil })
//	}
//
//	func main() {}
//
// Importing this package provides the exports the host needs (talon_alloc,
// talon_call, talon_abi_version_1). HTTP, Log and HasSecret call the host
// functions of module "talon"; they are the tool's only way out of the
// sandbox. The guest never sees a credential's value: it names a vault
// entry in Request.Credential and the host injects it, if the operator's
// manifest allows.
//
// The package owns the guest side of the ABI and nothing else: it never
// touches the network, files or the environment directly. On platforms other
// than wasip1 it compiles, so host-side code and tests can import it, but
// HTTP returns ErrNotInSandbox, HasSecret reports false and Log discards.
package guest
