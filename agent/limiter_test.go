package agent_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fakeLimiter is a deployment's limiter: it refuses rate tokens past
// allow, and fails (as a bucket that cannot be reached) when broken.
type fakeLimiter struct {
	mu       sync.Mutex
	allow    int
	broken   bool
	acquired int
	released int
	perUser  int
	global   int
}

func (l *fakeLimiter) Acquire(ctx context.Context, p agent.Principal, perUser, global int) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return nil, errors.New("nats: no servers available for connection")
	}
	l.acquired++
	l.perUser, l.global = perUser, global
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.released++
	}, nil
}

func (l *fakeLimiter) Allow(ctx context.Context, p agent.Principal, perMinute int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return false, errors.New("nats: no servers available for connection")
	}
	if l.allow == 0 {
		return false, nil
	}
	l.allow--
	return true, nil
}

// TestLimiterBoundsTurns: with a Limiter, every turn takes its slot there
// (with the runtime's bounds) and frees it, and the rate is the Limiter's.
func TestLimiterBoundsTurns(t *testing.T) {
	lim := &fakeLimiter{allow: 1}
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) {
		rt.Limiter = lim
		rt.Limits.RatePerMinute = 100 // this process alone would allow both
		rt.Limits.MaxTurnsPerUser = 3
		rt.Limits.MaxConcurrentTurns = 7
	})
	h.send("u1", "one")
	h.idle()
	h.send("u1", "two")
	h.idle()
	got := h.ch.texts()
	if len(got) != 2 || !strings.Contains(got[0], "echo: one") || !strings.Contains(got[1], "faster than I can") {
		t.Errorf("replies %q: want the first answered and the second refused by the deployment's rate", got)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.acquired != 2 || lim.released != 2 || lim.perUser != 3 || lim.global != 7 {
		t.Errorf("limiter: %d slots taken, %d freed, bounds %d/%d; want 2, 2, 3/7", lim.acquired, lim.released, lim.perUser, lim.global)
	}
}

// TestLimiterFailingFallsBackToTheProcessLimits: a Limiter that cannot be
// reached does not stop the turns; this process's rate applies.
func TestLimiterFailingFallsBackToTheProcessLimits(t *testing.T) {
	lim := &fakeLimiter{broken: true}
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) {
		rt.Limiter = lim
		rt.Limits.RatePerMinute = 1
	})
	h.send("u1", "one")
	h.send("u1", "two")
	h.idle()
	got := strings.Join(h.ch.texts(), "|")
	if !strings.Contains(got, "echo: one") || !strings.Contains(got, "faster than I can") {
		t.Errorf("replies %q: want the first answered and the second refused by this process's rate", got)
	}
}
