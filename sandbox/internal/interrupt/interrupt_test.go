package interrupt

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/talonhq/talon/sandbox/tools"
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
	out, err := inst(twoFuncs())
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

// signalled instantiates wasm, which imports env.signal () -> (), and
// returns the module and a channel closed at its first call of signal.
func signalled(t *testing.T, wasm []byte) (api.Module, <-chan struct{}) {
	t.Helper()
	return signalledHold(t, wasm, nil)
}

// signalledHold is signalled whose env.signal, when release is not nil,
// returns only once release is closed: the guest waits at a known point.
func signalledHold(t *testing.T, wasm []byte, release <-chan struct{}) (api.Module, <-chan struct{}) {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	t.Cleanup(func() { r.Close(ctx) })
	ch := make(chan struct{})
	var once sync.Once
	_, err := r.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func() {
			once.Do(func() { close(ch) })
			if release != nil {
				<-release
			}
		}).Export("signal").Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Instantiate(ctx, wasm)
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	return m, ch
}

// loopSignalling is a module importing env.signal (function 0) whose
// function 1, exported as name, loops forever: each iteration runs work,
// and the first calls signal.
func loopSignalling(name string, work []byte, memory []byte) []byte {
	code := []byte{0x01, 0x01, 0x7f, 0x03, 0x40}                                                // (local i32) loop
	code = append(code, 0x20, 0x00, 0x45, 0x04, 0x40, 0x10, 0x00, 0x41, 0x01, 0x21, 0x00, 0x0b) // if !local { signal(); local = 1 }
	code = append(code, work...)
	code = append(code, 0x0c, 0x00, 0x0b, 0x0b) // br 0, end, end
	return module(
		sec(secType, typeVoid),
		sec(secImport, append([]byte{0x03, 'e', 'n', 'v', 0x06}, "signal\x00\x00"...)),
		sec(secFunction, []byte{0x00}),
		memory,
		sec(secExport, append(append([]byte{byte(len(name))}, name...), 0x00, 0x01)),
		sec(secCode, body(code...)),
	)
}

func TestStopEndsALoop(t *testing.T) {
	out, err := inst(loopSignalling("forever", nil, memory1))
	if err != nil {
		t.Fatal(err)
	}
	m, looping := signalled(t, out)
	returned := make(chan error, 1)
	go func() {
		_, err := m.ExportedFunction("forever").Call(context.Background())
		returned <- err
	}()
	select {
	case err := <-returned:
		t.Fatalf("forever returned before stop was set: %v", err)
	case <-looping: // the guest is in its loop
	}
	select {
	case err := <-returned:
		t.Fatalf("forever returned before stop was set: %v", err)
	default:
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
	// Each iteration counts itself in the first word of memory, then fills
	// the rest of the 64 MiB.
	fill := []byte{
		0x41, 0x00, 0x41, 0x00, 0x28, 0x02, 0x00, 0x41, 0x01, 0x6a, 0x36, 0x02, 0x00, // mem[0] = mem[0] + 1
		0x41, 0x08, 0x41, 0x00, 0x41, 0xf8, 0xff, 0xff, 0x1f, // i32.const 8, 0, 64 MiB - 8
		0xfc, 0x0b, 0x00, // memory.fill
	}
	out, err := inst(loopSignalling("fill", fill, sec(secMemory, []byte{0x00, 0x80, 0x08}))) // (memory 1024): 64 MiB
	if err != nil {
		t.Fatal(err)
	}
	// The guest signals at the top of its first iteration and waits there
	// until the stop is set, so the stop comes at a known point of its
	// work, whatever the scheduler does.
	release := make(chan struct{})
	m, looping := signalledHold(t, out, release)
	returned := make(chan error, 1)
	go func() {
		_, err := m.ExportedFunction("fill").Call(context.Background())
		returned <- err
	}()
	<-looping
	m.ExportedGlobal(Export).(api.MutableGlobal).Set(1)
	close(release)
	err = <-returned
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v, want the unreachable trap", err)
	}
	// Each fill is charged 64 Ki ticks, past the refuel interval, so the
	// guest checks the stop before its first fill. Without the charge only
	// loop heads and calls count, and hundreds of fills run first.
	if n, _ := m.Memory().ReadUint32Le(0); n > 1 {
		t.Errorf("the guest began %d fills of 64 MiB after stop was set, want at most 1", n)
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
			out, err := inst(tt.wasm)
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
		{"reserved prefix", "reserves", module(memory1, sec(secExport, append([]byte{0x07}, "talon.x\x02\x00"...)))},
		{"export an added function", "index 0 does not exist", module(memory1, sec(secExport, append([]byte{0x01}, "f\x00\x00"...)))},
		{"export an added global", "index 0 does not exist", module(memory1, sec(secExport, append([]byte{0x01}, "g\x03\x00"...)))},
		{"table import", "may not import a table", module(sec(secImport, []byte{0x01, 'e', 0x01, 't', 0x01, 0x70, 0x00, 0x01}), memory1)},
		{"typed table", "unsupported table type", module(sec(secTable, []byte{0x40, 0x00, 0x70, 0x00, 0x01, 0xd0, 0x70, 0x0b}), memory1)},
		{"element of an added function", "function 1 does not exist", module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}),
			sec(secTable, []byte{0x70, 0x00, 0x01}), memory1, sec(secElement, []byte{0x00, 0x41, 0x00, 0x0b, 0x01, 0x01}), sec(secCode, foreverBody))},
		{"global of an added function", "function 1 does not exist", module(sec(secType, typeVoid), sec(secFunction, []byte{0x00}), memory1,
			sec(secGlobal, []byte{0x70, 0x00, 0xd2, 0x01, 0x0b}), sec(secCode, foreverBody))},
		{"global reading an added global", "global 0 does not exist", module(memory1,
			sec(secGlobal, []byte{0x7f, 0x00, 0x23, 0x00, 0x0b}))},
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
			_, err := inst(tt.wasm)
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
	mods := builtinModules(t)
	if len(mods) < 4 {
		t.Fatalf("found %d built-in tools, want 4", len(mods))
	}
	guests, err := filepath.Glob("../../testdata/*.wasm")
	if err != nil || len(guests) == 0 {
		t.Fatalf("found no test guests (%v)", err)
	}
	for _, f := range guests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		mods[f] = b
	}
	return mods
}

