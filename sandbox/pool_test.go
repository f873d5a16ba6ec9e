package sandbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// filledPool returns the echo tool's pool of r, filled with its one instance,
// after a first call has made it.
func filledPool(t *testing.T, r *Runtime) *pool {
	t.Helper()
	if res, err := r.Call(context.Background(), call("echo", `{"i":0}`)); err != nil || res.Content != `{"i":0}` {
		t.Fatalf("first call = %+v, %v", res, err)
	}
	waitFor(t, "the pool to fill", func() bool { return r.Stats().Pooled == 1 })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pools["echo"]
}

// A call served from the pool is not a miss; one that finds it empty
// makes its own instance and is counted (Stats.PoolMisses).
func TestPoolMisses(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 1, PoolIdle: -1}, echoTool(t))
	p := filledPool(t, r)
	before := r.Stats()
	if res, err := r.Call(context.Background(), call("echo", `{"i":1}`)); err != nil || res.Content != `{"i":1}` {
		t.Fatalf("pooled call = %+v, %v", res, err)
	}
	if st := r.Stats(); st.PoolMisses != before.PoolMisses {
		t.Errorf("PoolMisses = %d after a call served from a full pool, want %d", st.PoolMisses, before.PoolMisses)
	}
	waitFor(t, "the pool to refill", func() bool { return r.Stats().Pooled == 1 })
	// Empty the pool, as back-to-back calls do (the filler has no token
	// meanwhile, so it makes none).
	inst := <-p.ch
	defer func() { p.ch <- inst }()
	if res, err := r.Call(context.Background(), call("echo", `{"i":2}`)); err != nil || res.Content != `{"i":2}` {
		t.Fatalf("call on an empty pool = %+v, %v", res, err)
	}
	if st := r.Stats(); st.PoolMisses != before.PoolMisses+1 {
		t.Errorf("PoolMisses = %d after a call found the pool empty, want %d", st.PoolMisses, before.PoolMisses+1)
	}
}

// Back-to-back calls from several goroutines take instances from the
// pool and make their own, on recycled memories; none sees another's data (the scribble guest checks its 12 pages are zero
// but for its own data and input, then writes over all of them).
func TestPoolBackToBackIsolated(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2, Now: forever()}, testTool(t, "scribble", "limits: {per_minute: 100000}\n"))
	var wg sync.WaitGroup
	errs := make(chan error, 4*20)
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				res, err := r.Call(context.Background(), call("scribble", fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)))
				if err != nil || res.IsError || res.Content != `"clean"` {
					errs <- fmt.Errorf("goroutine %d call %d = %+v, %v; want \"clean\"", g, i, res, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := r.Stats()
	if st.Reused == 0 {
		t.Errorf("Stats = %+v: no instance was made on a recycled memory, the test proves nothing", st)
	}
	if st.Instances < 80 {
		t.Errorf("Instances = %d for 80 calls: an instance served more than one call", st.Instances)
	}
}

// A tool's first call does not share the CPU with its pool's filling: the
// pool makes no instance until that call has returned, then fills.
func TestPoolFillsAfterTheFirstCall(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2, Now: forever()}, testTool(t, "sleep", "limits: {deadline: 1m}\n"))
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		r.Call(ctx, call("sleep", `{}`))
	}()
	waitFor(t, "the first call's instance", func() bool { return r.Stats().Instances == 1 })
	time.Sleep(100 * time.Millisecond) // the filler had time to start, had it been told to
	if st := r.Stats(); st.Instances != 1 || st.Pooled != 0 || st.Pools != 1 {
		t.Errorf("while the first call runs: %+v, want its instance alone", st)
	}
	cancel()
	<-returned
	waitFor(t, "the pool to fill after the first call", func() bool { return r.Stats().Pooled == 2 })
}

// The warming leaves one instance of each enabled tool in its pool: the
// tool's first call takes it (no miss), then the pool fills to its size.
func TestWarmLeavesOneInstancePerTool(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, Config{PoolSize: 2, PoolIdle: -1, CacheDir: t.TempDir()}, echoTool(t), testTool(t, "state", ""))
	closed := make(chan struct{})
	close(closed)
	waitWarm(t, r.WarmAfter(closed, 0, 0))
	if st := r.Stats(); st.Loaded != 2 || st.Pools != 2 || st.Pooled != 2 || st.Instances != 2 || st.Memory == 0 {
		t.Fatalf("after warming: %+v, want echo and state loaded with one pooled instance each, charged", st)
	}
	if res, err := r.Call(ctx, call("echo", `{"i":1}`)); err != nil || res.Content != `{"i":1}` {
		t.Fatalf("first call = %+v, %v", res, err)
	}
	// The pool fills as soon as the call returns, so the count is read
	// once it has: two warmed, two made by echo's filling, none for the
	// call itself (a call that missed would have made a fifth).
	waitFor(t, "echo's pool to fill", func() bool { return r.Stats().Pooled == 3 })
	if st := r.Stats(); st.PoolMisses != 0 || st.Instances != 4 {
		t.Errorf("after the first call and the filling: %+v, want the call served by the warmed instance (no miss, 4 instances)", st)
	}
}
