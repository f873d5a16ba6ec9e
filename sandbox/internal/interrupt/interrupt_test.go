package interrupt

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// A small module, assembled here section by section.

func sec(id byte, entries ...[]byte) []byte {
	p := binary.AppendUvarint(nil, uint64(len(entries)))
	for _, e := range entries {
		p = append(p, e...)
	}
	return append(append([]byte{id}, binary.AppendUvarint(nil, uint64(len(p)))...), p...)
}

func module(sections ...[]byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	for _, s := range sections {
		m = append(m, s...)
	}
	return m
}

// body is a function body: its local declarations then code.
func body(code ...byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(code))), code...)
}

var (
	typeVoid = []byte{0x60, 0x00, 0x00}             // [] -> []
	typeI32  = []byte{0x60, 0x01, 0x7f, 0x01, 0x7f} // [i32] -> [i32]
	memory1  = sec(secMemory, []byte{0x00, 0x01})   // (memory 1)
)

// sumBody is (func (param $n i32) (result i32) (local $s i32)), the sum of
// 1..n by a loop.
var sumBody = body(
	0x01, 0x01, 0x7f, // one local i32
	0x02, 0x40, // block
	0x03, 0x40, //   loop
	0x20, 0x00, 0x45, 0x0d, 0x01, //     br_if 1 (n == 0)
	0x20, 0x01, 0x20, 0x00, 0x6a, 0x21, 0x01, //     s += n
	0x20, 0x00, 0x41, 0x01, 0x6b, 0x21, 0x00, //     n -= 1
	0x0c, 0x00, //     br 0
	0x0b,       //   end
	0x0b,       // end
	0x20, 0x01, // s
	0x0b,
)

// foreverBody is (func) whose loop never ends.
var foreverBody = body(0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b)

// twoFuncs exports sum (function 0) and forever (function 1).
func twoFuncs() []byte {
	return module(
		sec(secType, typeI32, typeVoid),
		sec(secFunction, []byte{0x00}, []byte{0x01}),
		memory1,
		sec(secExport, append([]byte{0x03}, "sum\x00\x00"...), append([]byte{0x07}, "forever\x00\x01"...)),
		sec(secCode, sumBody, foreverBody),
	)
}

func instantiate(t *testing.T, wasm []byte) api.Module {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	t.Cleanup(func() { r.Close(ctx) })
	m, err := r.Instantiate(ctx, wasm)
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	return m
}