// builtinModules reads the built-in tools as the gateway does: through
// tools.FS, which decompresses the modules embedded in the binary.
func builtinModules(t testing.TB) map[string][]byte {
	t.Helper()
	names, err := fs.Glob(tools.FS, "*.wasm")
	if err != nil {
		t.Fatal(err)
	}
	mods := map[string][]byte{}
	for _, n := range names {
		b, err := fs.ReadFile(tools.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		mods["builtin/"+n] = b
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
			out, err := inst(wasm)
			switch filepath.Base(name) { // refused on purpose
			case "reserved.wasm", "startloop.wasm":
				if !errors.Is(err, ErrUnsupported) {
					t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
				}
				return
			case "nestloops.wasm":
				if !errors.Is(err, ErrLimit) {
					t.Errorf("%s: err = %v, want ErrLimit", name, err)
				}
				return
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			again, _ := inst(wasm)
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
	wasm, err := fs.ReadFile(tools.FS, "html_text.wasm")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wasm)))
	for b.Loop() {
		if _, err := inst(wasm); err != nil {
			b.Fatal(err)
		}
	}
}

// inst instruments wasm under the default limits.
func inst(wasm []byte) ([]byte, error) {
	m, err := Instrument(wasm, DefaultLimits())
	if err != nil {
		return nil, err
	}
	return m.Wasm, nil
}

// tableModule has a table of 0..max funcref elements (no max when max < 0)
// and exports grow (n) -> table.grow(ref.null, n) and size.
func tableModule(max int) []byte {
	limits := []byte{0x00, 0x00}
	if max >= 0 {
		limits = binary.AppendUvarint([]byte{0x01, 0x00}, uint64(max))
	}
	grow := body(0x00, 0xd0, 0x70, 0x20, 0x00, 0xfc, 0x0f, 0x00, 0x0b) // ref.null func, local.get 0, table.grow 0
	size := body(0x00, 0xfc, 0x10, 0x00, 0x0b)                         // table.size 0
	return module(
		sec(secType, typeI32, []byte{0x60, 0x00, 0x01, 0x7f}),
		sec(secFunction, []byte{0x00}, []byte{0x01}),
		sec(secTable, append([]byte{0x70}, limits...)),
		memory1,
		sec(secExport, append([]byte{0x04}, "grow\x00\x00"...), append([]byte{0x04}, "size\x00\x01"...)),
		sec(secCode, grow, size),
	)
}

