package agent_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// partsChannel posts a reply in parts, as a chat adapter does: its text
// split at "|", each part recorded (Reply.Record) right after it is
// posted, and the parts already posted (Reply.Posted) skipped. A part can
// be made to fail once, or to hang until the delivery's context ends (the
// platform does not answer). With previews, the first delta of a streamed
// answer posts a preview message, which Deliver edits into part 0.
type partsChannel struct {
	rt       *agent.Runtime
	previews bool

	mu     sync.Mutex
	posts  []string         // "part text" and "edit <id> part text", in order; guarded by mu
	seen   []agent.Reply    // the replies as each Deliver call saw them; guarded by mu
	fail   map[string]bool  // parts whose next post fails; guarded by mu
	hang   map[string]bool  // parts whose posts hang; guarded by mu
	hung   chan string      // gets a part when its post hangs
	shown  map[int64]string // inbound → its preview message; guarded by mu
	nextID int              // guarded by mu
}

func newPartsChannel() *partsChannel {
	return &partsChannel{fail: map[string]bool{}, hang: map[string]bool{}, hung: make(chan string, 4), shown: map[int64]string{}}
}

func (c *partsChannel) Platform() string { return "test" }

func (c *partsChannel) Stream(ctx context.Context, id agent.InboundID, _ agent.SessionKey, _ string, delta string) {
	if !c.previews || delta == "" {
		return
	}
	c.mu.Lock()
	if c.shown[int64(id)] != "" {
		c.mu.Unlock()
		return
	}
	c.nextID++
	pid := fmt.Sprintf("preview%d", c.nextID)
	c.shown[int64(id)] = pid
	c.posts = append(c.posts, "preview "+pid)
	c.mu.Unlock()
	if err := c.rt.Previewed(ctx, id, pid); err != nil {
		panic(err)
	}
}

func (c *partsChannel) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	c.mu.Lock()
	seen := r
	seen.Record, seen.Posted = nil, slices.Clone(r.Posted)
	c.seen = append(c.seen, seen)
	c.mu.Unlock()
	first := ""
	for i, part := range strings.Split(r.Text, "|") {
		if p, ok := r.PostedPart(i); ok && !p.Preview {
			if i == 0 {
				first = p.PlatformID
			}
			continue
		}
		c.mu.Lock()
		fail, hang := c.fail[part], c.hang[part]
		delete(c.fail, part)
		c.mu.Unlock()
		if hang {
			c.hung <- part
			<-ctx.Done()
			return "", ctx.Err()
		}
		if fail {
			return "", errors.New("platform unavailable")
		}
		c.mu.Lock()
		c.nextID++
		pid := fmt.Sprintf("m%d", c.nextID)
		if p, ok := r.PostedPart(i); ok && p.Preview {
			pid = p.PlatformID
			c.posts = append(c.posts, "edit "+pid+" "+part)
		} else {
			c.posts = append(c.posts, part)
		}
		c.mu.Unlock()
		r.Record(ctx, agent.PostedPart{N: i, PlatformID: pid})
		if i == 0 {
			first = pid
		}
	}
	return first, nil
}

func (c *partsChannel) all() []agent.Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

func (c *partsChannel) texts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.posts)
}

// A delivery that fails part-way is tried again from the first part not
// posted: the retry is told which parts are (and that it resumes), and no
// part is posted twice.
func TestDeliveryRetryContinuesWithTheFirstPartNotPosted(t *testing.T) {
	ch := newPartsChannel()
	ch.fail["p2"] = true
	srv := llmtest.NewServer(t, llmtest.Text("p0|p1|p2|p3|p4"))
	h := startHarnessCh(t, filepath.Join(t.TempDir(), "talon.db"), srv, ch, nil)
	h.send("u1", "a long answer, please")
	h.idle()
	if diff := cmp.Diff([]string{"p0", "p1", "p2", "p3", "p4"}, ch.texts()); diff != "" {
		t.Errorf("posts (-want +got):\n%s", diff)
	}
	seen := ch.all()
	if len(seen) != 2 {
		t.Fatalf("%d Deliver calls, want 2", len(seen))
	}
	if diff := cmp.Diff([]agent.PostedPart{{N: 0, PlatformID: "m1"}, {N: 1, PlatformID: "m2"}}, seen[1].Posted); diff != "" || !seen[1].Resumed || seen[0].Resumed {
		t.Errorf("the retry saw Posted (-want +got):\n%s\nResumed %v (first attempt %v), want true (false)", diff, seen[1].Resumed, seen[0].Resumed)
	}
}

