package discord

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// bare is an adapter with a recording runtime, run against a fake Discord
// by a test that looks at how Run ends.
type bare struct {
	f    *fakeDiscord
	a    *Adapter
	logs *syncBuffer
	done chan error // Run's result
	stop context.CancelFunc
}

// runBare starts an adapter on f and waits for its first session, unless
// f refuses it (then Run's end is for the test to see).
func runBare(t *testing.T, f *fakeDiscord, base, maxWait time.Duration, waitReady bool) *bare {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Token = "test-token"
	cfg.Commands = false
	logs := &syncBuffer{}
	a := &Adapter{Config: cfg, Runtime: &fakeRuntime{}, APIBase: f.srv.URL, Log: zerolog.New(logs),
		reconnectBase: base, reconnectMax: maxWait}
	ctx, cancel := context.WithCancel(context.Background())
	b := &bare{f: f, a: a, logs: logs, done: make(chan error, 1), stop: cancel}
	go func() { b.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return 10 s after its context ended")
		}
	})
	if waitReady {
		waitFor(t, "gateway session", func() bool { return f.connections() >= 1 })
	}
	return b
}

// runEnd waits for Run to return by itself and returns its error.
func (b *bare) runEnd(t *testing.T) error {
	t.Helper()
	select {
	case err := <-b.done:
		b.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still running 10 s later; IDENTIFYs: %d, RESUMEs: %d", len(b.f.framesWith(2)), len(b.f.framesWith(6)))
		return nil
	}
}

// logLines returns the adapter's log lines that carry msg, decoded.
func (b *bare) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if text, _ := m["message"].(string); strings.Contains(text, msg) {
			out = append(out, m)
		}
	}
	return out
}

// A fatal close code stops Run with the fix named, logged at error,
// however it arrives: on an established session's reader, or in answer to
// the IDENTIFY that follows an invalid session (op 9).
func TestFatalCloseStopsRun(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cause func(f *fakeDiscord)
		code  int
		fix   string
	}{
		{"4004 on the session's socket", func(f *fakeDiscord) { f.closeWith(4004, "Authentication failed.") },
			4004, "reset it in the Developer Portal (Bot → Reset Token) and set DISCORD_BOT_TOKEN"},
		{"op 9, then 4014 on the next IDENTIFY", func(f *fakeDiscord) {
			f.mu.Lock()
			f.closeCode = 4014
			f.mu.Unlock()
			f.sendOp(9, false)
		}, 4014, "enable it in the Developer Portal (Bot → Privileged Gateway Intents) or set discord.message_content: false"},
		{"4011 on the session's socket", func(f *fakeDiscord) { f.closeWith(4011, "Sharding required.") },
			4011, "sharding required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			b := runBare(t, f, time.Millisecond, 10*time.Millisecond, true)
			c.cause(f)
			err := b.runEnd(t)
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != c.code || !strings.Contains(err.Error(), c.fix) {
				t.Fatalf("Run = %v, want a *CloseError %d naming the fix %q", err, c.code, c.fix)
			}
			lines := b.logLines(t, "Discord refused the bot")
			if len(lines) != 1 || lines[0]["level"] != "error" || !strings.Contains(lines[0]["error"].(string), c.fix) {
				t.Errorf("log lines = %v, want one at error naming the fix", lines)
			}
			// Stopped for good: nothing after the refusal.
			ids, resumes := len(f.framesWith(2)), len(f.framesWith(6))
			if want := map[int]int{4004: 1, 4011: 1, 4014: 2}[c.code]; ids != want || resumes != 0 {
				t.Errorf("IDENTIFY %d times, RESUME %d times; want %d and 0", ids, resumes, want)
			}
		})
	}
}

// A session invalidated again and again (op 9 in answer to every
// IDENTIFY) is identified again after a backoff that grows with jitter,
// never at once, and each loss is logged at warn.
func TestRepeatedInvalidSessionBacksOff(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	const base = 20 * time.Millisecond
	b := runBare(t, f, base, 10*time.Second, true)
	f.mu.Lock()
	f.invalid = true
	f.mu.Unlock()
	f.sendOp(9, false)
	const n = 7 // IDENTIFYs after the first
	waitFor(t, "IDENTIFYs", func() bool { return len(f.framesWith(2)) >= 1+n })
	ids := f.framesWith(2)
	// The k-th identify after the op 9 waited at least half of
	// base·2^(k-1) (agent.Backoff's jitter is in [d/2, d]).
	for k := 1; k <= n; k++ {
		gap := ids[k].at.Sub(ids[k-1].at)
		if least := base << (k - 1) / 2; gap < least {
			t.Errorf("IDENTIFY %d came %v after the previous one, want at least %v", k+1, gap, least)
		}
	}
	b.stop()
	<-b.done
	b.done <- nil
	lines := b.logLines(t, "reconnecting")
	if len(lines) < n {
		t.Fatalf("%d reconnection log lines, want at least %d", len(lines), n)
	}
	for _, l := range lines {
		if l["level"] != "warn" {
			t.Errorf("reconnection logged at %v, want warn: %v", l["level"], l)
		}
	}
}

