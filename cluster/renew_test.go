package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestLeasesSurvivorKeepsItsOwnWhenAPeerStops: two replicas share 24
// slots with a short TTL (2 s: renewals every 400 ms, fence 1.2 s after
// the last one), and every request of one of them, a, to the bucket takes
// 60 ms (a busy server, a loaded machine). The other, c, stops answering,
// its connection frozen (as a SIGSTOP leaves it: open, silent) or closed
// (a SIGKILL). a must take c's slots over within 1.5·TTL (the 15 s of
// the default 10 s), and never lose a lease of its own: each request is
// far shorter than the renewal interval, and nothing else a replica does
// (announcing itself, reading the bucket, claiming c's twelve slots,
// renewing its other leases) may hold a renewal back past the fence.
func TestLeasesSurvivorKeepsItsOwnWhenAPeerStops(t *testing.T) {
	const (
		slots   = 24
		latency = 60 * time.Millisecond
	)
	for _, how := range []string{"frozen", "killed"} {
		t.Run(how, func(t *testing.T) {
			url := testNATS(t)
			o := newOwners()
			var log syncLog
			a := startLeasesVia(t, url, "survive", "a", slots, o, latency, zerolog.New(&log))
			peer := newCutter(t, url)
			startLeasesVia(t, peer.url(), "survive", "c", slots, o, 0, zerolog.Nop())
			lost := func(when string) {
				t.Helper()
				if log.has("lease lost") {
					t.Fatalf("a lost a lease %s; its log:\n%s", when, log.String())
				}
			}
			eventually(t, 10*testTTL, "a and c hold 12 slots each", func() bool {
				lost("before c stopped")
				c := o.count()
				return c["a"] == slots/2 && c["c"] == slots/2
			})
			before := a.l.Held()

			stopped := time.Now()
			if how == "frozen" {
				peer.freeze()
			} else {
				peer.cut()
			}
			// Watch a until it holds every slot, and two TTLs more.
			var took time.Duration
			for end := time.Now().Add(10 * testTTL); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if held := a.l.Held(); !includes(held, before) {
					t.Fatalf("a holds %v %s after c was %s; it held %v before: it lost a lease of its own. Its log:\n%s",
						held, time.Since(stopped).Round(time.Millisecond), how, before, log.String())
				}
				if took == 0 && o.count()["a"] == slots {
					took = time.Since(stopped)
					end = time.Now().Add(2 * testTTL)
				}
			}
			if took == 0 {
				t.Fatalf("a holds %d slots 10 TTLs after c was %s, want all %d", o.count()["a"], how, slots)
			}
			lost("after c stopped")
			if v := o.errs(); len(v) > 0 {
				t.Errorf("two owners at once: %v", v)
			}
			if bound := testTTL * 3 / 2; took > bound {
				t.Errorf("c's slots taken over %s after c was %s, want within %s", took.Round(time.Millisecond), how, bound)
			}
			t.Logf("c's slots taken over %s after c was %s (TTL %s, each request of a's %s longer)", took.Round(time.Millisecond), how, testTTL, latency)
			peer.cut() // c stops without waiting on its frozen connection
		})
	}
}

// includes reports whether every element of sub is in s.
func includes(s, sub []int) bool {
	for _, x := range sub {
		if !slices.Contains(s, x) {
			return false
		}
	}
	return true
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// slowKV is a bucket each of whose requests takes latency more, as when
// the server or the machine is busy.
type slowKV struct {
	jetstream.KeyValue
	latency time.Duration
}

func (s slowKV) wait(ctx context.Context) error {
	if !agentSleep(ctx, s.latency) {
		return ctx.Err()
	}
	return nil
}

func (s slowKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.KeyValue.Put(ctx, key, value)
}

func (s slowKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.KeyValue.Create(ctx, key, value, opts...)
}

func (s slowKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.KeyValue.Update(ctx, key, value, rev)
}

func (s slowKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.KeyValue.Delete(ctx, key, opts...)
}

func (s slowKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	w, err := s.KeyValue.WatchAll(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return slowWatcher{KeyWatcher: w, latency: s.latency}, nil
}

// slowWatcher's Stop takes latency more: it deletes the watch's consumer,
// a request to the server.
type slowWatcher struct {
	jetstream.KeyWatcher
	latency time.Duration
}

func (w slowWatcher) Stop() error {
	time.Sleep(w.latency)
	return w.KeyWatcher.Stop()
}