func TestInstrumentedModuleComputesTheSame(t *testing.T) {
	ctx := context.Background()
	plain := instantiate(t, twoFuncs())
	out, err := Instrument(twoFuncs())
	if err != nil {
		t.Fatal(err)
	}
	inst := instantiate(t, out)
	for _, n := range []uint64{0, 1, 10, 5000, 100000} { // more than Ticks iterations, too
		want, err := plain.ExportedFunction("sum").Call(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := inst.ExportedFunction("sum").Call(ctx, n)
		if err != nil || got[0] != want[0] {
			t.Errorf("sum(%d) = %v, %v; want %v", n, got, err, want)
		}
	}
	if _, ok := inst.ExportedGlobal(Export).(api.MutableGlobal); !ok {
		t.Errorf("no mutable global exported as %q", Export)
	}
}

func TestStopEndsALoop(t *testing.T) {
	out, err := Instrument(twoFuncs())
	if err != nil {
		t.Fatal(err)
	}
	m := instantiate(t, out)
	returned := make(chan error, 1)
	go func() {
		_, err := m.ExportedFunction("forever").Call(context.Background())
		returned <- err
	}()
	select {
	case err := <-returned:
		t.Fatalf("forever returned before stop was set: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	m.ExportedGlobal(Export).(api.MutableGlobal).Set(1)
	if err := <-returned; err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v, want the unreachable trap", err)
	}
}

// A loop whose iterations each fill 64 MiB is charged by the size of its
// fills, not one tick an iteration: it leaves compiled code, and sees the
// stop, after at most one fill, not after a thousand (seconds).
func TestStopEndsABulkLoop(t *testing.T) {
	fill := body(0x00,
		0x03, 0x40, // loop
		0x41, 0x00, 0x41, 0x00, 0x41, 0x80, 0x80, 0x80, 0x20, // i32.const 0, 0, 64 MiB
		0xfc, 0x0b, 0x00, // memory.fill
		0x0c, 0x00, // br 0
		0x0b, 0x0b)
	wasm := module(
		sec(secType, typeVoid),
		sec(secFunction, []byte{0x00}),
		sec(secMemory, []byte{0x00, 0x80, 0x08}), // (memory 1024): 64 MiB
		sec(secExport, append([]byte{0x04}, "fill\x00\x00"...)),
		sec(secCode, fill),
	)
	out, err := Instrument(wasm)
	if err != nil {
		t.Fatal(err)
	}
	m := instantiate(t, out)
	returned := make(chan error, 1)
	go func() {
		_, err := m.ExportedFunction("fill").Call(context.Background())
		returned <- err
	}()
	time.Sleep(20 * time.Millisecond)
	m.ExportedGlobal(Export).(api.MutableGlobal).Set(1)
	stopped := time.Now()
	// No timer here: a guest that does not leave compiled code also holds
	// up timers, through the garbage collector's stop-the-world.
	err = <-returned
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v, want the unreachable trap", err)
	}
	if d := time.Since(stopped); d > 500*time.Millisecond {
		t.Errorf("the guest ran on for %v after stop was set", d)
	}
}

// The added function and globals take the next free indices, whatever the
// module imports or lacks.
func TestInstrumentShapes(t *testing.T) {
	imports := sec(secImport,
		append([]byte{0x01, 'e', 0x01, 'f', 0x00}, 0x01),          // func of type 1
		append([]byte{0x01, 'e', 0x01, 'g', 0x03}, 0x7f, 0x00),    // global i32
		append([]byte{0x01, 'e', 0x01, 'm', 0x02}, 0x01, 0x01, 2), // memory 1..2
	)
	tests := []struct {
		name string
		wasm []byte
	}{
		{"imports", module(
			sec(secType, typeI32, typeVoid), imports,
			sec(secFunction, []byte{0x00}),
			sec(secGlobal, []byte{0x7f, 0x01, 0x41, 0x05, 0x0b}),
			sec(secExport, append([]byte{0x03}, "sum\x00\x01"...)),
			sec(secCode, sumBody),
		)},
		{"no export section", module(
			sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1,
			sec(secCode, foreverBody),
		)},
		{"no functions", module(memory1)},
		{"custom sections", module(
			[]byte{0x00, 0x03, 0x01, 'x', 0xff},
			sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1,
			[]byte{0x00, 0x03, 0x01, 'y', 0x00},
			sec(secCode, foreverBody),
			[]byte{0x00, 0x03, 0x01, 'z', 0x00},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Instrument(tt.wasm)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
			defer r.Close(ctx)
			cm, err := r.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("the instrumented module is invalid: %v", err)
			}
			if _, ok := cm.ExportedFunctions()[Export]; ok {
				t.Errorf("%s exported as a function", Export)
			}
		})
	}
}

