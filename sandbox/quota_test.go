package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func user(name string) agent.Principal {
	return agent.Principal{Platform: "slack", Workspace: "T1", User: name}
}

func callAs(p agent.Principal, name, args string) agent.ToolCall {
	return agent.ToolCall{ID: "c", Name: name, Args: []byte(args), Key: agent.SessionKey{Principal: p}}
}

// sleepers starts n calls of the sleep tool (one 64 KiB instance each,
// held until ctx ends) and waits until they hold their memory. Memories
// kept for reuse do not count: the sleepers may take their room.
func sleepers(t *testing.T, ctx context.Context, r *Runtime, n int) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	inUse := func() uint64 { st := r.Stats(); return st.Memory - st.KeptMemory }
	before := inUse()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Call(ctx, callAs(user(fmt.Sprintf("S%d", i)), "sleep", `{}`))
		}()
	}
	waitFor(t, "the sleepers' memory", func() bool { return inUse() >= before+uint64(n)*65536 })
	return &wg
}

// Many users calling tools at once: the memory of the live instances, as
// the runtime counts it, never exceeds the budget. 40 users each start a
// call that holds its instance until its deadline (sleep) and one that
// returns at once (echo), in room for 16 instances.
func TestMemoryBudgetNeverExceeded(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "sleep", "limits: {deadline: 300ms, per_minute: 100000}\n"), echoTool(t))
	ctx := context.Background()
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st := r.Stats(); st.Memory > st.MemoryLimit {
				t.Errorf("memory %d above the budget %d", st.Memory, st.MemoryLimit)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	kinds := map[string]int{}
	for u := range 40 {
		for _, tool := range []string{"sleep", "echo"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.Call(ctx, callAs(user(fmt.Sprintf("U%d", u)), tool, `{"u":1}`))
				kind := "ok"
				switch {
				case errors.Is(err, ErrDeadline):
					kind = "deadline"
				case errors.Is(err, ErrMemoryBusy):
					kind = "memory busy"
				case err != nil || res.IsError:
					kind = fmt.Sprint(res, err)
				}
				mu.Lock()
				kinds[tool+": "+kind]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	for k := range kinds {
		switch k {
		case "sleep: deadline", "sleep: memory busy", "echo: ok":
		default:
			t.Errorf("unexpected outcome %q (%d calls)", k, kinds[k])
		}
	}
	if kinds["echo: ok"] != 40 {
		t.Errorf("outcomes %v: want every echo call served", kinds)
	}
	st := r.Stats()
	if st.MemoryLimit != mib {
		t.Errorf("MemoryLimit = %d, want %d", st.MemoryLimit, mib)
	}
	if st.MemoryPeak != st.MemoryLimit {
		t.Errorf("MemoryPeak = %d, want the whole budget %d used at some point: the test proves nothing otherwise", st.MemoryPeak, st.MemoryLimit)
	}
	if st.MemoryWaits < 24 {
		t.Errorf("%d calls waited for memory; 80 calls in room for 16, 40 of them holding their instance, want ≥ 24", st.MemoryWaits)
	}
}

// A call that finds the budget full waits within its deadline, then ends
// with a message that says what to do; the memory it waited for is not
// leaked.
func TestMemoryBudgetWaitEndsAtDeadline(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 0, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "sleep", "limits: {deadline: 1m, per_minute: 100000}\n"),
		testTool(t, "echo", "limits: {deadline: 150ms, per_minute: 100000}\n"))
	ctx, cancel := context.WithCancel(context.Background())
	wg := sleepers(t, ctx, r, 16) // 16 × 64 KiB: the whole MiB
	defer wg.Wait()
	defer cancel()

	// The turn has 400 ms; the tool's own 150 ms do not count the wait.
	start := time.Now()
	turn, cancelTurn := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancelTurn()
	_, err := r.Call(turn, callAs(user("U1"), "echo", `{}`))
	waited := time.Since(start)
	if !errors.Is(err, ErrMemoryBusy) {
		t.Fatalf("err = %v, want ErrMemoryBusy", err)
	}
	var ce *CallError
	errors.As(err, &ce)
	for _, want := range []string{"sandbox.max_memory_mib: 1 MiB", "until this turn ran out of time", "raise sandbox.max_memory_mib", "agent.tool_parallelism"} {
		if !strings.Contains(ce.Reason, want) {
			t.Errorf("reason %q lacks %q", ce.Reason, want)
		}
	}
	if waited < 400*time.Millisecond {
		t.Errorf("gave up after %s, before the turn's deadline (the tool's own 150ms must not count the wait)", waited)
	}
	// Run (the agent's view) says the same to the model.
	turn2, cancelTurn2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelTurn2()
	res, err := r.Run(turn2, callAs(user("U1"), "echo", `{}`))
	if err != nil || !res.IsError || !strings.Contains(res.Content, "sandbox.max_memory_mib") {
		t.Errorf("Run = %+v, %v; want IsError with the reason", res, err)
	}
	st := r.Stats()
	// The waits are counted from when each call joined the queue, a
	// little after its turn's clock started: 400 + 100 ms less that.
	if st.MemoryWaiting != 0 || st.MemoryWaits < 2 || st.MemoryWaitTime < 400*time.Millisecond {
		t.Errorf("Stats = %+v, want 0 waiting, ≥ 2 waits of ≥ 400ms in all", st)
	}
	if st.Memory != st.MemoryLimit {
		t.Errorf("Memory = %d, want the sleepers' %d", st.Memory, st.MemoryLimit)
	}
	cancel()
	wg.Wait()
	if st := r.Stats(); st.Memory != 0 {
		t.Errorf("Memory = %d after every call ended, want 0", st.Memory)
	}
	// Now there is room.
	if res, err := r.Call(context.Background(), callAs(user("U1"), "echo", `{"a":1}`)); err != nil || res.Content != `{"a":1}` {
		t.Errorf("call after the sleepers = %+v, %v", res, err)
	}
}

