package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// leaseReplica is one replica's Leases on its own connection.
type leaseReplica struct {
	id     string
	l      *Leases
	cancel context.CancelFunc
	done   chan struct{}
	close  func() // closes the connection: the replica can reach no one
}

const testTTL = 2 * time.Second

// startLeases starts a replica's Leases on a connection of its own.
func startLeases(t *testing.T, url, bucket, id string, slots int, o *owners) *leaseReplica {
	t.Helper()
	return startLeasesVia(t, url, bucket, id, slots, o, nil, zerolog.Nop())
}

// startLeasesVia starts a replica's Leases on a connection of its own to
// url (a cutter's, maybe), on the bucket as wrap returns it (when not
// nil), logging to log.
func startLeasesVia(t *testing.T, url, bucket, id string, slots int, o *owners, wrap func(jetstream.KeyValue) jetstream.KeyValue, log zerolog.Logger) *leaseReplica {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // a cut connection is the test's own doing
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := EnsureBucket(ctx, js, bucket, testTTL, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := &leaseReplica{id: id, cancel: cancel, done: make(chan struct{}), close: nc.Close}
	if wrap != nil {
		kv = wrap(kv)
	}
	r.l = &Leases{KV: kv, Replica: id, Slots: slots, TTL: testTTL, Work: o.work(id), Log: log}
	go func() {
		defer close(r.done)
		if err := r.l.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *leaseReplica) stop() {
	r.cancel()
	<-r.done
}

func TestLeasesBalanceAndTakeOver(t *testing.T) {
	url := testNATS(t)
	o := newOwners()
	const slots = 8
	a := startLeases(t, url, "balance", "a", slots, o)
	eventually(t, 10*testTTL, "a alone holds every slot", func() bool { return o.count()["a"] == slots })

	b := startLeases(t, url, "balance", "b", slots, o)
	eventually(t, 10*testTTL, "a and b hold half each", func() bool {
		c := o.count()
		return c["a"] == slots/2 && c["b"] == slots/2
	})
	if got := len(b.l.Held()); got != slots/2 {
		t.Errorf("b.Held() = %d slots, want %d", got, slots/2)
	}

	// a dies: its connection goes, it renews nothing, and stops its work
	// by itself (the fence); b takes a's slots over once they expire.
	died := time.Now()
	a.close()
	eventually(t, 3*testTTL, "a's work stops after its last renewal", func() bool { return o.count()["a"] == 0 })
	eventually(t, 10*testTTL, "b holds every slot", func() bool { return o.count()["b"] == slots })
	took := time.Since(died)
	t.Logf("b took a's slots over %s after a died (TTL %s)", took.Round(time.Millisecond), testTTL)
	if v := o.errs(); len(v) > 0 {
		t.Errorf("two owners at once: %v", v)
	}

	// A replica that stops gives its slots up at once.
	c := startLeases(t, url, "balance", "c", slots, o)
	eventually(t, 10*testTTL, "b and c hold half each", func() bool {
		n := o.count()
		return n["b"] == slots/2 && n["c"] == slots/2
	})
	c.stop()
	eventually(t, 10*testTTL, "b holds every slot again", func() bool { return o.count()["b"] == slots })
	if v := o.errs(); len(v) > 0 {
		t.Errorf("two owners at once: %v", v)
	}
}

// TestLeasesNeverTwoOwners starts and kills replicas at random, both
// cleanly and by cutting their connection, and checks that no slot's Work
// ever ran in two replicas at once, and that every slot is owned at the
// end.
func TestLeasesNeverTwoOwners(t *testing.T) {
	url := testNATS(t)
	o := newOwners()
	const slots = 12
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var (
		mu   sync.Mutex
		live []*leaseReplica
		n    int
	)
	start := func() {
		n++
		r := startLeases(t, url, "chaos", fmt.Sprintf("r%d", n), slots, o)
		mu.Lock()
		live = append(live, r)
		mu.Unlock()
	}
	for range 3 {
		start()
	}
	rounds := 8
	if testing.Short() {
		rounds = 3
	}
	for range rounds {
		time.Sleep(time.Duration(rng.IntN(int(2 * testTTL))))
		mu.Lock()
		i := rng.IntN(len(live))
		r := live[i]
		live = append(live[:i], live[i+1:]...)
		mu.Unlock()
		if rng.IntN(2) == 0 {
			r.close() // dies: its work stops by the fence
		} else {
			r.stop()
		}
		start()
	}
	eventually(t, 15*testTTL, "every slot owned by a live replica", func() bool {
		c := o.count()
		total := 0
		mu.Lock()
		defer mu.Unlock()
		for _, r := range live {
			total += c[r.id]
		}
		return total == slots
	})
	if v := o.errs(); len(v) > 0 {
		t.Errorf("two owners at once: %v", v)
	}
	o.mu.Lock()
	t.Logf("%d claims over %d replicas", o.claims, n)
	o.mu.Unlock()
}

func TestLeasesRejectBadSettings(t *testing.T) {
	o := newOwners()
	for name, l := range map[string]*Leases{
		"no bucket":          {Replica: "a", Slots: 1, TTL: time.Second, Work: o.work("a")},
		"bad replica id":     {KV: nilKV{}, Replica: "a.b", Slots: 1, TTL: time.Second, Work: o.work("a")},
		"deadline over TTL":  {KV: nilKV{}, Replica: "a", Slots: 1, TTL: time.Second, Deadline: 2 * time.Second, Work: o.work("a")},
		"deadline too short": {KV: nilKV{}, Replica: "a", Slots: 1, TTL: time.Second, Renew: 500 * time.Millisecond, Deadline: 400 * time.Millisecond, Work: o.work("a")},
	} {
		if err := l.Run(context.Background()); err == nil {
			t.Errorf("%s: Run returned nil, want an error", name)
		}
	}
}

// nilKV is a bucket no test reaches.
type nilKV struct{ jetstream.KeyValue }
