//go:build unix

package interrupt

import (
	"context"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/talonhq/talon/sandbox/internal/wasmgen"
)

// BenchmarkCompile measures wazero's optimising compiler (no cache) on the
// built-in tools and on generated modules at the limits and beyond them,
// next to the cost Instrument estimates. It reports the compilation's wall
// time with one and with two workers, and the CPU time of the one-worker
// compilation. RATIONALE.md records its figures:
//
//	go test ./sandbox/internal/interrupt -run '^$' -bench Compile -benchtime 1x
func BenchmarkCompile(b *testing.B) {
	type bcase struct {
		name string
		wasm []byte
	}
	var cases []bcase
	builtins := builtinModules(b)
	for _, name := range slices.Sorted(maps.Keys(builtins)) {
		cases = append(cases, bcase{name, builtins[name]})
	}
	for _, s := range []wasmgen.Shape{
		// One function near the limits.
		{Kind: wasmgen.Nest, N: 64, Locals: 1500, Ops: 1},
		{Kind: wasmgen.NestBlocks, N: 2048, Locals: 40, Ops: 1},
		{Kind: wasmgen.Seq, N: 1100, Locals: 20, Ops: 1},
		{Kind: wasmgen.SeqBlocks, N: 4096},
		{Kind: wasmgen.Live, N: 200, Locals: 1000},
		{Kind: wasmgen.Live, N: 40, Locals: 2000},
		{Kind: wasmgen.Stack, N: 1000, Ops: 700},
		// Modules near the limit of the whole: copies of the above.
		{Kind: wasmgen.Seq, N: 1100, Locals: 20, Ops: 1, Funcs: 6},
		{Kind: wasmgen.SeqBlocks, N: 4096, Funcs: 11},
		{Kind: wasmgen.Live, N: 200, Locals: 1000, Funcs: 7},
		{Kind: wasmgen.Live, N: 40, Locals: 2000, Funcs: 7},
		{Kind: wasmgen.Stack, N: 1000, Ops: 700, Funcs: 6},
		{Kind: wasmgen.NestBlocks, N: 2048, Locals: 40, Ops: 1, Funcs: 6},
		// Beyond the limits (refused at load), for comparison.
		{Kind: wasmgen.Nest, N: 500, Locals: 50, Ops: 1},
		{Kind: wasmgen.NestBlocks, N: 4000, Locals: 20, Ops: 1},
		{Kind: wasmgen.Seq, N: 4000, Locals: 5, Ops: 1},
		{Kind: wasmgen.Live, N: 500, Locals: 900, Funcs: 7},
		{Kind: wasmgen.Live, N: 60, Locals: 4000},
	} {
		cases = append(cases, bcase{"gen/" + s.String(), wasmgen.Module(s)})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m, err := Instrument(c.wasm, Limits{})
			if err != nil {
				b.Fatal(err)
			}
			_, limitErr := Instrument(c.wasm, DefaultLimits())
			accepted := 0.0
			if limitErr == nil {
				accepted = 1
			}
			var wall1, wall2, cpu1 time.Duration
			for b.Loop() {
				w, c := compileOnce(b, m.Wasm, 1)
				wall1 += w
				cpu1 += c
				w, _ = compileOnce(b, m.Wasm, 2)
				wall2 += w
			}
			n := float64(b.N)
			b.ReportMetric(float64(m.Cost)/1e6, "Mcost")
			b.ReportMetric(accepted, "accepted")
			b.ReportMetric(float64(wall1.Milliseconds())/n, "ms-1worker")
			b.ReportMetric(float64(cpu1.Milliseconds())/n, "cpu-ms-1worker")
			b.ReportMetric(float64(wall2.Milliseconds())/n, "ms-2workers")
		})
	}
}

// compileOnce compiles wasm with the given workers, without a cache, and
// returns the wall and CPU time it took.
func compileOnce(b *testing.B, wasm []byte, workers int) (wall, cpu time.Duration) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer r.Close(ctx)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	cm, err := r.CompileModule(experimental.WithCompilationWorkers(ctx, workers), wasm)
	wall = time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	if err != nil {
		b.Fatal(err)
	}
	cm.Close(ctx)
	cpu = time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	return wall, cpu
}
