package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"

	"github.com/talonhq/talon/cluster/natstest"
)

// counting is a model that counts the calls running at once, in all and
// per person (the user's message starts with the person's id), and keeps
// each call a moment so that calls that may overlap do.
type counting struct {
	mu      sync.Mutex
	running int
	byUser  map[string]int
	maxAll  int
	maxUser int
	calls   int
}

func newCounting() *counting { return &counting{byUser: map[string]int{}} }

func (c *counting) Name() string  { return "counting" }
func (c *counting) Model() string { return "counting-1" }
func (c *counting) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	last := ""
	for _, m := range req.Messages {
		if m.Role == llm.RoleUser {
			last = m.Content
		}
	}
	user, _, _ := strings.Cut(last, " ")
	c.mu.Lock()
	c.calls++
	c.running++
	c.byUser[user]++
	c.maxAll = max(c.maxAll, c.running)
	c.maxUser = max(c.maxUser, c.byUser[user])
	c.mu.Unlock()
	select {
	case <-time.After(40 * time.Millisecond):
	case <-ctx.Done():
	}
	c.mu.Lock()
	c.running--
	c.byUser[user]--
	c.mu.Unlock()
	return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, Content: "ok"}}, nil
}

// spreadSessions returns, for each of users, sessions whose partitions are
// held by each of the replicas, perReplica of them per replica.
func spreadSessions(t *testing.T, f *fixture, rs []*replica, users, perReplica int) map[int][]agent.SessionKey {
	t.Helper()
	owner := map[int]string{}
	for _, r := range rs {
		for _, p := range r.node.Held() {
			owner[p] = r.id
		}
	}
	out := map[int][]agent.SessionKey{}
	for u := range users {
		n := map[string]int{}
		for th := 0; th < 10000 && len(out[u]) < perReplica*len(rs); th++ {
			k := key(u, th)
			o := owner[f.cfg.partition(k)]
			if o == "" || n[o] >= perReplica {
				continue
			}
			n[o]++
			out[u] = append(out[u], k)
		}
		if len(out[u]) < perReplica*len(rs) {
			t.Fatalf("user %d: found sessions on only %v", u, n)
		}
	}
	return out
}

func startSpread(t *testing.T, f *fixture) []*replica {
	rs := []*replica{f.start("a"), f.start("b"), f.start("c")}
	eventually(t, 10*testTTL, "8 partitions spread over 3 replicas (2 or 3 each)", func() bool {
		total := 0
		for _, r := range rs {
			n := len(r.node.Held())
			if n < 2 || n > 3 {
				return false
			}
			total += n
		}
		return total == 8
	})
	return rs
}

// TestLimitsHoldAcrossReplicas: three people each talk in sessions run by
// each of three replicas; one turn per person and two in all run at a
// time in the deployment, not per replica.
func TestLimitsHoldAcrossReplicas(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	model := newCounting()
	f.model = model
	f.limits = agent.Limits{MaxTurnsPerUser: 1, MaxConcurrentTurns: 2}
	rs := startSpread(t, f)
	checkLimitsHold(t, f, rs, model)
}

// checkLimitsHold has three people talk in sessions run by each of rs, two
// rounds, and checks that one turn per person and two in all ran at a
// time (f.limits: MaxTurnsPerUser 1, MaxConcurrentTurns 2), each message
// answered once.
func checkLimitsHold(t *testing.T, f *fixture, rs []*replica, model *counting) {
	t.Helper()
	sessions := spreadSessions(t, f, rs, 3, 2)
	var ids []agent.InboundID
	ctx := context.Background()
	for round := range 2 {
		for u, keys := range sessions {
			for i, k := range keys {
				r := rs[(u+i)%len(rs)] // accepted anywhere; run by the partition's owner
				q, err := r.rt.Accept(ctx, agent.Inbound{DedupeKey: fmt.Sprint("lim", u, "-", i, "-", round), Key: k,
					Text: fmt.Sprintf("u%d message %d", u, round)})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, q.ID)
			}
		}
	}
	f.checkAnswered(ids, 120*time.Second)
	model.mu.Lock()
	defer model.mu.Unlock()
	t.Logf("%d model calls; at most %d at once, %d of one person", model.calls, model.maxAll, model.maxUser)
	if model.maxUser > 1 {
		t.Errorf("%d turns of one person ran at once across the replicas, want at most 1", model.maxUser)
	}
	if model.maxAll > 2 {
		t.Errorf("%d turns ran at once across the replicas, want at most 2", model.maxAll)
	}
	if model.calls != len(ids) {
		t.Errorf("%d model calls for %d messages", model.calls, len(ids))
	}
}

