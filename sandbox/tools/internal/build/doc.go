// Command build compiles Talon's built-in tools to WebAssembly. It is run by
// `go generate ./sandbox/tools` from the sandbox/tools directory and builds
// every subdirectory holding a main.go (internal excepted) with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags=-s -buildvcs=false -o <name>.wasm ./<name>
//
// and merges each module's data segments into one, which makes
// instantiation several times faster (see MergeDataSegments).
//
// The output is reproducible: the same sources and Go toolchain give
// byte-identical modules. GOVERSION records the toolchain that built them.
package main