// A call that waits for memory longer than its tool's own deadline still
// runs when memory frees within the turn's: the tool's clock is stopped
// while it waits (1,000 users calling at once failed hundreds of calls
// that had only waited their turn).
func TestMemoryWaitDoesNotSpendTheToolsDeadline(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 0, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "sleep", "limits: {deadline: 1m, per_minute: 100000}\n"),
		testTool(t, "echo", "limits: {deadline: 150ms, per_minute: 100000}\n"))
	ctx, cancel := context.WithCancel(context.Background())
	wg := sleepers(t, ctx, r, 16)
	defer wg.Wait()
	defer cancel()

	got := make(chan error, 1)
	go func() {
		turn, cancelTurn := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelTurn()
		res, err := r.Call(turn, callAs(user("U1"), "echo", `{"b":2}`))
		if err == nil && res.Content != `{"b":2}` {
			err = fmt.Errorf("result %q", res.Content)
		}
		got <- err
	}()
	waitFor(t, "the echo call to queue", func() bool { return r.Stats().MemoryWaiting == 1 })
	time.Sleep(400 * time.Millisecond) // well past echo's 150 ms
	cancel()                           // the sleepers end and free their memory
	if err := <-got; err != nil {
		t.Errorf("echo after waiting 400 ms for memory: %v, want its answer", err)
	}
}

