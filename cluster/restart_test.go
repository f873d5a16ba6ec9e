package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cluster/natstest"
)

// TestNodeSurvivesNATSRestart: the NATS server restarts (its stream and
// buckets kept on disk) while three replicas accept messages. Accepting
// never waits long on the missing server (a platform gives an event about
// 3 s before it sends it again), every message is answered exactly once,
// in order per session, soon after the server is back (the sweep runs only
// every minute here: the replicas look for what they could not announce
// when they reconnect), and every partition is owned again.
func TestNodeSurvivesNATSRestart(t *testing.T) {
	ns := natstest.NewRestartable(t)
	f := newFixture(t, ns.URL(), "talon")
	f.cfg.Sweep = time.Minute
	rs := []*replica{f.start("a"), f.start("b"), f.start("c")}
	owned := func() bool {
		total := 0
		for _, r := range rs {
			total += len(r.node.Held())
		}
		return total == 8
	}
	eventually(t, 10*testTTL, "8 partitions owned", owned)

	var (
		mu      sync.Mutex
		ids     []agent.InboundID
		slowest time.Duration
	)
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				user := g*10 + rand.IntN(10)
				r := rs[rand.IntN(len(rs))]
				start := time.Now()
				q, err := r.rt.Accept(context.Background(), agent.Inbound{DedupeKey: fmt.Sprint("g", g, "-", i), Key: key(user, 0), Text: fmt.Sprint("hello ", i)})
				took := time.Since(start)
				if err != nil {
					t.Errorf("accept: %v", err)
					return
				}
				mu.Lock()
				ids = append(ids, q.ID)
				slowest = max(slowest, took)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Second)
	ns.Stop()
	mu.Lock()
	before := len(ids)
	mu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	during := len(ids) - before
	mu.Unlock()
	ns.Start()
	back := time.Now()
	time.Sleep(time.Second)
	stopLoad()
	wg.Wait()
	if during == 0 {
		t.Fatal("no message was accepted while the server was down: the test proves nothing")
	}
	// Sorted: checkAnswered wants each session's replies in the order of
	// the ids, which is the order of acceptance.
	slices.Sort(ids)
	f.checkAnswered(ids, 30*time.Second)
	t.Logf("%d messages, %d accepted while NATS was down; all answered %s after it was back; slowest accept %s",
		len(ids), during, time.Since(back).Round(time.Millisecond), slowest.Round(time.Millisecond))
	if slowest > 2*time.Second {
		t.Errorf("an accept took %s while NATS was down: a platform would have sent the event again", slowest)
	}
	eventually(t, 10*testTTL, "8 partitions owned after the restart", owned)
}

// TestLimitsHoldAfterNATSRestart: the turn limit buckets live in the NATS
// server's memory, so a server that restarts comes back without them; the
// replicas make them again, and the limits hold across the replicas
// afterwards as before (a replica left without them would run its turns
// under its own bounds only: three replicas, up to three turns at once).
func TestLimitsHoldAfterNATSRestart(t *testing.T) {
	ns := natstest.NewRestartable(t)
	f := newFixture(t, ns.URL(), "talon")
	model := newCounting()
	f.model = model
	f.limits = agent.Limits{MaxTurnsPerUser: 1, MaxConcurrentTurns: 2}
	rs := startSpread(t, f)
	ns.Stop()
	ns.Start()
	eventually(t, 10*testTTL, "8 partitions owned after the restart", func() bool {
		total := 0
		for _, r := range rs {
			total += len(r.node.Held())
		}
		return total == 8
	})
	checkLimitsHold(t, f, rs, model)
}