// TestLimitsRateAcrossReplicas: a person allowed 3 turns a minute sends 6
// messages in sessions run by three replicas within the same minute (the
// clock stands still); 3 reach the model, 3 are told to wait.
func TestLimitsRateAcrossReplicas(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	model := newCounting()
	f.model = model
	f.limits = agent.Limits{RatePerMinute: 3}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	f.now = func() time.Time { return now }
	rs := startSpread(t, f)
	sessions := spreadSessions(t, f, rs, 1, 2)
	var ids []agent.InboundID
	for i, k := range sessions[0] {
		q, err := rs[i%len(rs)].rt.Accept(context.Background(), agent.Inbound{DedupeKey: fmt.Sprint("rate", i), Key: k, Text: "u0 hi"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, q.ID)
	}
	f.checkAnswered(ids, 60*time.Second)
	model.mu.Lock()
	defer model.mu.Unlock()
	if model.calls != 3 {
		t.Errorf("%d of 6 messages reached the model, want 3 (3 a minute across the replicas)", model.calls)
	}
}

// TestLimitsSlotsOfADeadReplicaFreeThemselves: a live replica's slot stays
// taken however long its turn runs (it is renewed); when the replica dies
// the slot frees itself within about the TTL.
func TestLimitsSlotsOfADeadReplicaFreeThemselves(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	open := func(id string) (*Limits, func()) {
		nc := connect(t, url)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLimits(ctx, js, "talon", id, testTTL, 1, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		go l.Run(rctx)
		t.Cleanup(cancel)
		return l, nc.Close
	}
	a, kill := open("a")
	b, _ := open("b")
	p := agent.Principal{Platform: "test", User: "u1"}
	q := agent.Principal{Platform: "test", User: "u2"}
	release, err := a.Acquire(ctx, p, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Held for twice the TTL: b, for another person, waits for the one
	// global slot all that time.
	wctx, cancel := context.WithTimeout(ctx, 2*testTTL)
	_, err = b.Acquire(wctx, q, 1, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b took the only global slot while a held it (err %v)", err)
	}
	// Released: b takes it at once.
	release()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rb, err := b.Acquire(wctx, q, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("b after a released the slot: %v", err)
	}
	rb()
	// a takes it again and dies holding it.
	if _, err := a.Acquire(ctx, p, 1, 1); err != nil {
		t.Fatal(err)
	}
	kill()
	start := time.Now()
	wctx, cancel = context.WithTimeout(ctx, 10*testTTL)
	rb, err = b.Acquire(wctx, p, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("the slots of a dead replica were not freed within %s: %v", 10*testTTL, err)
	}
	rb()
	t.Logf("a dead replica's slot was free %s after it died (TTL %s)", time.Since(start).Round(time.Millisecond), testTTL)
}

// TestLimitsKeepAFreedSlotForTheNextTurn: the slots a turn frees are
// taken by the replica's next turn of the same person without a write to
// the bucket; a slot kept so is free for another replica within a few
// keepFor, at once when another replica's turn waits for it, and at once
// when the replica stops.
func TestLimitsKeepAFreedSlotForTheNextTurn(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	open := func(prefix, id string, keep time.Duration) (*Limits, jetstream.KeyValue, func()) {
		nc := connect(t, url)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		// A TTL of a minute: no renewal writes during the test.
		l, err := OpenLimits(ctx, js, prefix, id, time.Minute, 1, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		l.keep = keep
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.Run(rctx)
		}()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return l, l.slots, stop
	}
	p := agent.Principal{Platform: "test", User: "u1"}
	q := agent.Principal{Platform: "test", User: "u2"}
	keys := []string{"g.0", "u." + principalHash(p) + ".0"}
	revs := func(kv jetstream.KeyValue) []string {
		var out []string
		for _, k := range keys {
			e, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			out = append(out, fmt.Sprintf("%s=%q@%d", k, e.Value(), e.Revision()))
		}
		return out
	}

	// Kept for an hour: the second turn takes the first's slots as they
	// are in the bucket.
	a, kv, _ := open("keep", "a", time.Hour)
	release, err := a.Acquire(ctx, p, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := revs(kv)
	release()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	release, err = a.Acquire(wctx, p, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("the next turn of the same person: %v", err)
	}
	if after := revs(kv); !slices.Equal(after, before) {
		t.Errorf("slots written again for the next turn: %v, then %v", before, after)
	}
	release()

	// Kept for keepFor: another replica, waiting for the only slot, has it
	// soon after the turn that held it ends.
	c, _, _ := open("free", "c", keepFor)
	d, _, _ := open("free", "d", keepFor)
	release, err = c.Acquire(ctx, p, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	release()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rd, err := d.Acquire(wctx, q, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("another replica waiting for a slot kept for %s: %v", keepFor, err)
	}
	rd()

	// Kept for an hour: another replica whose turn waits for the only
	// slot has it at once, its "w." key freeing the slots kept for the set.
	g, _, _ := open("want", "g", time.Hour)
	h, _, _ := open("want", "h", time.Hour)
	release, err = g.Acquire(ctx, p, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	release()
	start := time.Now()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rh, err := h.Acquire(wctx, q, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("another replica waiting for a slot kept for an hour: %v", err)
	}
	t.Logf("a slot kept for an hour was another replica's %s after it began to wait", time.Since(start).Round(100*time.Microsecond))
	rh()

	// A replica that stops frees its kept slots at once: another one has
	// them though they were to be kept for an hour.
	e, _, stopE := open("stop", "e", time.Hour)
	f, _, _ := open("stop", "f", time.Hour)
	release, err = e.Acquire(ctx, p, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	release()
	stopE()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rf, err := f.Acquire(wctx, q, 1, 1)
	cancel()
	if err != nil {
		t.Fatalf("a slot kept by a replica that stopped: %v", err)
	}
	rf()
}

// TestLimitsWaitingReplicaGoesFirst: one person's turns run back to back
// on replica a (its stream of turns) while one of theirs waits on
// replica b, with one slot a person. a frees the slot as its turn ends,
// rather than keep it for its next turn, and its next turn lets b's go
// first: b has the slot before a's second turn after b began to wait.
// (Before, a kept the slot for each next turn, and b waited for as long
// as a's stream lasted: here all 20 of a's turns.)
func TestLimitsWaitingReplicaGoesFirst(t *testing.T) {
	url := testNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(id string) *Limits {
		js, err := jetstream.New(connect(t, url))
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLimits(ctx, js, "fair", id, time.Minute, 1, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.Run(rctx)
		}()
		t.Cleanup(func() { stop(); <-done })
		return l
	}
	a, b := open("a"), open("b")
	p := agent.Principal{Platform: "test", User: "u1"}
	release, err := a.Acquire(ctx, p, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		rb, err := b.Acquire(ctx, p, 1, 10)
		if err != nil {
			t.Errorf("b: %v", err)
			close(got)
			return
		}
		close(got)
		rb()
	}()
	// a knows that b waits (b's key, through a's watch).
	eventually(t, 10*time.Second, "a sees b waiting", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.wantedElsewhere("u." + principalHash(p))
	})
	turns := 0
	for ; turns < 20; turns++ {
		release()
		if release, err = a.Acquire(ctx, p, 1, 10); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		default:
			continue
		}
		break
	}
	release()
	if turns >= 2 {
		t.Errorf("b's turn waited through %d turns of a", turns)
	}
	<-got
}

// BenchmarkTurnLimits measures what the shared limits add to one turn (the
// rate token, a per-person and a global slot taken and freed) against the
// announcement every accepted message costs already (Dispatch), on the
// same server in the same run: the in-process one, or TALON_TEST_NATS's.
func BenchmarkTurnLimits(b *testing.B) {
	url := testNATS(b)
	prefix := "talon"
	if u := os.Getenv(natstest.EnvURL); u != "" {
		url = u
		prefix = testPrefix(b, url)
	}
	ctx := context.Background()
	nc := connect(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	l, err := OpenLimits(ctx, js, prefix, "bench", DefaultLeaseTTL, 1, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	b.Cleanup(stop)
	go l.Run(rctx)
	rt := &agent.Runtime{}
	node, err := Open(ctx, nc, Config{Partitions: 8, Prefix: prefix, Replica: "bench"}, rt, noStore{}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("dispatch", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := node.Dispatch(ctx, agent.QueuedInbound{ID: agent.InboundID(i + 1), Inbound: agent.Inbound{Key: key(i%100, 0)}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("allow", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			p := agent.Principal{Platform: "test", User: fmt.Sprint("u", i%100)}
			if _, err := l.Allow(ctx, p, 1_000_000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("slots", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			p := agent.Principal{Platform: "test", User: fmt.Sprint("u", i%100)}
			release, err := l.Acquire(ctx, p, 2, 64)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("limits", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			p := agent.Principal{Platform: "test", User: fmt.Sprint("u", i%100)}
			if _, err := l.Allow(ctx, p, 1_000_000); err != nil {
				b.Fatal(err)
			}
			release, err := l.Acquire(ctx, p, 2, 64)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
}

type noStore struct{}

func (noStore) Pending(context.Context) ([]agent.QueuedInbound, error) { return nil, nil }

// BenchmarkNodeTurns runs turns of 100 sessions (100 people, echo model)
// through one replica on the in-process NATS server and a SQLite store,
// with the shared limits and without them (the runtime's own bounds), in
// the same run: what the limits cost a turn end to end.
func BenchmarkNodeTurns(b *testing.B) {
	url := testNATS(b)
	for _, shared := range []bool{false, true} {
		name := "process_limits"
		if shared {
			name = "shared_limits"
		}
		b.Run(name, func(b *testing.B) {
			db, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "talon.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			d := newDelivered()
			nc := connect(b, url)
			rt := &agent.Runtime{Store: db, LLM: echo{}, Log: zerolog.Nop(),
				Limits: agent.Limits{ShutdownGrace: time.Second, RatePerMinute: 1_000_000}}
			rt.Register(channel{d: d, replica: "a"})
			ctx, cancel := context.WithCancel(context.Background())
			node, err := Open(ctx, nc, Config{Partitions: 8, Replica: "a", Prefix: fmt.Sprintf("bench%v", shared), LeaseTTL: DefaultLeaseTTL}, rt, db, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			rt.Dispatch = node
			if shared {
				rt.Limiter = node.Limiter()
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				var wg sync.WaitGroup
				wg.Go(func() { _ = rt.Run(ctx) })
				<-rt.Ready()
				_ = node.Run(ctx)
				wg.Wait()
			}()
			defer func() { cancel(); <-done }()
			<-rt.Ready()
			eventually(b, 30*time.Second, "a holds every partition", func() bool { return len(node.Held()) == 8 })
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := rt.Accept(ctx, agent.Inbound{DedupeKey: fmt.Sprint("b", i), Key: key(i%100, 0), Text: "hi"}); err != nil {
					b.Fatal(err)
				}
			}
			for d.count() < b.N {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "turns/s")
		})
	}
}

// TestLimitsRateBucketSharedByTwoReplicas: two replicas take one person's
// tokens in turn (each remembering the bucket it wrote last, which the
// other has changed since): four a minute in all, never more.
func TestLimitsRateBucketSharedByTwoReplicas(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	open := func(id string) *Limits {
		js, err := jetstream.New(connect(t, url))
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLimits(ctx, js, "talon", id, testTTL, 1, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		l.Now = func() time.Time { return now }
		return l
	}
	a, b := open("a"), open("b")
	p := agent.Principal{Platform: "test", User: "u1"}
	var got []bool
	for _, l := range []*Limits{a, a, b, a, b, a, b} {
		ok, err := l.Allow(ctx, p, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ok)
	}
	if want := []bool{true, true, true, true, false, false, false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tokens taken by a, a, b, a, b, a, b: %v, want %v", got, want)
	}
	// Fifteen seconds on, one token has come back, for one replica.
	now = now.Add(15 * time.Second)
	okB, err := b.Allow(ctx, p, 4)
	if err != nil {
		t.Fatal(err)
	}
	okA, err := a.Allow(ctx, p, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !okB || okA {
		t.Errorf("after 15 s: b %v, a %v; want one token, to b", okB, okA)
	}
}
