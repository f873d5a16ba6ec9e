package sandbox

// The hostile and well-behaved test guests are written in WAT; the generated
// .wasm files are committed next to them. CI regenerates them with wat2wasm
// (wabt) and checks that nothing changed.
//go:generate sh testdata/generate.sh
