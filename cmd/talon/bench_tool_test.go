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

// BenchmarkToolCall is one html_text call through the sandbox (fresh
// pre-initialised instance from the pool, deadline enforced) against the
// same Go package built natively and run by fork/exec with the same input
// on stdin, in the same run. Target: sandboxed p50 <= fork/exec p50.
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

	var want string
	// paced leaves the pool's filler time to refill between calls (the
	// common case: calls are far apart); back-to-back does not.
	for _, mode := range []string{"paced", "back-to-back"} {
		b.Run("sandbox-"+mode, func(b *testing.B) {
			r := toolBenchSandbox(b, cacheDir, 2)
			ctx := context.Background()
			if res, err := r.Call(ctx, call); err != nil || res.IsError {
				b.Fatalf("%+v %v", res, err)
			} else {
				want = res.Content
			}
			var ds []time.Duration
			b.ResetTimer()
			for b.Loop() {
				if mode == "paced" {
					b.StopTimer()
					time.Sleep(25 * time.Millisecond) // longer than one instantiation (~10 ms)
					b.StartTimer()
				}
				start := time.Now()
				res, err := r.Call(ctx, call)
				ds = append(ds, time.Since(start))
				if err != nil || res.IsError {
					b.Fatalf("%+v %v", res, err)
				}
			}
			reportPercentiles(b, ds)
		})
	}

	bin := filepath.Join(b.TempDir(), "html_text")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./sandbox/tools/html_text")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for _, mode := range []string{"paced", "back-to-back"} {
		b.Run("native-fork-exec-"+mode, func(b *testing.B) {
			var ds []time.Duration
			b.ResetTimer()
			for b.Loop() {
				if mode == "paced" {
					b.StopTimer()
					time.Sleep(25 * time.Millisecond) // as the sandbox's paced calls
					b.StartTimer()
				}
				start := time.Now()
				cmd := exec.Command(bin)
				cmd.Stdin = bytes.NewReader(input)
				out, err := cmd.Output()
				ds = append(ds, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				var env struct{ OK json.RawMessage }
				if json.Unmarshal(out, &env) != nil || (want != "" && string(env.OK) != want) {
					b.Fatalf("native output differs from the sandbox's: %s", out)
				}
			}
			reportPercentiles(b, ds)
		})
	}
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

// BenchmarkToolFirstCall is the first html_text call after a restart,
// from New to the answer, over a warm cache directory: "on-path" when the
// call comes before any warming, instrumenting as before the instrumented
// modules were cached; "cached" the same with them; "warmed" when the
// background warming (WarmAfter, its time reported as warm-ms and not
// counted) has loaded the tool. The reference, in the same run, is one
// fork/exec of the same Go code built natively. Target: warmed <= 30 ms.
func BenchmarkToolFirstCall(b *testing.B) {
	ctx := context.Background()
	cacheDir := b.TempDir()
	ts, err := sandbox.LoadTools(tools.CachedFS(filepath.Join(cacheDir, "builtin-tools")), "")
	if err != nil {
		b.Fatal(err)
	}
	args, _ := json.Marshal(map[string]string{"html": "<title>T</title><p>Hello &amp; welcome.</p>"})
	call := agent.ToolCall{ID: "first", Name: "html_text", Args: args, Key: agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "bench"}}}
	start := func(b *testing.B, warm bool) (*sandbox.Runtime, time.Duration) {
		r, err := sandbox.New(ctx, sandbox.Config{Tools: ts, CacheDir: cacheDir, PoolSize: 2})
		if err != nil {
			b.Fatal(err)
		}
		if !warm {
			return r, 0
		}
		t0 := time.Now()
		ready := make(chan struct{})
		close(ready)
		r.WarmAfter(ready, 0)
		for r.Stats().Loaded == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		return r, time.Since(t0)
	}
	first := func(b *testing.B, r *sandbox.Runtime) {
		if res, err := r.Call(ctx, call); err != nil || res.IsError || !strings.Contains(res.Content, "Hello") {
			b.Fatalf("%+v %v", res, err)
		}
	}
	r, _ := start(b, false) // fill the cache, and mark html_text used
	first(b, r)
	r.Close(ctx)
	for _, mode := range []string{"on-path-instrumenting", "on-path-cached", "warmed"} {
		b.Run(mode, func(b *testing.B) {
			var ds, warms []time.Duration
			for b.Loop() {
				b.StopTimer()
				if mode == "on-path-instrumenting" {
					os.RemoveAll(filepath.Join(cacheDir, "instrumented"))
				}
				var r *sandbox.Runtime
				if mode == "warmed" {
					var w time.Duration
					r, w = start(b, true)
					warms = append(warms, w)
				}
				b.StartTimer()
				t0 := time.Now()
				if r == nil {
					r, _ = start(b, false)
				}
				first(b, r)
				ds = append(ds, time.Since(t0))
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
	bin := filepath.Join(b.TempDir(), "html_text")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./sandbox/tools/html_text")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
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
