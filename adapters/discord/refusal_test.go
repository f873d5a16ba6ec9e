package discord

import (
	"strings"
	"testing"
	"time"
)

// A reply being posted in a channel holds discordgo's bucket for that
// channel while its request is in flight. A refusal notice for another
// person in the same channel waits that out: it is dropped only for a
// real rate limit, not because the channel was busy for a moment.
func TestRefusalNoticeWaitsOutAReplyInFlight(t *testing.T) {
	e := start(t, options{config: func(c *Config) { c.DeniedUsers = []string{"66"} }})
	release := make(chan struct{})
	e.f.mu.Lock()
	e.f.stall["POST channels/messages"] = release
	e.f.mu.Unlock()
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hello"))
	waitFor(t, "the reply in flight", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.stalled["POST channels/messages"] >= 1
	})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "66", "let me in"))
	// Release the reply once the notice has given up (the fault this test
	// is about), or after a moment in which it would have.
	const dropped = "refusal notice dropped"
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) && !strings.Contains(e.logs.String(), dropped) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if strings.Contains(e.logs.String(), dropped) {
		t.Fatalf("the notice was dropped while a reply was in flight in its channel")
	}
	got := e.replies(2)
	told := 0
	for _, s := range got {
		if strings.HasPrefix(s, "Sorry, ") {
			told++
		}
	}
	if told != 1 {
		t.Errorf("refusal notices posted: got %d, want 1 (posts %q)", told, got)
	}
}