func TestInstrumentRefuses(t *testing.T) {
	withCode := func(b []byte) []byte {
		return module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1, sec(secCode, b))
	}
	tests := []struct {
		name, want string
		wasm       []byte
	}{
		{"not wasm", "not a WebAssembly", []byte("\x7fELF\x02\x01\x01\x00")},
		{"version 2", "not a WebAssembly", []byte("\x00asm\x02\x00\x00\x00")},
		{"truncated section", "unexpected end", append(module(), 0x01, 0x05, 0x01)},
		{"sections out of order", "out of order", module(memory1, sec(secType, typeVoid))},
		{"section repeated", "out of order", module(memory1, memory1)},
		{"unknown section", "unknown section", module([]byte{0x0d, 0x00})},
		{"start function", "start function", module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1,
			[]byte{secStart, 0x01, 0x00}, sec(secCode, foreverBody))},
		{"no memory", "no memory", module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}), sec(secCode, foreverBody))},
		{"reserved export", "reserves", module(memory1, sec(secExport, append([]byte{byte(len(Export))}, Export+"\x02\x00"...)))},
		{"unknown opcode", "unknown opcode 0xff", withCode(body(0x00, 0xff, 0x0b))},
		{"unknown 0xfc opcode", "unknown opcode 0xfc 18", withCode(body(0x00, 0xfc, 0x12, 0x0b))},
		{"unbalanced body", "unexpected end", withCode(body(0x00, 0x02, 0x40, 0x0b))},
		{"bytes after the body", "after the end", withCode(body(0x00, 0x0b, 0x01))},
		{"global out of range", "global 0 does not exist", withCode(body(0x00, 0x23, 0x00, 0x1a, 0x0b))},
		{"set the added global", "global 1 does not exist", module(
			sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1,
			sec(secGlobal, []byte{0x7f, 0x01, 0x41, 0x00, 0x0b}),
			sec(secCode, body(0x00, 0x41, 0x00, 0x24, 0x01, 0x0b)))},
		{"call the added function", "function 1 does not exist", withCode(body(0x00, 0x10, 0x01, 0x0b))},
		{"function of a missing type", "type 1, which does not exist", module(sec(secType, typeVoid),
			sec(secFunction, []byte{0x01}), memory1, sec(secCode, foreverBody))},
		{"import of a missing type", "type 3, which does not exist", module(sec(secType, typeVoid),
			sec(secImport, []byte{0x01, 'e', 0x01, 'f', 0x00, 0x03}), memory1)},
		{"negative block type", "bad block type", withCode(body(0x00, 0x03, 0x7a, 0x0b, 0x0b))},
		{"overlong LEB", "too long", withCode(body(0x00, 0x41, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x1a, 0x0b))},
		{"multi-memory alignment", "alignment", withCode(body(0x00, 0x41, 0x00, 0x28, 0x40, 0x00, 0x00, 0x1a, 0x0b))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Instrument(tt.wasm)
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrUnsupported about %q", err, tt.want)
			}
		})
	}
}

// Real modules: the built-in tools (Go-built, every instruction the Go
// compiler emits) and the sandbox's test guests.
func realModules(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../tools/*.wasm")
	if err != nil {
		t.Fatal(err)
	}
	guests, _ := filepath.Glob("../../testdata/*.wasm")
	files = append(files, guests...)
	if len(files) < 5 {
		t.Fatalf("found %d modules, want the built-in tools and the test guests", len(files))
	}
	mods := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		mods[f] = b
	}
	return mods
}

func TestInstrumentRealModules(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	var wg sync.WaitGroup
	for name, wasm := range realModules(t) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.CompileModule(ctx, wasm); err != nil {
				return // a test guest that is invalid on purpose
			}
			out, err := Instrument(wasm)
			if base := filepath.Base(name); base == "reserved.wasm" || base == "startloop.wasm" { // refused on purpose
				if !errors.Is(err, ErrUnsupported) {
					t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
				}
				return
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			again, _ := Instrument(wasm)
			if string(again) != string(out) {
				t.Errorf("%s: instrumenting twice gave different modules", name)
			}
			if _, err := r.CompileModule(ctx, out); err != nil {
				t.Errorf("%s: the instrumented module is invalid: %v", name, err)
			}
		}()
	}
	wg.Wait()
}

func BenchmarkInstrument(b *testing.B) {
	wasm, err := os.ReadFile("../../tools/html_text.wasm")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wasm)))
	for b.Loop() {
		if _, err := Instrument(wasm); err != nil {
			b.Fatal(err)
		}
	}
}
