package sandbox

import (
	"context"
	"sync"
	"testing"
	"time"
)

// forever is a clock that moves a minute per reading, so rate limits never
// bite in benchmarks.
func forever() func() time.Time {
	var mu sync.Mutex
	now := time.Unix(0, 0)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Minute)
		return now
	}
}

func benchCall(b *testing.B, poolSize int, ready bool) {
	r := newRuntime(b, Config{PoolSize: poolSize, Now: forever()}, echoTool(b))
	ctx := context.Background()
	c := call("echo", `{"text":"hello"}`)
	if _, err := r.Run(ctx, c); err != nil {
		b.Fatal(err)
	}
	var p *pool
	if ready {
		p = r.pool(r.tools["echo"])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if p != nil {
			// Outside the timer, wait for the filler to have an
			// instance ready: take one and put it back, or drop it
			// if the filler has filled the slot meanwhile.
			b.StopTimer()
			inst := <-p.ch
			select {
			case p.ch <- inst:
			default:
				inst.mod.Close(ctx)
			}
			b.StartTimer()
		}
		res, err := r.Run(ctx, c)
		if err != nil || res.IsError {
			b.Fatalf("%+v, %v", res, err)
		}
	}
}

// BenchmarkCallPooled is the latency of one call when the pool has a
// pre-initialised instance ready (calls slower than the refill).
func BenchmarkCallPooled(b *testing.B) { benchCall(b, 2, true) }

// BenchmarkCallPooledSaturated is back-to-back calls with the pool on: the
// filler competes with the calls and the pool is often empty.
func BenchmarkCallPooledSaturated(b *testing.B) { benchCall(b, 2, false) }

// BenchmarkCallUnpooled instantiates a fresh instance on the call's path.
func BenchmarkCallUnpooled(b *testing.B) { benchCall(b, -1, false) }

// BenchmarkStartWarmCache is New over a warm cache directory with one tool,
// which costs next to nothing (nothing is compiled until first use).
func BenchmarkStartWarmCache(b *testing.B) {
	benchStart(b, false)
}

// BenchmarkFirstLoadWarmCache is New and the first use of a tool over a
// warm cache directory: build the wazero runtime, instantiate WASI and the
// host module, and load the compiled module from the file cache.
func BenchmarkFirstLoadWarmCache(b *testing.B) {
	benchStart(b, true)
}

func benchStart(b *testing.B, load bool) {
	ctx := context.Background()
	tools := []Tool{echoTool(b)}
	dir := b.TempDir()
	warm, err := New(ctx, Config{CacheDir: dir, Tools: tools})
	if err != nil {
		b.Fatal(err)
	}
	if err := warm.Load(ctx, "echo"); err != nil {
		b.Fatal(err)
	}
	warm.Close(ctx)
	b.ResetTimer()
	for b.Loop() {
		r, err := New(ctx, Config{CacheDir: dir, Tools: tools})
		if err != nil {
			b.Fatal(err)
		}
		if load {
			if err := r.Load(ctx, "echo"); err != nil {
				b.Fatal(err)
			}
		}
		r.Close(ctx)
	}
}
