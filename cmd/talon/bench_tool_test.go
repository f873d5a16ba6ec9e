package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/tools"
)

// benchHTML is the html_text input of the benchmarks: a small article page.
var benchHTML = "<!doctype html><html><head><title>Bench</title><style>p{}</style></head><body><nav>a | b</nav>" +
	strings.Repeat("<h2>Section</h2><p>Some <b>bold</b> text &amp; an <a href=x>link</a>, then more words.</p>", 40) +
	"</body></html>"

// toolBenchSandbox starts a sandbox serving the built-in tools on cacheDir
// and loads html_text.
func toolBenchSandbox(b *testing.B, cacheDir string, poolSize int) *sandbox.Runtime {
	b.Helper()
	ctx := context.Background()
	ts, err := sandbox.LoadTools(tools.FS, "")
	if err != nil {
		b.Fatal(err)
	}
	r, err := sandbox.New(ctx, sandbox.Config{Tools: ts, CacheDir: cacheDir, PoolSize: poolSize, Now: benchClock()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(context.Background()) })
	if err := r.Load(ctx, "html_text"); err != nil {
		b.Fatal(err)
	}
	return r
}

// benchClock moves a minute per reading so rate limits never bite.
func benchClock() func() time.Time {
	now := time.Unix(0, 0)
	return func() time.Time { now = now.Add(time.Minute); return now }
}

// reportPercentiles reports the p50 and p99 of ds in milliseconds.
func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// BenchmarkToolCall is one html_text call through the sandbox (a fresh
// pre-initialised instance from the pool, deadline enforced) against the
// same Go package built natively and run by fork/exec with the same input
// on stdin, in the same run: each sub-benchmark alternates blocks of
// toolBenchBlock sandboxed calls and toolBenchBlock fork/execs, so that
// both meet the same load on the machine. b.N is the number of calls of
// each. Targets: sandboxed p50 <= fork/exec p50 ("paced", calls 25 ms
// apart, which leaves the pool's filler time to refill: the common case)
// and sandboxed p99 <= fork/exec p99 ("back-to-back", where the pool runs
// dry and each call waits for, or makes, its own instance).
//
// It reports the sandboxed call's p50-ms and p99-ms, fork/exec's
// (exec-p50-ms, exec-p99-ms), their ratios (p50-ratio, p99-ratio: below 1
// is the sandbox faster), and the CPU time per call of each (cpu-ms,
// exec-cpu-ms: the whole test process's, the pool's filler and garbage
// collection included, and for fork/exec the child's too), and the share
// of sandboxed calls that found the pool empty and made their own
// instance (miss-%).
func BenchmarkToolCall(b *testing.B) {
	// The arguments as a model writes them (no \u003c escapes), and the
	// input the sandbox hands the guest, given to the native run too.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"html": benchHTML}); err != nil {
		b.Fatal(err)
	}
	args := bytes.TrimSpace(buf.Bytes())
	input := []byte(`{"tool":"html_text","args":` + string(args) + `}`)
	cacheDir := b.TempDir()
	call := agent.ToolCall{ID: "bench", Name: "html_text", Args: args, Key: agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "bench"}}}

	bin := filepath.Join(b.TempDir(), "html_text")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./sandbox/tools/html_text")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}

	for _, mode := range []string{"paced", "back-to-back"} {
		b.Run(mode, func(b *testing.B) {
			const poolSize = 2
			r := toolBenchSandbox(b, cacheDir, poolSize)
			ctx := context.Background()
			res, err := r.Call(ctx, call)
			if err != nil || res.IsError {
				b.Fatalf("%+v %v", res, err)
			}
			want := res.Content
			pace := func() {
				if mode == "paced" {
					time.Sleep(25 * time.Millisecond) // longer than one instantiation
				}
			}
			calls := 1
			sandboxed := func() time.Duration {
				calls++
				pace()
				start := time.Now()
				res, err := r.Call(ctx, call)
				d := time.Since(start)
				if err != nil || res.IsError || res.Content != want {
					b.Fatalf("%+v %v", res, err)
				}
				return d
			}
			native := func() time.Duration {
				pace()
				start := time.Now()
				cmd := exec.Command(bin)
				cmd.Stdin = bytes.NewReader(input)
				out, err := cmd.Output()
				d := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				var env struct{ OK json.RawMessage }
				if json.Unmarshal(out, &env) != nil || string(env.OK) != want {
					b.Fatalf("native output differs from the sandbox's: %s", out)
				}
				return d
			}
			var sb, nb toolBenchSide
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(toolBenchBlock, b.N-done)
				if mode == "back-to-back" {
					// The pool refilled while fork/exec ran: use up its
					// reserve first, untimed, so the block measures calls
					// that find it as back-to-back calls do.
					for range poolSize {
						sandboxed()
					}
				}
				sb.block(n, sandboxed)
				nb.block(n, native)
				done += n
			}
			b.StopTimer()
			sp50, sp99 := sb.percentiles()
			np50, np99 := nb.percentiles()
			b.ReportMetric(sp50, "p50-ms")
			b.ReportMetric(sp99, "p99-ms")
			b.ReportMetric(np50, "exec-p50-ms")
			b.ReportMetric(np99, "exec-p99-ms")
			b.ReportMetric(sp50/np50, "p50-ratio")
			b.ReportMetric(sp99/np99, "p99-ratio")
			b.ReportMetric(sb.cpuMS(), "cpu-ms")
			b.ReportMetric(nb.cpuMS(), "exec-cpu-ms")
			st := r.Stats()
			b.ReportMetric(100*float64(st.PoolMisses)/float64(calls), "miss-%")
		})
	}
}

