//go:build unix

package sandbox

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// processCPU is the user and system time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInstance is the making of one html_text instance on a kept
// memory and its close, with _initialize run ("initialize") or restored
// from the tool's snapshot ("snapshot"); "+call" adds the call.
func BenchmarkInstance(b *testing.B) {
	for _, withCall := range []bool{false, true} {
		for _, mode := range []string{"initialize", "snapshot"} {
			name := mode
			if withCall {
				name += "+call"
			}
			b.Run(name, func(b *testing.B) {
				r := newRuntime(b, Config{PoolSize: 1, PoolIdle: -1, Now: forever()}, htmlTextTool(b))
				r.noSnapshots = mode == "initialize"
				r.poolSize = 0 // no filler: every call instantiates
				ctx := context.Background()
				c := call("html_text", benchPage)
				if res, err := r.Call(ctx, c); err != nil || res.IsError {
					b.Fatalf("%+v %v", res, err)
				}
				t := r.tools["html_text"]
				if mode == "snapshot" && t.snap.Load() == nil {
					b.Fatal("no snapshot taken")
				}
				cpu0 := processCPU()
				for b.Loop() {
					if withCall {
						if res, err := r.Call(ctx, c); err != nil || res.IsError {
							b.Fatalf("%+v %v", res, err)
						}
						continue
					}
					inst, err := r.instantiate(ctx, t, func(n uint64) error { return r.quota.acquire(ctx, alice, n) })
					if err != nil {
						b.Fatal(err)
					}
					inst.close(ctx)
				}
				b.ReportMetric(float64(processCPU()-cpu0)/1e6/float64(b.N), "cpu-ms")
			})
		}
	}
}