// A plain network drop is resumed (at the session's resume_gateway_url,
// with its sequence number) after a backoff, and the events missed are
// replayed without a new IDENTIFY.
func TestNetworkDropResumesAfterBackoff(t *testing.T) {
	var mu sync.Mutex
	var states []string
	e := start(t, options{reconnectBase: 200 * time.Millisecond, reconnectMax: time.Second, onState: func(s string) {
		mu.Lock()
		defer mu.Unlock()
		states = append(states, s)
	}})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "one"))
	e.replies(1)
	e.f.mu.Lock()
	e.f.replay = []event{{"MESSAGE_CREATE", dmFrom("42", "7", "two")}}
	e.f.mu.Unlock()
	dropped := time.Now()
	e.f.drop()
	waitFor(t, "RESUME", func() bool { return len(e.f.framesWith(6)) == 1 })
	got := e.replies(2)
	if got[1] != "echo: two" {
		t.Errorf("replies = %q, want the replayed message answered", got)
	}
	r := e.f.framesWith(6)[0]
	if wait := r.at.Sub(dropped); wait < 100*time.Millisecond {
		t.Errorf("RESUME %v after the drop, want at least half the 200 ms backoff base", wait)
	}
	var resume struct {
		SessionID string `json:"session_id"`
		Seq       int64  `json:"seq"`
	}
	if err := json.Unmarshal(r.D, &resume); err != nil {
		t.Fatal(err)
	}
	if resume.SessionID != "sess-1" || resume.Seq != 2 || r.path != "/ws-resume" {
		t.Errorf("RESUME %+v on %s, want session sess-1 at seq 2 on /ws-resume", resume, r.path)
	}
	if n := len(e.f.framesWith(2)); n != 1 {
		t.Errorf("IDENTIFY sent %d times, want 1 (resumed)", n)
	}
	// The connection's state as the console's Overview shows it.
	mu.Lock()
	seen := strings.Join(states, "|")
	mu.Unlock()
	if want := "connecting|connected|reconnecting (resuming)|connected (resumed)"; seen != want {
		t.Errorf("states = %s, want %s", seen, want)
	}
}

// A connection whose heartbeats go unacknowledged is a zombie: closed with
// a code that keeps the session (not 1000) and resumed. A stop closes with
// 1000, which ends the session.
func TestZombieConnectionResumed(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	f.heartbeat = 20
	b := runBare(t, f, time.Millisecond, 10*time.Millisecond, true)
	f.mu.Lock()
	f.noAcks = true
	f.mu.Unlock()
	waitFor(t, "RESUME", func() bool { return len(f.framesWith(6)) >= 1 })
	f.mu.Lock()
	f.noAcks = false
	closes := append([]int(nil), f.closes...)
	f.mu.Unlock()
	if len(closes) == 0 || closes[0] != closeResumable {
		t.Errorf("client closes = %v, want %d (resumable) first", closes, closeResumable)
	}
	waitFor(t, "resumed", func() bool { return f.connections() >= 2 })
	b.stop()
	<-b.done
	b.done <- nil
	waitFor(t, "the close of the stop", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.closes) >= 2 && f.closes[len(f.closes)-1] == 1000
	})
	if n := len(f.framesWith(2)); n != 1 {
		t.Errorf("IDENTIFY sent %d times, want 1", n)
	}
}

func TestFatalCloseCodes(t *testing.T) {
	t.Parallel()
	for code := 4000; code <= 4015; code++ {
		fatal := fatalClose(code) != nil
		want := code == 4004 || (code >= 4010 && code <= 4014)
		if fatal != want {
			t.Errorf("close %d fatal = %v, want %v", code, fatal, want)
		}
	}
}

// A token Discord refuses on REST (a 401 to GET /gateway, before any
// socket: the fake answers every call with a wrong token so) stops Run
// with the fix named, as close code 4004 does, instead of asking again
// every 2 minutes forever.
func TestRefusedTokenBeforeTheGatewayStopsRun(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	cfg := DefaultConfig()
	cfg.Token = "revoked-token"
	cfg.Commands = false
	logs := &syncBuffer{}
	a := &Adapter{Config: cfg, Runtime: &fakeRuntime{}, APIBase: f.srv.URL, Log: zerolog.New(logs),
		reconnectBase: time.Millisecond, reconnectMax: 5 * time.Millisecond}
	b := &bare{f: f, a: a, logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { b.done <- a.Run(ctx) }()
	err := b.runEnd(t)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 4004 || !strings.Contains(err.Error(), "Reset Token") {
		t.Errorf("Run = %v, want the invalid-token CloseError (4004) naming the fix", err)
	}
}

// A gateway frame above the limit (maxGatewayFrame) ends the connection, which is
// resumed, instead of being read whole into memory; later messages are
// answered.
func TestOversizedGatewayFrameResumes(t *testing.T) {
	e := start(t, options{reconnectBase: 50 * time.Millisecond, reconnectMax: 200 * time.Millisecond, maxFrame: 64 << 10})
	_ = e.f.send("MESSAGE_CREATE", dmFrom("41", "7", strings.Repeat("x", 100<<10))) // the adapter may close mid-write
	waitFor(t, "RESUME after the oversized frame", func() bool { return len(e.f.framesWith(6)) >= 1 })
	e.f.dispatch("MESSAGE_CREATE", dmFrom("42", "7", "two"))
	if got := e.replies(1); got[0] != "echo: two" {
		t.Errorf("replies = %q, want the next message answered", got)
	}
}