// A process that dies part-way through a reply leaves the parts it posted
// recorded: the next process posts only the others, in order.
func TestDeliveryAfterRestartPostsOnlyTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	srv := llmtest.NewServer(t, llmtest.Text("p0|p1|p2|p3|p4"))
	ch1 := newPartsChannel()
	ch1.hang["p2"] = true
	h1 := startHarnessCh(t, path, srv, ch1, nil)
	h1.send("u1", "a long answer, please")
	within(t, ch1.hung, "the post of part 2")
	h1.stop()

	ch2 := newPartsChannel()
	ch2.nextID = 100
	h2 := startHarnessCh(t, path, srv, ch2, nil)
	h2.idle()
	if diff := cmp.Diff([]string{"p0", "p1"}, ch1.texts()); diff != "" {
		t.Errorf("posts before the restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"p2", "p3", "p4"}, ch2.texts()); diff != "" {
		t.Errorf("posts after the restart (-want +got):\n%s", diff)
	}
	seen := ch2.all()
	if len(seen) != 1 || !seen[0].Resumed {
		t.Fatalf("Deliver calls after the restart: %+v, want one, resumed", seen)
	}
	if diff := cmp.Diff([]agent.PostedPart{{N: 0, PlatformID: "m1"}, {N: 1, PlatformID: "m2"}}, seen[0].Posted); diff != "" {
		t.Errorf("posted parts after the restart (-want +got):\n%s", diff)
	}
	left, err := h2.db.Undelivered(context.Background())
	if err != nil || len(left) != 0 {
		t.Errorf("undelivered after the restart: %v, %v", left, err)
	}
}

// The message a channel posted to show a streamed answer is the reply's
// part 0 to edit: in the same process, and after a restart that came
// before the reply was delivered.
func TestStreamedPreviewBecomesTheFirstPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	srv := llmtest.NewServer(t, llmtest.Text("p0|p1|p2"))
	ch1 := newPartsChannel()
	ch1.previews = true
	h1 := startHarnessCh(t, path, srv, ch1, nil)
	ch1.rt = h1.rt
	h1.send("u1", "first")
	h1.idle()
	if diff := cmp.Diff([]string{"preview preview1", "edit preview1 p0", "p1", "p2"}, ch1.texts()); diff != "" {
		t.Errorf("posts of a streamed answer (-want +got):\n%s", diff)
	}

	ch1.mu.Lock()
	ch1.hang["p0"] = true // the edit hangs: the process dies before it
	ch1.mu.Unlock()
	h1.send("u1", "second")
	within(t, ch1.hung, "the edit of the preview")
	h1.stop()

	ch2 := newPartsChannel()
	ch2.nextID = 100
	h2 := startHarnessCh(t, path, srv, ch2, nil)
	h2.idle()
	if diff := cmp.Diff([]string{"edit preview5 p0", "p1", "p2"}, ch2.texts()); diff != "" {
		t.Errorf("posts after the restart (-want +got):\n%s", diff)
	}
	if seen := ch2.all(); len(seen) != 1 || !cmp.Equal([]agent.PostedPart{{N: 0, PlatformID: "preview5", Preview: true}}, seen[0].Posted) {
		t.Errorf("Deliver after the restart saw %+v, want the preview as part 0", seen)
	}
}

// orderChannel cannot deliver the reply a previous process left (its
// platform is slow for it) until a newer reply of the same session is
// tried, or the test says that session's new turn waits for it.
type orderChannel struct {
	recorder
	old     string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (c *orderChannel) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	switch {
	case r.Text == c.old:
		c.entered <- struct{}{}
		select {
		case <-c.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	case r.Key.Principal.User == "u1":
		// A newer reply of the slow session: it is shown now, and the old
		// one after it.
		id, err := c.recorder.Deliver(ctx, r)
		c.free()
		return id, err
	}
	return c.recorder.Deliver(ctx, r)
}

func (c *orderChannel) free() { c.once.Do(func() { close(c.release) }) }

// A reply a previous process left undelivered is shown before the newer
// replies of its session, however slow the platform is for it; another
// session is not held up, even with one turn at a time: the waiting turn
// holds no slot.
func TestRecoveredRepliesKeepTheirSessionsOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "a", Key: key("u1"), Text: "earlier"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnDone, agent.Reply{Kind: agent.ReplyNotice, Text: "the older answer"}, nil); err != nil {
		t.Fatal(err)
	}

	ch := &orderChannel{old: "the older answer", entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := llmtest.NewServer(t, llmtest.Echo())
	rt := &agent.Runtime{Store: db, LLM: provider(t, srv.URL), Log: zerolog.Nop(), Limits: agent.Limits{MaxConcurrentTurns: 1}}
	waiting := make(chan agent.SessionKey, 1)
	agent.OnRecoveryWait(rt, func(k agent.SessionKey) { waiting <- k })
	rt.Register(ch)
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- rt.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		db.Close()
	})
	within(t, ch.entered, "the slow delivery of the older reply")
	within(t, rt.Ready(), "ready")
	if _, err := rt.Accept(ctx, agent.Inbound{DedupeKey: "c", Key: key("u1"), Text: "newer"}); err != nil {
		t.Fatal(err)
	}
	if k := within(t, waiting, "u1's new turn to wait"); k != key("u1") {
		t.Fatalf("%v waits, want u1", k)
	}
	if _, err := rt.Accept(ctx, agent.Inbound{DedupeKey: "b", Key: key("u2"), Text: "another session"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return slices.Contains(ch.texts(), "echo: another session") })
	ch.free() // the platform gets over its slowness
	idle, stop := context.WithTimeout(ctx, 10e9)
	defer stop()
	if err := rt.WaitIdle(idle); err != nil {
		t.Fatal(err)
	}
	want := []string{"echo: another session", "the older answer", "echo: newer"}
	if diff := cmp.Diff(want, ch.texts()); diff != "" {
		t.Errorf("replies in the order shown (-want +got):\n%s", diff)
	}
}
