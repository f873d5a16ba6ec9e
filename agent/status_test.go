package agent_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/talonhq/talon/agent"
)

func TestStatusText(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "40% — indexing", "40% — indexing"},
		{"control characters", "a\nb\r\tc\x00d\u202ee", "a b c d e"},
		{"slack mentions", "<!channel> ping <@U123>", "‹!channel› ping ‹＠U123›"},
		{"discord mentions", "@everyone @here", "＠everyone ＠here"},
		{"links", "see https://evil.example/x", "see https[:]//evil.example/x"},
		{"invalid utf-8", "a\xffb", "a\uFFFDb"},
		{"only spaces", " \n\t ", ""},
		{"long", strings.Repeat("é", 80), strings.Repeat("é", 48) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := agent.StatusText(tc.in)
			if got != tc.want {
				t.Errorf("StatusText(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if len(got) > agent.MaxStatusBytes {
				t.Errorf("len = %d > %d", len(got), agent.MaxStatusBytes)
			}
		})
	}
}

// statusChannel records the statuses shown; block, when set, holds each
// ShowStatus until its context ends.
type statusChannel struct {
	mu    sync.Mutex
	shown []string
	at    []time.Time
	block bool
	err   error
}

func (c *statusChannel) Platform() string { return "test" }
func (c *statusChannel) Deliver(context.Context, agent.Reply) (string, error) {
	return "", nil
}
func (c *statusChannel) ShowStatus(ctx context.Context, _ agent.SessionKey, replyTo, text string) error {
	c.mu.Lock()
	c.shown = append(c.shown, replyTo+": "+text)
	c.at = append(c.at, time.Now())
	block, err := c.block, c.err
	c.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (c *statusChannel) get() ([]string, []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.shown...), append([]time.Time(nil), c.at...)
}

// TestToolStatusThrottled: a burst of statuses shows the first at once and
// the newest a second later, never two within StatusInterval; nothing is
// shown after the turn ended, and a turn not running shows nothing.
func TestToolStatusThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &agent.Runtime{}
		ch := &statusChannel{err: errors.New("refused")}
		key := agent.SessionKey{Principal: agent.Principal{Platform: "test", User: "U1"}}
		end := agent.StartStatus(r, context.Background(), 7, ch, key, "thread-1")
		for i := range 10 {
			r.ToolStatus(key, 7, strings.Repeat("x", i+1))
			synctest.Wait()
		}
		r.ToolStatus(key, 8, "another turn")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		shown, at := ch.get()
		want := []string{"thread-1: x", "thread-1: xxxxxxxxxx"}
		if strings.Join(shown, "|") != strings.Join(want, "|") {
			t.Fatalf("shown = %q, want %q", shown, want)
		}
		if d := at[1].Sub(at[0]); d < agent.StatusInterval {
			t.Errorf("two statuses %v apart, want at least %v", d, agent.StatusInterval)
		}
		end()
		r.ToolStatus(key, 7, "after the end")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if shown, _ := ch.get(); len(shown) != 2 {
			t.Errorf("shown after the end: %q", shown)
		}
	})
}

// TestToolStatusNeverBlocks: a platform that never answers holds neither
// the caller of ToolStatus nor the end of the turn beyond the update's own
// bound.
func TestToolStatusNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &agent.Runtime{}
		ch := &statusChannel{block: true}
		key := agent.SessionKey{Principal: agent.Principal{Platform: "test", User: "U1"}}
		end := agent.StartStatus(r, context.Background(), 1, ch, key, "")
		start := time.Now()
		for range 100 {
			r.ToolStatus(key, 1, "working")
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("ToolStatus took %v of the fake clock", d)
		}
		synctest.Wait()
		end()
		if shown, _ := ch.get(); len(shown) != 1 {
			t.Errorf("shown = %q, want one (the rest wait for it)", shown)
		}
	})
}
