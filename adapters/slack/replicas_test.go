package slack

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/cluster"
	"github.com/talonhq/talon/store"

	"github.com/talonhq/talon/cluster/natstest"
)

// countingRuntime counts the messages one replica's adapter accepted.
type countingRuntime struct {
	*agent.Runtime
	mu       sync.Mutex
	accepted int // guarded by mu
}

func (c *countingRuntime) Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error) {
	q, err := c.Runtime.Accept(ctx, in)
	if err == nil {
		c.mu.Lock()
		c.accepted++
		c.mu.Unlock()
	}
	return q, err
}

// TestSocketModeOnThreeReplicas: three replicas each open their own
// Socket Mode connection to one workspace and share a store and NATS.
// Slack spreads the events over the connections and sends some again
// (retries, on any connection): every message is answered exactly once,
// and each person's answers come in the order they wrote.
func TestSocketModeOnThreeReplicas(t *testing.T) {
	natsURL := natstest.Server(t)

	fs := newFakeSlack(t)
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv := llmtest.NewServer(t, llmtest.Echo())

	var rts []*countingRuntime
	for _, id := range []string{"a", "b", "c"} {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		provider, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "m", MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		rt := &agent.Runtime{Store: db, LLM: provider, Log: zerolog.Nop(), Limits: agent.Limits{ShutdownGrace: time.Second, ThreadMessages: -1}}
		ctx, cancel := context.WithCancel(context.Background())
		node, err := cluster.Open(ctx, nc, cluster.Config{Partitions: 8, Replica: id, LeaseTTL: 2 * time.Second}, rt, db, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		rt.Dispatch = node
		rt.Limiter = node.Limiter()
		cfg := DefaultConfig()
		cfg.Mode = ModeSocket
		cfg.BotToken = "xoxb-test-bot-token"
		cfg.AppToken = "xapp-test-app-token"
		cfg.APIURL = fs.apiURL()
		cfg.AllowedTeams = []string{team}
		crt := &countingRuntime{Runtime: rt}
		ad := &Adapter{Config: cfg, Runtime: crt, Log: zerolog.Nop()}
		rt.Register(ad)
		var wg sync.WaitGroup
		wg.Go(func() { _ = rt.Run(ctx) })
		<-rt.Ready()
		wg.Go(func() { _ = node.Run(ctx) })
		wg.Go(func() { _ = ad.Run(ctx) })
		t.Cleanup(func() { cancel(); wg.Wait() })
		rts = append(rts, crt)
	}
	waitFor(t, "three Socket Mode connections", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.conns == 3
	})

	const people, rounds = 12, 5
	for r := range rounds {
		var envs []string
		for p := range people {
			user := fmt.Sprintf("U%02d", p)
			ts := fmt.Sprintf("%d.%06d", 1700000000+r, p)
			ev := dm(user, ts, fmt.Sprintf("%s m%d", user, r))
			ev["channel"] = "D" + user // each person's own DM (Slack paces posts per channel)
			env := fmt.Sprintf("e%d-%d", r, p)
			fs.send(eventsEnvelope(env, "Ev"+env, ev))
			envs = append(envs, env)
			if (r+p)%4 == 0 {
				// Slack did not see the ack in time: the same event again,
				// in a new envelope, on whichever connection.
				fs.send(eventsEnvelope(env+"-retry", "Ev"+env, ev))
				envs = append(envs, env+"-retry")
			}
		}
		// A person writes the next message once this one is sent (acked):
		// the order to keep is theirs.
		waitFor(t, fmt.Sprintf("round %d acked", r), func() bool {
			for _, e := range envs {
				if _, ok := fs.ack(e); !ok {
					return false
				}
			}
			return true
		})
	}
	waitFor(t, fmt.Sprintf("%d replies", people*rounds), func() bool {
		return len(fs.messages("chat.postMessage")) >= people*rounds
	})
	// Late duplicates would come now.
	for _, rt := range rts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := rt.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	re := regexp.MustCompile(`^echo: (U\d\d) m(\d+)$`)
	got := map[string][]int{}
	for _, m := range fs.messages("chat.postMessage") {
		sm := re.FindStringSubmatch(m.Text)
		if sm == nil {
			t.Errorf("unexpected post %q", m.Text)
			continue
		}
		n, _ := strconv.Atoi(sm[2])
		got[sm[1]] = append(got[sm[1]], n)
	}
	for p := range people {
		user := fmt.Sprintf("U%02d", p)
		want := []int{0, 1, 2, 3, 4}
		if fmt.Sprint(got[user]) != fmt.Sprint(want) {
			t.Errorf("%s's answers: messages %v, want each once in order %v", user, got[user], want)
		}
	}
	fs.mu.Lock()
	spread := len(fs.sentOn)
	sentOn := fmt.Sprint(fs.sentOn)
	fs.mu.Unlock()
	accepted := []int{}
	for _, rt := range rts {
		rt.mu.Lock()
		accepted = append(accepted, rt.accepted)
		rt.mu.Unlock()
	}
	t.Logf("envelopes per connection %s; messages accepted per replica %v", sentOn, accepted)
	if spread < 2 {
		t.Errorf("envelopes per connection %s: want them spread over the connections", sentOn)
	}
	if accepted[0]+accepted[1]+accepted[2] != people*rounds {
		t.Errorf("accepted %v: want %d in all (each message once, retries refused as duplicates)", accepted, people*rounds)
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
