//go:build wasip1

package guest

import (
	"runtime"
	"unsafe"
)

// maxAlloc bounds one talon_alloc; the host's own input caps are far lower.
const maxAlloc = 64 << 20

// allocs holds the buffers handed out by talon_alloc, keyed by address, so
// the garbage collector keeps them alive until talon_call returns and
// talon_call can find its input without turning a host integer into a
// pointer.
var allocs = map[uint32][]byte{}

// lastOutput keeps the output of the last talon_call alive while the host
// reads it.
var lastOutput []byte

// abiVersion1 marks the module as built for ABI version 1. Never called.
//
//go:wasmexport talon_abi_version_1
func abiVersion1() {}

// talonAlloc returns the address of size writable bytes, or 0.
//
//go:wasmexport talon_alloc
func talonAlloc(size int32) uint32 {
	if size < 0 || size > maxAlloc {
		return 0
	}
	b := make([]byte, max(size, 1))
	p := uint32(uintptr(unsafe.Pointer(&b[0])))
	allocs[p] = b
	return p
}

// talonCall runs the registered handler on the input at [ptr, ptr+n) and
// returns the output's location as (out_ptr << 32) | out_len.
//
//go:wasmexport talon_call
func talonCall(ptr, n uint32) uint64 {
	var out []byte
	buf, ok := allocs[ptr]
	switch {
	case !ok || uint64(n) > uint64(len(buf)):
		out = errorOutput("invalid input: not a talon_alloc buffer")
	case handler == nil:
		out = noHandlerOutput()
	default:
		out = handler(buf[:n])
	}
	clear(allocs)
	if len(out) == 0 {
		out = errorOutput("")
	}
	lastOutput = out
	p := uint64(uintptr(unsafe.Pointer(&out[0])))
	return p<<32 | uint64(len(out))
}

//go:wasmimport talon http_request
func talonHTTPRequest(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport talon result_read
func talonResultRead(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport talon log
func talonLog(level int32, ptr unsafe.Pointer, n uint32)

//go:wasmimport talon has_secret
func talonHasSecret(ptr unsafe.Pointer, n uint32) int32

// hostHTTP performs talon.http_request and fetches its result.
func hostHTTP(in []byte) ([]byte, error) {
	if len(in) == 0 {
		return nil, &HTTPError{Kind: KindInvalid, Message: "empty request"}
	}
	n := talonHTTPRequest(unsafe.Pointer(&in[0]), uint32(len(in)))
	runtime.KeepAlive(in)
	if n < 0 {
		return nil, &HTTPError{Kind: KindInvalid, Message: "host returned a negative result length"}
	}
	if n == 0 {
		return nil, &HTTPError{Kind: KindInvalid, Message: "host returned an empty result"}
	}
	out := make([]byte, n)
	got := talonResultRead(unsafe.Pointer(&out[0]), uint32(n))
	if got < 0 || got > n {
		return nil, &HTTPError{Kind: KindInvalid, Message: "host returned a bad result_read length"}
	}
	return out[:got], nil
}

// hostLog performs talon.log.
func hostLog(level int32, msg string) {
	if msg == "" {
		return
	}
	talonLog(level, unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
	runtime.KeepAlive(msg)
}

// hostHasSecret performs talon.has_secret.
func hostHasSecret(name string) bool {
	r := talonHasSecret(unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)))
	runtime.KeepAlive(name)
	return r == 1
}

// Main does nothing in the WebAssembly build: a reactor's main.main never
// runs. Natively it serves one call on stdin and stdout.
func Main() {}
