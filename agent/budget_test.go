package agent_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

func TestBudgetsRefuseWithResetTimeAndExemptAdmins(t *testing.T) {
	admin := key("boss").Principal
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) {
		rt.Usage = rt.Store.(agent.UsageMeter)
		rt.Budgets = agent.Budgets{UserDaily: 1, Exempt: map[agent.Principal]bool{admin: true}}
	})
	h.send("u1", "first")
	h.send("boss", "first")
	h.idle()
	h.send("u1", "second")
	h.send("boss", "second")
	h.idle()
	h.send("u1", "/usage")
	h.send("boss", "/usage")
	h.idle()
	got := h.ch.texts()
	if len(got) != 6 {
		t.Fatalf("replies: %q", got)
	}
	all := strings.Join(got, "|")
	for _, want := range []string{"echo: first", "echo: second"} {
		if strings.Count(all, want) != map[string]int{"echo: first": 2, "echo: second": 1}[want] {
			t.Errorf("replies %q: wrong count of %q", got, want)
		}
	}
	tomorrow := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Format("2006-01-02 15:04 MST")
	if !strings.Contains(all, "You have used your token budget for today") || !strings.Contains(all, "It resets at "+tomorrow) {
		t.Errorf("u1 was not told plainly with the reset time %s: %q", tomorrow, got)
	}
	if strings.Count(all, "token budget for today") != 1 {
		t.Errorf("want exactly one refusal (u1's second message), got %q", got)
	}
	if !strings.Contains(all, "Your usage: today ") || !strings.Contains(all, " of 1 tokens") || !strings.Contains(all, "You are an admin: budgets do not apply to you.") {
		t.Errorf("/usage answers lack the figures: %q", got)
	}
	// The refused message never reached the model: three turns, three calls.
	if n := len(h.llm.Requests()); n != 3 {
		t.Errorf("model calls: %d, want 3", n)
	}
}

// denyList is an AccessList that fails for "broken" and denies "banned".
type denyList struct{}

func (denyList) Denied(_ context.Context, p agent.Principal) (bool, error) {
	if p.User == "broken" {
		return false, errors.New("disk on fire")
	}
	return p.User == "banned", nil
}

// A denied principal is refused before commands and the model; when the
// list cannot be read, the message is refused too (it fails closed).
func TestDeniedPrincipalIsRefusedWithoutTheModel(t *testing.T) {
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) { rt.Access = denyList{} })
	h.send("banned", "hello")
	h.send("banned", "/usage")
	h.send("broken", "hello")
	h.send("u1", "hello")
	h.idle()
	all := strings.Join(h.ch.texts(), "|")
	if strings.Count(all, "turned off your access") != 2 || strings.Count(all, "could not check your access (ref ") != 1 || strings.Count(all, "echo: hello") != 1 {
		t.Errorf("replies: %q", h.ch.texts())
	}
	if n := len(h.llm.Requests()); n != 1 {
		t.Errorf("model requests = %d, want 1 (u1's)", n)
	}
}

// stallingAccess is an AccessList whose check lasts until its context
// ends: a turn stopped while it checks (its replica lost the session's
// partition, or the process stops).
type stallingAccess struct{ entered chan struct{} }

func (a stallingAccess) Denied(ctx context.Context, _ agent.Principal) (bool, error) {
	close(a.entered)
	<-ctx.Done()
	return false, ctx.Err()
}

// lockedLog is a log sink that tests read while the runtime writes.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// A turn stopped while its access is checked refuses nothing: the
// message stays queued for whoever runs the session next, no reply is
// written, and the log says so at info level, not as a failure.
func TestTurnStoppedWhileCheckingAccessStaysQueued(t *testing.T) {
	logs := &lockedLog{}
	access := stallingAccess{entered: make(chan struct{})}
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) {
		rt.Access = access
		rt.Log = zerolog.New(logs)
	})
	q := h.send("u1", "hello")
	select {
	case <-access.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the turn never checked access")
	}
	h.stop()
	if got := h.ch.texts(); len(got) != 0 {
		t.Errorf("replies from a stopped turn: %q", got)
	}
	db, err := store.Open(context.Background(), h.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pending, err := db.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].ID != q.ID {
		t.Errorf("pending after the stop: %+v, want message %d still queued", pending, q.ID)
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"info"`) || !strings.Contains(out, "turn stopped before it began") {
		t.Errorf("no info line for the stopped turn in the log:\n%s", out)
	}
	if strings.Contains(out, `"level":"error"`) {
		t.Errorf("a stopped turn logged as an error:\n%s", out)
	}
}
