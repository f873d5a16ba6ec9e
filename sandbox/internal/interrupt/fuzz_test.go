package interrupt

import (
	"context"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument: Instrument never panics, and a module the runtime
// accepts stays acceptable once instrumented.
//
// The seed corpus holds a module that made wazero v1.12's validator panic
// (a call to a function whose type index does not exist); Instrument now
// refuses it.
func FuzzInstrument(f *testing.F) {
	f.Add(twoFuncs())
	f.Add(module(memory1))
	f.Add(module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1, sec(secCode, foreverBody)))
	for _, wasm := range realModules(f) {
		if len(wasm) < 4096 { // the test guests, not the tools
			f.Add(wasm)
		}
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := inst(wasm)
		if err != nil {
			return
		}
		cm, err := compile(ctx, r, wasm)
		if err != nil {
			return // invalid, or wazero failed on it (the sandbox recovers)
		}
		cm.Close(ctx)
		cm, err = r.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("a valid module is invalid once instrumented: %v", err)
		}
		cm.Close(ctx)
	})
}

// compile is r.CompileModule with a panic of wazero turned into an error.
func compile(ctx context.Context, r wazero.Runtime, wasm []byte) (cm wazero.CompiledModule, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("wazero panicked: %v", p)
		}
	}()
	return r.CompileModule(ctx, wasm)
}