// One user's flood of calls does not starve another user's single call:
// waiting calls are served one user at a time in turn.
func TestMemoryBudgetFairAcrossUsers(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 0, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "sleep", "limits: {deadline: 1m, per_minute: 100000}\n"), echoTool(t))
	ctx, cancel := context.WithCancel(context.Background())
	// 15 sleepers and one sleeper we stop first: then one instance at a
	// time runs, so the waiting calls finish in the order they are
	// granted memory.
	wg := sleepers(t, ctx, r, 15)
	defer wg.Wait()
	defer cancel()
	lastCtx, stopLast := context.WithCancel(ctx)
	lastWG := sleepers(t, lastCtx, r, 1)

	// The order in which the waiting calls are granted memory, recorded
	// as it happens: the order in which the calls return is not it, since
	// a call's goroutine may be descheduled after its instance closed
	// while the next calls run (it finished 11th once on a loaded CI
	// machine).
	var order []string // guarded by r.quota.mu
	r.quota.mu.Lock()
	r.quota.onGrant = func(p agent.Principal) {
		who := "flood"
		if p == user("B") {
			who = "single"
		}
		order = append(order, who)
	}
	r.quota.mu.Unlock()
	var calls sync.WaitGroup
	run := func(p agent.Principal) {
		calls.Add(1)
		go func() {
			defer calls.Done()
			if res, err := r.Call(context.Background(), callAs(p, "echo", `{}`)); err != nil || res.IsError {
				t.Errorf("%s: %+v, %v", p.User, res, err)
			}
		}()
	}
	for range 10 {
		run(user("A"))
	}
	waitFor(t, "the flood to wait", func() bool { return r.Stats().MemoryWaiting == 10 })
	run(user("B"))
	waitFor(t, "the single call to wait", func() bool { return r.Stats().MemoryWaiting == 11 })
	stopLast()
	lastWG.Wait()
	calls.Wait()
	r.quota.mu.Lock()
	defer r.quota.mu.Unlock()
	// One instance at a time: the flood's first call, then the single
	// call (its user's turn), then the rest of the flood.
	if want := append([]string{"flood", "single"}, slices.Repeat([]string{"flood"}, 9)...); !slices.Equal(order, want) {
		t.Errorf("memory granted in the order %v, want %v", order, want)
	}
}