// table.grow is guarded: the references it adds and the linear memory
// together stay within the limit the host sets, a refused growth returns
// -1 and is recorded, and a growth the table's own maximum refuses is not
// counted.
func TestTableGrowGuard(t *testing.T) {
	ctx := context.Background()
	out, err := inst(tableModule(200000))
	if err != nil {
		t.Fatal(err)
	}
	m := instantiate(t, out)
	grow := func(n uint64) int32 {
		t.Helper()
		res, err := m.ExportedFunction("grow").Call(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return int32(res[0])
	}
	refs := func() uint64 { return m.ExportedGlobal(ReferencesExport).Get() }
	refused := func() uint64 { return m.ExportedGlobal(RefusedExport).Get() }

	if got := grow(1); got != -1 || refused() != 1 || refs() != 0 {
		t.Errorf("before the host sets a limit: grow(1) = %d, refused %d, refs %d; want -1, 1, 0", got, refused(), refs())
	}
	m.ExportedGlobal(RefusedExport).(api.MutableGlobal).Set(0)
	// 1 MiB: 64 KiB of memory and room for 122,880 references.
	m.ExportedGlobal(MemoryLimitExport).(api.MutableGlobal).Set(1 << 20)
	steps := []struct {
		n            uint64
		want         int32
		refs, refuse uint64
	}{
		{100000, 0, 100000, 0},      // fits
		{30000, -1, 100000, 1},      // 130,000 references would not
		{22880, 100000, 122880, 1},  // exactly the limit
		{1, -1, 122880, 1},          // one more would not
		{1 << 31, -1, 122880, 1},    // nor a huge one
		{0xffffffff, -1, 122880, 1}, // nor the largest
	}
	for _, s := range steps {
		if got := grow(s.n); got != s.want || refs() != s.refs || refused() != s.refuse {
			t.Errorf("grow(%d) = %d, refs %d, refused %d; want %d, %d, %d", s.n, got, refs(), refused(), s.want, s.refs, s.refuse)
		}
	}
	res, err := m.ExportedFunction("size").Call(ctx)
	if err != nil || res[0] != 122880 {
		t.Errorf("table.size = %v, %v; want 122880", res, err)
	}

	// The table's own maximum refuses a growth the limit allows; the
	// references are given back.
	out, err = inst(tableModule(10))
	if err != nil {
		t.Fatal(err)
	}
	m = instantiate(t, out)
	m.ExportedGlobal(MemoryLimitExport).(api.MutableGlobal).Set(1 << 20)
	if got := grow(11); got != -1 || refs() != 0 || refused() != 0 {
		t.Errorf("grow past the table's maximum = %d, refs %d, refused %d; want -1, 0, 0", got, refs(), refused())
	}
	if got := grow(10); got != 0 || refs() != 10 {
		t.Errorf("grow(10) = %d, refs %d; want 0, 10", got, refs())
	}
}

// Tables declared at start and passive element segments count as
// references.
func TestInstrumentCountsReferences(t *testing.T) {
	elem := sec(secElement,
		[]byte{0x00, 0x41, 0x00, 0x0b, 0x02, 0x00, 0x00}, // active, table 0, offset 0: f0, f0
		[]byte{0x01, 0x00, 0x03, 0x00, 0x00, 0x00},       // passive funcref: f0 ×3
		[]byte{0x05, 0x70, 0x01, 0xd0, 0x70, 0x0b},       // passive, expressions: ref.null
	)
	wasm := module(
		sec(secType, typeVoid),
		sec(secFunction, []byte{0x00}),
		sec(secTable, []byte{0x70, 0x00, 0x07}, []byte{0x6f, 0x01, 0x02, 0x09}), // (table 7 funcref) (table 2 9 externref)
		memory1,
		elem,
		sec(secCode, foreverBody),
	)
	m, err := Instrument(wasm, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if m.References != 7+2+3+1 {
		t.Errorf("References = %d, want 13", m.References)
	}
	r := instantiate(t, m.Wasm)
	if got := r.ExportedGlobal(ReferencesExport).Get(); got != 13 {
		t.Errorf("the references global starts at %d, want 13", got)
	}
}

// Each limit refuses a function one beyond it, and accepts one at it.
func TestInstrumentLimits(t *testing.T) {
	withBody := func(b []byte) []byte {
		return module(sec(secType, typeI32), sec(secFunction, []byte{0x00}), memory1, sec(secCode, b))
	}
	nested := func(op byte, n int) []byte { // n blocks or loops nested, empty
		code := []byte{0x00}
		for range n {
			code = append(code, op, 0x40)
		}
		for range n {
			code = append(code, 0x0b)
		}
		return body(append(code, 0x20, 0x00, 0x0b)...)
	}
	locals := func(n int) []byte { // n-1 i32 locals, plus the parameter
		return body(append(binary.AppendUvarint([]byte{0x01}, uint64(n-1)), 0x7f, 0x20, 0x00, 0x0b)...)
	}
	brIfs := func(n int) []byte {
		code := []byte{0x00, 0x02, 0x40}
		for range n - 1 {
			code = append(code, 0x20, 0x00, 0x0d, 0x00)
		}
		return body(append(code, 0x0b, 0x20, 0x00, 0x0b)...)
	}
	// stack pushes n values, opens a block and adds them up.
	stack := func(n int) []byte {
		code := []byte{0x00}
		for range n {
			code = append(code, 0x20, 0x00)
		}
		code = append(code, 0x02, 0x40, 0x0b)
		for range n - 1 {
			code = append(code, 0x6a)
		}
		return body(append(code, 0x0b)...)
	}
	tests := []struct {
		name  string
		lim   Limits
		at    []byte
		above []byte
		limit string
	}{
		{"depth", Limits{Depth: 20}, nested(0x02, 20), nested(0x02, 21), "nesting depth"},
		{"loop depth", Limits{LoopDepth: 8}, nested(0x03, 8), nested(0x03, 9), "loop nesting depth"},
		{"locals", Limits{Locals: 100}, locals(100), locals(101), "number of parameters and locals"},
		{"blocks", Limits{Blocks: 50}, brIfs(50), brIfs(51), "number of control instructions"},
		{"body", Limits{BodyBytes: 10}, body(0x00, 0x20, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x0b),
			body(0x00, 0x20, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x0b), "body size in bytes"},
		// 64 for the function, 304 bytes, 14 for the block, 3 for the
		// phis of its local, 100 values live across it
		{"cost", Limits{FunctionCost: 485}, stack(100), stack(101), "estimated compilation cost"},
		{"module cost", Limits{Cost: 485}, stack(100), stack(101), "estimated compilation cost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Instrument(withBody(tt.at), tt.lim); err != nil {
				t.Errorf("at the limit: %v", err)
			}
			_, err := Instrument(withBody(tt.above), tt.lim)
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tt.limit || !errors.Is(err, ErrLimit) || errors.Is(err, ErrUnsupported) {
				t.Fatalf("above the limit: %v, want a *LimitError about %s", err, tt.limit)
			}
			if tt.name == "module cost" {
				if le.Function != -1 {
					t.Errorf("Function = %d, want -1 (the module)", le.Function)
				}
			} else if le.Function != 0 {
				t.Errorf("Function = %d, want 0", le.Function)
			}
		})
	}
}