// toolBenchBlock is the number of calls of one side of BenchmarkToolCall
// before the other side runs as many.
const toolBenchBlock = 50

// toolBenchSide is what one side of BenchmarkToolCall measured.
type toolBenchSide struct {
	ds  []time.Duration
	cpu time.Duration // CPU time of the process and its reaped children
}

// block runs call n times and records its latencies and the CPU time spent.
func (s *toolBenchSide) block(n int, call func() time.Duration) {
	c0 := processCPU()
	for range n {
		s.ds = append(s.ds, call())
	}
	s.cpu += processCPU() - c0
}

// percentiles returns the p50 and p99 of s in milliseconds.
func (s *toolBenchSide) percentiles() (p50, p99 float64) {
	ds := slices.Clone(s.ds)
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond) }
	return at(0.50), at(0.99)
}

// cpuMS is the CPU time per call in milliseconds.
func (s *toolBenchSide) cpuMS() float64 {
	return float64(s.cpu) / float64(time.Millisecond) / float64(len(s.ds))
}

// processCPU is the user and system time of this process and of its
// children that have been waited for.
func processCPU() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// BenchmarkToolStartWarm is New plus the first Load of each built-in tool
// over a warm cache directory (compiled code, and, as in talon, the
// decompressed modules): what a restart pays on a tool's first use when
// the call comes before the background warming. "instrumenting" removes
// the instrumented modules before each start, as before they were cached.
func BenchmarkToolStartWarm(b *testing.B) {
	ctx := context.Background()
	cacheDir := b.TempDir()
	ts, err := sandbox.LoadTools(tools.CachedFS(filepath.Join(cacheDir, "builtin-tools")), "")
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range ts {
		name := t.Manifest.Name
		m := *t.Manifest
		m.Enabled = true // measure the disabled ones too
		t.Manifest = &m
		load := func(b *testing.B) {
			r, err := sandbox.New(ctx, sandbox.Config{Tools: []sandbox.Tool{t}, CacheDir: cacheDir})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(ctx)
			if err := r.Load(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
		for _, mode := range []string{"instrumenting", "cached"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				load(b) // warm the cache
				for b.Loop() {
					if mode == "instrumenting" {
						b.StopTimer()
						os.RemoveAll(filepath.Join(cacheDir, "instrumented"))
						b.StartTimer()
					}
					load(b)
				}
			})
		}
	}
}

