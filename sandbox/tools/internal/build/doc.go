// Command build compiles Talon's built-in tools to WebAssembly. It is run by
// `go generate ./sandbox/tools` from the sandbox/tools directory and builds
// every subdirectory holding a main.go (internal excepted) with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags=-s -buildvcs=false ./<name>
//
// merges each module's data segments into one, which makes instantiation
// several times faster (see MergeDataSegments), and writes the module
// gzipped as <name>.wasm.gz, with the SHA-256 of every module before
// compression in modules.sha256 (to check by hand:
// `for f in *.wasm.gz; do gunzip -k $f; done; sha256sum -c modules.sha256`).
//
// The output is reproducible: the same sources and Go toolchain give
// byte-identical files. GOVERSION records the toolchain that built them.
package main
