package interrupt

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument: Instrument never panics, and a module the runtime
// accepts stays acceptable once instrumented.
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
		out, err := Instrument(wasm)
		if err != nil {
			return
		}
		cm, err := r.CompileModule(ctx, wasm)
		if err != nil {
			return
		}
		cm.Close(ctx)
		cm, err = r.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("a valid module is invalid once instrumented: %v", err)
		}
		cm.Close(ctx)
	})
}
