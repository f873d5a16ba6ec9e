package sandbox

import (
	"context"
	"testing"
	"time"
)

// An instance made on the recycled memory of a closed one sees none of its
// data: the scribble guest checks that its 12 pages are zero but for its
// own data and input, then writes over all of them, call after call. With
// a small keep, the pages above it are given back to the system instead of
// cleared, and read as zeros all the same.
func TestRecycledMemoryIsClean(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep uint64
	}{{"cleared", defaultKeepResident}, {"given back above keep", 2 * 65536}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, Config{PoolSize: 2, Now: forever()}, testTool(t, "scribble", ""))
			r.slots.keep = tc.keep
			for i := range 12 {
				res, err := r.Call(context.Background(), call("scribble", `{"i":1}`))
				if err != nil || res.IsError || res.Content != `"clean"` {
					t.Fatalf("call %d = %+v, %v; want \"clean\"", i, res, err)
				}
			}
			if st := r.Stats(); st.Reused == 0 {
				t.Errorf("Stats = %+v: no instance was made on a recycled memory, the test proves nothing", st)
			}
		})
	}
}

// Kept memories count against the budget, are given back when a running
// call needs the room (it does not wait for them), and leave nothing
// charged once the pools are idle or the Runtime is closed.
func TestKeptMemoryAccounting(t *testing.T) {
	ctx := context.Background()
	// One pooled instance (64 KiB) and a call's kept memory (12 pages)
	// fill 832 KiB of the 1 MiB budget: the second call, whose instance
	// grows to 12 pages, fits only if the kept memory is given back. The
	// pooled instance is the warming's (made before any memory was kept),
	// set aside while a call makes its own (a miss gives no token to the
	// filler, which would take the kept memory).
	r := newRuntime(t, Config{PoolSize: 1, PoolIdle: 300 * time.Millisecond, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "scribble", "limits: {deadline: 2s}\n"))
	if err := r.Load(ctx, "scribble"); err != nil {
		t.Fatal(err)
	}
	r.warmPool(r.tools["scribble"])
	if st := r.Stats(); st.Pooled != 1 {
		t.Fatalf("after warmPool: %+v, want one pooled instance", st)
	}
	r.mu.Lock()
	p := r.pools["scribble"]
	r.mu.Unlock()
	inst := <-p.ch
	if res, err := r.Call(ctx, call("scribble", `{}`)); err != nil || res.Content != `"clean"` {
		t.Fatalf("first call = %+v, %v", res, err)
	}
	p.ch <- inst
	if st := r.Stats(); st.Kept != 1 || st.Pooled != 1 {
		t.Fatalf("Stats = %+v, want a pooled instance and a kept memory", st)
	} else if want := uint64(12*65536 + 65536); st.Memory != want {
		t.Errorf("Memory = %d with a pooled instance and a kept memory, want %d (12 pages kept + 1 pooled)", st.Memory, want)
	}
	res, err := r.Call(ctx, call("scribble", `{}`))
	if err != nil || res.Content != `"clean"` {
		t.Fatalf("second call = %+v, %v; want it served by giving back the kept memory", res, err)
	}
	if st := r.Stats(); st.MemoryWaits != 0 || st.MemoryPeak > st.MemoryLimit {
		t.Errorf("Stats = %+v: the call waited for memory that was only kept, or the budget was exceeded", st)
	}
	waitFor(t, "the idle pool and kept memories to be given back", func() bool {
		st := r.Stats()
		return st.Pooled == 0 && st.Kept == 0 && st.Memory == 0
	})

	// Again a pooled instance and a kept memory (in a budget with room
	// for both), then Close.
	r.Close(ctx)
	r = newRuntime(t, Config{PoolSize: 1, Now: forever()}, testTool(t, "scribble", "limits: {deadline: 2s}\n"))
	if _, err := r.Call(ctx, call("scribble", `{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool to fill", func() bool { return r.Stats().Pooled == 1 })
	r.mu.Lock()
	p = r.pools["scribble"]
	r.mu.Unlock()
	inst = <-p.ch
	if _, err := r.Call(ctx, call("scribble", `{}`)); err != nil {
		t.Fatal(err)
	}
	p.ch <- inst
	if st := r.Stats(); st.Kept == 0 || st.Pooled != 1 {
		t.Fatalf("Stats = %+v, want a pooled instance and a kept memory", st)
	}
	r.Close(ctx)
	if st := r.Stats(); st.Kept != 0 || st.Memory != 0 {
		t.Errorf("after Close: %+v, want nothing kept or charged", st)
	}
}
