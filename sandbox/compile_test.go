package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/talonhq/talon/sandbox/internal/wasmgen"
)

// genTool is a generated module as a tool named name.
func genTool(t testing.TB, name string, s wasmgen.Shape) Tool {
	t.Helper()
	m, err := ParseManifest(name+".yaml", []byte("name: "+name+"\ndescription: generated "+s.String()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return Tool{Manifest: m, Wasm: wasmgen.Module(s), Source: "wasmgen"}
}

// Modules shaped to make wazero's optimising compiler take super-linear
// time (each of these took from seconds to minutes) are refused at load,
// before any compilation, with a *LimitError naming the limit; Check
// refuses them alike. The refusal is what this test checks: it compiles
// none of them.
func TestHostileCompileRefused(t *testing.T) {
	tests := []struct {
		name  string
		shape wasmgen.Shape
		limit string
	}{
		// 21 KB; 6 s here without the limits.
		{"loops nested 1000 deep", wasmgen.Shape{Kind: wasmgen.Nest, N: 1000, Locals: 50, Ops: 1}, "loop nesting depth"},
		{"blocks nested 4000 deep", wasmgen.Shape{Kind: wasmgen.NestBlocks, N: 4000, Locals: 20, Ops: 1}, "nesting depth"},
		// 168 KB; 21 s here without the limits.
		{"8000 loops in a row", wasmgen.Shape{Kind: wasmgen.Seq, N: 8000, Locals: 5, Ops: 1}, "number of control instructions"},
		{"3000 loops in a row", wasmgen.Shape{Kind: wasmgen.Seq, N: 3000, Locals: 20, Ops: 1}, "estimated compilation cost"},
		{"5000 blocks in a row", wasmgen.Shape{Kind: wasmgen.SeqBlocks, N: 5000}, "number of control instructions"},
		// 19 KB; 2.7 to 4.4 s here without the limits.
		{"1000 locals live across 2000 blocks", wasmgen.Shape{Kind: wasmgen.Live, N: 1000, Locals: 1000}, "estimated compilation cost"},
		{"4000 values live across 2000 blocks", wasmgen.Shape{Kind: wasmgen.Stack, N: 1000, Ops: 4000}, "estimated compilation cost"},
		{"5000 locals", wasmgen.Shape{Kind: wasmgen.Live, N: 1, Locals: 5000}, "number of parameters and locals"},
		{"a 180 KB function", wasmgen.Shape{Kind: wasmgen.Nest, N: 1, Locals: 20, Ops: 20000}, "body size in bytes"},
		// Each function within the limits, the module not.
		{"8 functions near the limit", wasmgen.Shape{Kind: wasmgen.Live, N: 500, Locals: 900, Funcs: 8}, "estimated compilation cost"},
	}
	r := newRuntime(t, Config{}, echoTool(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tool := genTool(t, "gen", tt.shape)
			check := func(what string, err error) {
				t.Helper()
				var le *LimitError
				if !errors.As(err, &le) || le.Limit != tt.limit || le.Got <= le.Max {
					t.Errorf("%s = %v, want a *LimitError about the %s", what, err, tt.limit)
				}
			}
			check("Check", Check(context.Background(), tool.Wasm, nil))
			r2 := newRuntime(t, Config{}, tool)
			check("Load", r2.Load(context.Background(), "gen"))
			if _, err := r2.Call(context.Background(), call("gen", `{}`)); !errors.Is(err, ErrLoad) || !errors.Is(err, ErrLimit) {
				t.Errorf("Call = %v, want ErrLoad and ErrLimit", err)
			}
		})
	}
	// The well-behaved tool beside them never noticed.
	if res, err := r.Run(context.Background(), call("echo", `{"a":1}`)); err != nil || res.Content != `{"a":1}` {
		t.Errorf("echo = %+v, %v", res, err)
	}
}

// Modules at the limits load and run.
func TestCompileAtTheLimits(t *testing.T) {
	for _, s := range []wasmgen.Shape{
		{Kind: wasmgen.Nest, N: 64, Locals: 8, Ops: 1},
		{Kind: wasmgen.NestBlocks, N: 2048, Locals: 2, Ops: 1},
		{Kind: wasmgen.Live, N: 1, Locals: 2047},
	} {
		t.Run(s.String(), func(t *testing.T) {
			r := newRuntime(t, Config{PoolSize: -1}, genTool(t, "gen", s))
			res, err := r.Run(context.Background(), call("gen", `{}`))
			if err != nil || res.IsError || res.Content != "0" {
				t.Errorf("Run = %+v, %v; want 0", res, err)
			}
		})
	}
}

// gateFS blocks every Open until release is closed, and closes opened at
// the first one.
type gateFS struct {
	fs.FS
	once    sync.Once
	opened  chan struct{}
	release chan struct{}
}

func newGateFS(files fstest.MapFS) *gateFS {
	return &gateFS{FS: files, opened: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateFS) Open(name string) (fs.File, error) {
	g.once.Do(func() { close(g.opened) })
	<-g.release
	return g.FS.Open(name)
}

// A tool's first use compiles it off the caller's path: a call whose
// context ends meanwhile returns then with ErrCompiling, other tools run,
// and a later call finds the compilation done.
func TestCompileWaitsWithTheCallersContext(t *testing.T) {
	gate := newGateFS(fstest.MapFS{"slow.wasm": {Data: fixture.wasm["echo"]}})
	m, err := ParseManifest("slow.yaml", []byte("name: slow\ndescription: echo, slow to read\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Config{}, echoTool(t), Tool{Manifest: m, FS: gate, Path: "slow.wasm", Source: "gate"})
	defer close(gate.release) // whatever happens, let the compilation end

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// The module cannot be read until the gate opens: the call can only
	// return by its deadline.
	_, err = r.Call(ctx, call("slow", `{}`))
	if !errors.Is(err, ErrCompiling) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want ErrCompiling and the deadline", err)
	}
	res, err := r.Run(ctx, call("slow", `{}`))
	if err != nil || !res.IsError {
		t.Errorf("Run = %+v, %v; want a short reason for the model", res, err)
	}
	<-gate.opened
	// Nothing the compilation holds stops another tool, or the list.
	if res, err := r.Run(context.Background(), call("echo", `{"b":2}`)); err != nil || res.Content != `{"b":2}` {
		t.Errorf("echo while slow compiles = %+v, %v", res, err)
	}
	if got := toolNames(t, r); len(got) != 2 {
		t.Errorf("Tools = %v, want both", got)
	}
	gate.release <- struct{}{} // not closed yet: one Open goes through
	if res, err := r.Run(context.Background(), call("slow", `{"c":3}`)); err != nil || res.Content != `{"c":3}` {
		t.Errorf("slow once compiled = %+v, %v", res, err)
	}
}

// Close does not wait for a compilation to finish: it stops it, and the
// calls waiting for it fail.
func TestCloseAbandonsACompilation(t *testing.T) {
	// About a second of compilation here, and not in any cache.
	s := wasmgen.Shape{Kind: wasmgen.Live, N: 200, Locals: 200, Funcs: 24}
	gate := newGateFS(fstest.MapFS{"big.wasm": {Data: wasmgen.Module(s)}})
	m, err := ParseManifest("big.yaml", []byte("name: big\ndescription: generated\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(context.Background(), Config{CacheDir: t.TempDir(), Tools: []Tool{{Manifest: m, FS: gate, Path: "big.wasm", Source: "gate"}}})
	if err != nil {
		t.Fatal(err)
	}
	called := make(chan error, 1)
	go func() {
		_, err := r.Call(context.Background(), call("big", `{}`))
		called <- err
	}()
	<-gate.opened
	close(gate.release)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-called; !errors.Is(err, errClosed) {
		t.Errorf("the call waiting for the compilation = %v, want the runtime closed", err)
	}
}