// TestState: the module's own mutable globals are exported in index
// order, and Snapshot says whether they and the memory are its whole
// state.
func TestState(t *testing.T) {
	for _, c := range []struct {
		file     string
		state    int
		snapshot bool
	}{
		{"../../testdata/state.wasm", 3, true},      // three mutable i32 globals
		{"../../testdata/tablegrow.wasm", 1, false}, // grows its table
		{"../../testdata/echo.wasm", 1, true},
	} {
		wasm, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Instrument(wasm, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if m.State != c.state || m.Snapshot != c.snapshot {
			t.Errorf("%s: State %d, Snapshot %v; want %d, %v", c.file, m.State, m.Snapshot, c.state, c.snapshot)
		}
		ctx := context.Background()
		r := wazero.NewRuntime(ctx)
		if _, err := r.CompileModule(ctx, m.Wasm); err != nil {
			t.Errorf("%s: the instrumented module is invalid: %v", c.file, err)
		}
		r.Close(ctx)
		// CompiledModule does not list exported globals: look for the
		// names, each preceded by its length, in the binary.
		for i := range c.state + 1 {
			n := StatePrefix + strconv.Itoa(i)
			if got := strings.Contains(string(m.Wasm), string(rune(len(n)))+n+"\x03"); got != (i < c.state) {
				t.Errorf("%s: export %s present %v", c.file, n, got)
			}
		}
	}
}