// BenchmarkToolFirstCall is the first call of a tool after a restart,
// from the moment a call can come to the answer:
//   - cold-disk-cache: an empty cache directory (the first start ever, or
//     a new Talon), New and at once the html_text call, which reads,
//     instruments and compiles the module;
//   - on-path: a warm cache directory, New and at once the call, before
//     any background warming (what a call that races it pays at most);
//   - warmed: New, then the background warming of every enabled tool
//     (WarmAfter, as talon run does once ready; its time is reported as
//     warm-ms and not counted), then the html_text call;
//   - warmed-each-tool: the same, then the first call of each enabled
//     built-in (github, html_text, http_fetch; the first and last answer
//     with the tool's own error about missing arguments), each counted.
//
// The references, in the same run: one fork/exec of the same Go code
// built natively, and `talon version` exec'd (a process start). Run it
// with -count N to interleave the rounds. Target (issue 18): warmed ≤ 30 ms.
func BenchmarkToolFirstCall(b *testing.B) {
	ctx := context.Background()
	cacheDir := b.TempDir()
	loadTs := func(b *testing.B) []sandbox.Tool {
		ts, err := sandbox.LoadTools(tools.CachedFS(filepath.Join(cacheDir, "builtin-tools")), "")
		if err != nil {
			b.Fatal(err)
		}
		return ts
	}
	var enabled []string // github, html_text and http_fetch today
	for _, t := range loadTs(b) {
		if t.Manifest.Enabled {
			enabled = append(enabled, t.Manifest.Name)
		}
	}
	principal := agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "bench"}}
	args, _ := json.Marshal(map[string]string{"html": "<title>T</title><p>Hello &amp; welcome.</p>"})
	htmlCall := agent.ToolCall{ID: "first", Name: "html_text", Args: args, Key: principal}
	start := func(b *testing.B, warm bool) (*sandbox.Runtime, time.Duration) {
		r, err := sandbox.New(ctx, sandbox.Config{Tools: loadTs(b), CacheDir: cacheDir, PoolSize: 2})
		if err != nil {
			b.Fatal(err)
		}
		if !warm {
			return r, 0
		}
		t0 := time.Now()
		ready := make(chan struct{})
		close(ready)
		<-r.WarmAfter(ready, 0, 0)
		if st := r.Stats(); st.Loaded != int64(len(enabled)) || st.Compiled != 0 {
			b.Fatalf("after warming: %+v, want the enabled built-ins %v loaded from the cache", st, enabled)
		}
		return r, time.Since(t0)
	}
	first := func(b *testing.B, r *sandbox.Runtime, c agent.ToolCall) {
		res, err := r.Call(ctx, c)
		if err != nil || (c.Name == "html_text" && (res.IsError || !strings.Contains(res.Content, "Hello"))) {
			b.Fatalf("%s: %+v %v", c.Name, res, err)
		}
	}
	fill := func(b *testing.B) { // the cache as the first start leaves it
		r, _ := start(b, false)
		defer r.Close(ctx)
		for _, n := range enabled {
			if err := r.Load(ctx, n); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, mode := range []string{"cold-disk-cache", "on-path", "warmed", "warmed-each-tool"} {
		b.Run(mode, func(b *testing.B) {
			if mode != "cold-disk-cache" {
				fill(b) // before b.Loop, which starts the timer
			}
			var ds, warms []time.Duration
			for b.Loop() {
				b.StopTimer()
				if mode == "cold-disk-cache" {
					os.RemoveAll(cacheDir)
				}
				var r *sandbox.Runtime
				if strings.HasPrefix(mode, "warmed") {
					var w time.Duration
					r, w = start(b, true)
					warms = append(warms, w)
				}
				b.StartTimer()
				if mode == "warmed-each-tool" {
					for _, n := range enabled {
						c := htmlCall
						if n != "html_text" {
							c = agent.ToolCall{ID: "first", Name: n, Args: json.RawMessage(`{}`), Key: principal}
						}
						t0 := time.Now()
						first(b, r, c)
						ds = append(ds, time.Since(t0))
					}
				} else {
					t0 := time.Now()
					if r == nil {
						r, _ = start(b, false)
					}
					first(b, r, htmlCall)
					ds = append(ds, time.Since(t0))
				}
				b.StopTimer()
				r.Close(ctx)
				b.StartTimer()
			}
			reportPercentiles(b, ds)
			if len(warms) > 0 {
				slices.Sort(warms)
				b.ReportMetric(float64(warms[len(warms)/2])/float64(time.Millisecond), "warm-ms")
			}
		})
	}
	dir := b.TempDir()
	bin, talon := filepath.Join(dir, "html_text"), filepath.Join(dir, "talon")
	for _, build := range []*exec.Cmd{
		exec.Command("go", "build", "-trimpath", "-o", bin, "./sandbox/tools/html_text"),
		exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", talon, "./cmd/talon"),
	} {
		build.Dir = filepath.Join("..", "..")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	}
	input := []byte(`{"tool":"html_text","args":` + string(args) + `}`)
	b.Run("reference-native-fork-exec", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			t0 := time.Now()
			cmd := exec.Command(bin)
			cmd.Stdin = bytes.NewReader(input)
			if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "Hello") {
				b.Fatalf("%s %v", out, err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportPercentiles(b, ds)
	})
	b.Run("reference-talon-version", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if out, err := exec.Command(talon, "version").Output(); err != nil || len(out) == 0 {
				b.Fatalf("%s %v", out, err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportPercentiles(b, ds)
	})
}

// BenchmarkToolPooledMemory reports what one pre-initialised html_text
// instance holds, from the difference between a pool of 9 and a pool of 1:
// the Go heap (MiB-heap: wazero's instance; the linear memory is mapped
// outside the heap where the system allows) and what the sandbox's memory
// budget charges for it (MiB-charged: its linear memory's size and its
// tables, an upper bound of the pages the guest touched). Run it with
// -benchtime 1x.
func BenchmarkToolPooledMemory(b *testing.B) {
	cacheDir := b.TempDir()
	type use struct{ heap, charged int64 }
	with := func(pool int) use {
		r := toolBenchSandbox(b, cacheDir, pool)
		args, _ := json.Marshal(map[string]any{"html": "<p>x</p>"})
		if _, err := r.Call(context.Background(), agent.ToolCall{ID: "m", Name: "html_text", Args: args,
			Key: agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "bench"}}}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second) // the filler fills the pool
		if got := r.Stats().Pooled; got != pool {
			b.Fatalf("pool of %d holds %d instances", pool, got)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u := use{heap: int64(ms.HeapInuse), charged: int64(r.Stats().Memory)}
		r.Close(context.Background())
		return u
	}
	// Measured once, whatever b.N: each measurement takes seconds.
	one, nine := with(1), with(9)
	for b.Loop() {
	}
	per := func(a, b int64) float64 { return float64(b-a) / 8 / (1 << 20) }
	b.ReportMetric(per(one.heap, nine.heap), "MiB-heap/instance")
	b.ReportMetric(per(one.charged, nine.charged), "MiB-charged/instance")
}
