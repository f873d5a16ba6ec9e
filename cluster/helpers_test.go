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

	"github.com/talonhq/talon/cluster/natstest"
)

// testNATS returns the URL of a NATS server with JetStream: an in-process
// one whose store is in t.TempDir().
func testNATS(t testing.TB) string { return natstest.Server(t) }

// realNATS returns TALON_TEST_NATS, or skips the test.
func realNATS(t testing.TB) string { return natstest.Real(t) }

// testPrefix is a prefix no other test run uses, for tests on a shared
// server; its stream and buckets are deleted at the end.
func testPrefix(t testing.TB, url string) string {
	t.Helper()
	prefix := fmt.Sprintf("talontest_%08x", rand.Uint32())
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		_ = js.DeleteStream(ctx, streamName(prefix))
		_ = js.DeleteKeyValue(ctx, prefix+"_partitions")
		_ = js.DeleteKeyValue(ctx, prefix+"_cluster")
		_ = js.DeleteKeyValue(ctx, prefix+"_test")
		_ = js.DeleteKeyValue(ctx, prefix+"_slots")
		_ = js.DeleteKeyValue(ctx, prefix+"_rates")
		_ = js.DeleteKeyValue(ctx, prefix+"_shards")
		_ = js.DeleteKeyValue(ctx, prefix+"_identify")
	})
	return prefix
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// owners watches who runs Work for each slot, and records every time two
// replicas ran it at once.
type owners struct {
	mu         sync.Mutex
	by         map[int]string // guarded by mu
	violations []string       // guarded by mu
	claims     int            // guarded by mu
}

func newOwners() *owners { return &owners{by: map[int]string{}} }

func (o *owners) work(replica string) func(ctx context.Context, slot int, _ Hold) {
	return func(ctx context.Context, slot int, _ Hold) {
		o.mu.Lock()
		if cur, ok := o.by[slot]; ok {
			o.violations = append(o.violations, fmt.Sprintf("slot %d: %s started while %s ran it", slot, replica, cur))
		}
		o.by[slot] = replica
		o.claims++
		o.mu.Unlock()
		<-ctx.Done()
		o.mu.Lock()
		if o.by[slot] == replica {
			delete(o.by, slot)
		}
		o.mu.Unlock()
	}
}

// snapshot returns how many slots each replica runs.
func (o *owners) count() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := map[string]int{}
	for _, r := range o.by {
		c[r]++
	}
	return c
}

func (o *owners) errs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.violations...)
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
