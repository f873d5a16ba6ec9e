package discord

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A message that arrives while Talon stops is not accepted (the runtime
// refuses it), and is not lost: its channel is remembered for the read
// back, with a cursor before it, so the next start reads it back and
// answers it, once. The channel was never seen before, so nothing else
// would read it.
func TestMessageRefusedWhileStoppingAnsweredAfterRestart(t *testing.T) {
	f := newFake(t)
	o := options{fakeDiscord: f, cursors: true, dbPath: filepath.Join(t.TempDir(), "t.db")}
	e := start(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	m := dmFrom("1000041", "7", "sent while stopping")
	e.f.dispatch("MESSAGE_CREATE", m)
	waitFor(t, "the refusal", func() bool { return strings.Contains(e.logs.String(), "not accepted while Talon stops") })
	if strings.Contains(e.logs.String(), `"level":"error"`) {
		t.Errorf("a refusal while stopping is logged as an error:\n%s", e.logs.String())
	}
	e.stop()
	if n := len(f.postsSnapshot()); n != 0 {
		t.Fatalf("%d messages posted while stopping, want none", n)
	}

	f.mu.Lock()
	f.history[dmChannel] = []msg{m}
	f.mu.Unlock()
	e = run(t, o)
	if diff := cmp.Diff([]string{"echo: sent while stopping"}, e.replies(1)); diff != "" {
		t.Errorf("replies after the restart (-want +got):\n%s", diff)
	}
}

// A /talon command that arrives while Talon stops is told to try again,
// not that something went wrong: Discord never sends it again.
func TestCommandWhileStoppingSaysRestarting(t *testing.T) {
	e := start(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	e.f.dispatch("INTERACTION_CREATE", command("901", "status"))
	waitFor(t, "the answer", func() bool { return len(e.f.hooksSnapshot()) == 1 })
	got, _ := e.f.hooksSnapshot()[0].body["content"].(string)
	if got != "Talon is restarting; try again in a moment." {
		t.Errorf("answer = %q, want the restart notice", got)
	}
}

// Whom a refusal was told is remembered in bounded memory: many distinct
// refused people, each told once, leave at most the bound remembered, the
// most recent of them.
func TestRefusalMemoryBounded(t *testing.T) {
	const bound, people = 8, 40
	e := start(t, options{maxTold: bound, config: func(c *Config) { c.AllowedUsers = []string{"1"} }})
	// Each message in a DM of its own: the per-channel limit stays out of
	// the way.
	dm := func(id, user int) msg {
		m := dmFrom(strconv.Itoa(2000000+id), strconv.Itoa(500+user), "hi")
		m.ChannelID = strconv.Itoa(7000 + id)
		return m
	}
	for i := range people {
		// One at a time: notices in flight are bounded too.
		e.f.dispatch("MESSAGE_CREATE", dm(i, i))
		waitFor(t, "the notice "+strconv.Itoa(i), func() bool { return len(e.f.postsSnapshot()) == i+1 })
	}
	if n, _ := e.a.refusals.Len(); n > bound {
		t.Errorf("%d people remembered as told, want at most %d", n, bound)
	}
	// The latest is remembered (not told again); the first was forgotten
	// (told again).
	e.f.dispatch("MESSAGE_CREATE", dm(people, people-1))
	e.f.dispatch("MESSAGE_CREATE", dm(people+1, 0))
	waitFor(t, "the first told again", func() bool { return len(e.f.postsSnapshot()) == people+1 })
	if !strings.Contains(e.logs.String(), `"message_id":"`+strconv.Itoa(2000000+people)+`","message":"discord: refusal notice not sent: told already`) {
		t.Errorf("the latest person was not remembered as told")
	}
}