// A call that needs memory closes idle pooled instances (of any tool)
// rather than wait behind them.
func TestMemoryBudgetEvictsIdlePools(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2, MaxMemoryMiB: 1, Now: forever()},
		testTool(t, "sleep", "limits: {deadline: 1m, per_minute: 100000}\n"), echoTool(t), testTool(t, "state", ""))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := r.Call(ctx, callAs(user("U1"), "echo", `{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "echo's pool", func() bool { return r.Stats().Pooled == 2 })
	// 14 sleepers and 2 pooled instances (echo's, or the sleep tool's
	// pool's): 16 × 64 KiB, the whole MiB.
	wg := sleepers(t, ctx, r, 14)
	defer wg.Wait()
	defer cancel()
	waitFor(t, "the budget to be full of running and pooled instances", func() bool {
		st := r.Stats()
		return st.Memory == st.MemoryLimit && st.Pooled > 0
	})
	waits := r.Stats().MemoryWaits
	start := time.Now()
	if res, err := r.Call(context.Background(), callAs(user("U2"), "state", `{}`)); err != nil || res.IsError {
		t.Fatalf("state call = %+v, %v", res, err)
	}
	if st := r.Stats(); st.MemoryWaits != waits {
		t.Errorf("the call waited (%d waits, was %d) instead of evicting idle instances; took %s", st.MemoryWaits, waits, time.Since(start))
	}
	if st := r.Stats(); st.Memory > st.MemoryLimit {
		t.Errorf("Memory %d above the budget %d", st.Memory, st.MemoryLimit)
	}
}

// A tool's pooled instances are closed once it has not been called for
// PoolIdle, and made again on its next call.
func TestPoolIdleRelease(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2, PoolIdle: 100 * time.Millisecond, Now: forever()}, echoTool(t))
	ctx := context.Background()
	if _, err := r.Call(ctx, call("echo", `{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool to fill", func() bool { return r.Stats().Pooled == 2 })
	waitFor(t, "the idle pool to be released", func() bool {
		st := r.Stats()
		return st.Pooled == 0 && st.Memory == 0
	})
	made := r.Stats().Instances
	// Still released a while later: nothing refills an idle pool.
	time.Sleep(150 * time.Millisecond)
	if st := r.Stats(); st.Instances != made || st.Memory != 0 {
		t.Errorf("Stats = %+v: the idle pool was refilled", st)
	}
	if res, err := r.Call(ctx, call("echo", `{"b":2}`)); err != nil || res.Content != `{"b":2}` {
		t.Fatalf("call after release = %+v, %v", res, err)
	}
	waitFor(t, "the pool to refill after a call", func() bool { return r.Stats().Pooled == 2 })
}

// Unit test of the queue's order: users in turn, each user's calls in
// order, and a waiter that gives up lets the line move on.
func TestQuotaOrder(t *testing.T) {
	q := newQuota(1)
	if !q.tryAcquire(1) {
		t.Fatal("tryAcquire on an empty quota failed")
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	wait := func(ctx context.Context, who string, p agent.Principal) {
		n := q.stats().waiting
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q.acquire(ctx, p, 1); err != nil {
				return
			}
			mu.Lock()
			order = append(order, who)
			mu.Unlock()
			q.release(1)
		}()
		waitFor(t, who+" to wait", func() bool { return q.stats().waiting == n+1 })
	}
	gone, leave := context.WithCancel(context.Background())
	wait(context.Background(), "a1", user("A"))
	wait(context.Background(), "a2", user("A"))
	wait(gone, "c1", user("C"))
	wait(context.Background(), "a3", user("A"))
	wait(context.Background(), "b1", user("B"))
	if q.tryAcquire(1) {
		t.Error("tryAcquire went ahead of waiting calls")
	}
	leave()
	waitFor(t, "c1 to give up", func() bool { return q.stats().waiting == 4 })
	q.release(1)
	wg.Wait()
	want := "a1 b1 a2 a3"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	if st := q.stats(); st.used != 0 || st.peak != 1 || st.waiting != 0 {
		t.Errorf("stats = %+v, want nothing used, peak 1, nobody waiting", st)
	}
	if err := q.acquire(context.Background(), user("A"), 2); !errors.Is(err, errQuotaTooSmall) {
		t.Errorf("acquire above the budget = %v, want errQuotaTooSmall", err)
	}
}

// Close stops the calls in progress and waits for them before it closes
// their instances (whose memory is unmapped then): the calls fail as
// cancelled, nothing stays charged, and the process survives.
func TestCloseStopsRunningCalls(t *testing.T) {
	r, err := New(context.Background(), Config{Tools: []Tool{testTool(t, "sleep", "limits: {deadline: 1m, per_minute: 100000}\n")},
		CacheDir: fixture.cacheDir, PoolSize: 2, Now: forever()})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := r.Call(context.Background(), callAs(user(fmt.Sprintf("U%d", i)), "sleep", `{}`))
			errs <- err
		}()
	}
	waitFor(t, "the calls to run", func() bool { return r.Stats().Memory >= 8*65536 })
	start := time.Now()
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %s", d)
	}
	for range 8 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("call during Close = %v, want cancelled", err)
		}
	}
	if st := r.Stats(); st.Memory != 0 {
		t.Errorf("Memory = %d after Close, want 0", st.Memory)
	}
}

// A running guest whose memory.grow finds the budget full waits for room
// within its deadline, then fails saying the budget was full (not that
// the tool passed its own limit); its memory is given back.
func TestMemoryBudgetGrowWaitsThenFails(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 0, MaxMemoryMiB: 16, Now: forever()},
		testTool(t, "bomb", "limits: {deadline: 200ms, memory_mib: 64}\n"))
	start := time.Now()
	_, err := r.Call(context.Background(), call("bomb", `{}`))
	if !errors.Is(err, ErrMemoryBusy) {
		t.Fatalf("err = %v, want ErrMemoryBusy", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("failed after %s, before its deadline: the grow did not wait", d)
	}
	st := r.Stats()
	// bomb grows 1 MiB at a time: it stops within a MiB of the budget.
	if st.MemoryPeak+mib <= st.MemoryLimit || st.MemoryPeak > st.MemoryLimit || st.Memory != 0 || st.MemoryWaits != 1 {
		t.Errorf("Stats = %+v, want the budget filled to within a MiB, one wait, nothing left charged", st)
	}
}
