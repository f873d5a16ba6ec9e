package slack

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// replies returns (channel, thread, text) of every chat.postMessage.
func replies(f *fakeSlack) []posted {
	var out []posted
	for _, m := range f.messages("chat.postMessage") {
		out = append(out, posted{Channel: m.Channel, Thread: m.Thread, Text: m.Text})
	}
	return out
}

var sortPosts = cmpopts.SortSlices(func(a, b posted) bool { return a.Text < b.Text })

func TestSocketDMTurn(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "1.000100", "hello there")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: hello there"}}
	if diff := cmp.Diff(want, replies(h.fs)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestSocketMentionThreadAndFollowUp(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	// A top-level mention is answered in a thread under it.
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "2.000100", "", "<@UBOT> what is up?")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	// A follow-up by the same user in that thread needs no mention; another
	// user's, and a top-level message without mention, start nothing.
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("message", "U1", "2.000200", "2.000100", "and then?")))
	h.fs.send(eventsEnvelope("e3", "Ev3", channelMsg("message", "U2", "2.000300", "2.000100", "me too")))
	h.fs.send(eventsEnvelope("e4", "Ev4", channelMsg("message", "U1", "2.000400", "", "unrelated chatter")))
	h.fs.waitAcks(t, "e2", "e3", "e4")
	h.idle(t)
	want := []posted{
		{Channel: "C1", Thread: "2.000100", Text: "echo: what is up?"},
		{Channel: "C1", Thread: "2.000100", Text: "echo: and then?"},
	}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestSocketDedupe(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	// One event delivered three times (Slack's retries keep the event_id).
	for _, env := range []string{"e1", "e2", "e3"} {
		h.fs.send(eventsEnvelope(env, "EvSame", dm("U1", "3.000100", "once please")))
	}
	// One message as app_mention and as message: two event ids, one ts.
	h.fs.send(eventsEnvelope("e4", "EvA", channelMsg("app_mention", "U1", "3.000200", "", "<@UBOT> twice?")))
	h.fs.send(eventsEnvelope("e5", "EvB", channelMsg("message", "U1", "3.000200", "", "<@UBOT> twice?")))
	h.fs.waitAcks(t, "e1", "e2", "e3", "e4", "e5")
	h.idle(t)
	want := []posted{
		{Channel: "D1", Text: "echo: once please"},
		{Channel: "C1", Thread: "3.000200", Text: "echo: twice?"},
	}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestSocketLoopGuard(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	own := dm(botUser, "4.000100", "my own reply")
	withBotID := dm("U9", "4.000200", "another bot")
	withBotID["bot_id"] = "B9"
	botMsg := dm("", "4.000300", "integration")
	botMsg["subtype"] = "bot_message"
	botMsg["bot_id"] = botID
	mention := channelMsg("app_mention", "U8", "4.000400", "", "<@UBOT> from a bot")
	mention["bot_id"] = "B8"
	h.fs.send(eventsEnvelope("e1", "Ev1", own))
	h.fs.send(eventsEnvelope("e2", "Ev2", withBotID))
	h.fs.send(eventsEnvelope("e3", "Ev3", botMsg))
	h.fs.send(eventsEnvelope("e4", "Ev4", mention))
	h.fs.waitAcks(t, "e1", "e2", "e3", "e4")
	h.idle(t)
	if got := replies(h.fs); len(got) != 0 {
		t.Errorf("bot messages were answered: %+v", got)
	}
}

// stateLog records what an adapter reports through OnState.
type stateLog struct {
	mu sync.Mutex
	// states in order; guarded by mu.
	states []string
}

func (l *stateLog) add(s string) { l.mu.Lock(); defer l.mu.Unlock(); l.states = append(l.states, s) }
func (l *stateLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.states...)
}

func TestSocketDisconnectLosesAndDoublesNothing(t *testing.T) {
	var states stateLog
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.OnState = states.add })
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "5.000100", "first")))
	h.fs.waitAcks(t, "e1")
	// Slack asks for a reconnect mid-conversation; after it, Slack redelivers
	// the first event (as if its ack was lost) and sends the next.
	h.fs.send([]byte(disconnectMsg))
	h.fs.send(eventsEnvelope("e1b", "Ev1", dm("U1", "5.000100", "first")))
	h.fs.send(eventsEnvelope("e2", "Ev2", dm("U1", "5.000200", "second")))
	h.fs.waitAcks(t, "e1b", "e2")
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: first"}, {Channel: "D1", Text: "echo: second"}}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	h.fs.mu.Lock()
	conns := h.fs.conns
	h.fs.mu.Unlock()
	if conns < 2 {
		t.Errorf("socket connections = %d, want a reconnect", conns)
	}
	// The connection's state as the console's Overview shows it.
	want = nil
	got := states.get()
	wantStates := []string{"connecting", "connecting", "connected", "reconnecting", "connected"}
	if diff := cmp.Diff(wantStates, got); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
}

func TestSocketMalformedEnvelopeIsAcked(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.send([]byte(`{"type":"events_api","envelope_id":"bad1","payload":"not an event"}`))
	h.fs.send(eventsEnvelope("e2", "Ev2", map[string]any{"type": "message", "channel": 5}))
	h.fs.waitAcks(t, "bad1", "e2")
	h.idle(t)
	if got := replies(h.fs); len(got) != 0 {
		t.Errorf("malformed events were answered: %+v", got)
	}
}

func TestSocketEditAndDelete(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	edit := map[string]any{"type": "message", "subtype": "message_changed", "channel": "D1", "channel_type": "im", "ts": "6.000900",
		"message":          map[string]any{"type": "message", "user": "U1", "text": "new text", "ts": "6.000100"},
		"previous_message": map[string]any{"type": "message", "user": "U1", "text": "old text", "ts": "6.000100"}}
	del := map[string]any{"type": "message", "subtype": "message_deleted", "channel": "D1", "channel_type": "im", "ts": "6.000901",
		"deleted_ts": "6.000200", "previous_message": map[string]any{"type": "message", "user": "U1", "text": "gone", "ts": "6.000200"}}
	h.fs.send(eventsEnvelope("e1", "Ev1", edit))
	h.fs.send(eventsEnvelope("e2", "Ev2", del))
	h.fs.waitAcks(t, "e1", "e2")
	h.rt.mu.Lock()
	got := append([]string(nil), h.rt.amended...)
	h.rt.mu.Unlock()
	want := []string{"slack:T1:D1:6.000100|new text|false|6000900", "slack:T1:D1:6.000200||true|0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("amends (-want +got):\n%s", diff)
	}
}

// Two edits of a queued message applied out of the order they were made
// (the older written last, as by a replica that received it before it
// stalled) leave the newer text: the turn answers what the user wrote
// last. Slack's edited.ts orders them.
func TestSocketEditsOutOfOrderKeepTheNewer(t *testing.T) {
	asked, release := make(chan struct{}, 1), make(chan struct{})
	h := newHarnessLLM(t, ModeSocket, func(req llmtest.Request) llmtest.Response {
		if req.LastUserText() == "first" {
			asked <- struct{}{}
			<-release
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	}, nil)
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "8.000100", "first")))
	select {
	case <-asked:
	case <-time.After(15 * time.Second):
		t.Fatal("the first turn's model call")
	}
	// Queued behind the first turn of its session: its turn has not started.
	h.fs.send(eventsEnvelope("e2", "Ev2", dm("U1", "8.000200", "typo")))
	h.fs.waitAcks(t, "e2")
	edit := func(ts, text string) map[string]any {
		return map[string]any{"type": "message", "subtype": "message_changed", "channel": "D1", "channel_type": "im", "ts": ts,
			"message":          map[string]any{"type": "message", "user": "U1", "text": text, "ts": "8.000200", "edited": map[string]any{"user": "U1", "ts": ts}},
			"previous_message": map[string]any{"type": "message", "user": "U1", "text": "typo", "ts": "8.000200"}}
	}
	h.fs.send(eventsEnvelope("e3", "Ev3", edit("8.000900", "newer")))
	h.fs.waitAcks(t, "e3")
	h.fs.send(eventsEnvelope("e4", "Ev4", edit("8.000500", "older")))
	h.fs.waitAcks(t, "e4")
	open()
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: first"}, {Channel: "D1", Text: "echo: newer"}}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestSocketAccessPolicy(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.DeniedUsers = []string{"UBAD"} })
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("UBAD", "7.000100", "hi")))
	h.fs.send(eventsEnvelope("e2", "Ev2", dm("UBAD", "7.000200", "hi again")))
	other := eventsEnvelope("e3", "Ev3", dm("U1", "7.000300", "from elsewhere"))
	var env map[string]any
	_ = json.Unmarshal(other, &env)
	env["payload"].(map[string]any)["team_id"] = "TOTHER"
	other, _ = json.Marshal(env)
	h.fs.send(other)
	h.fs.waitAcks(t, "e1", "e2", "e3")
	h.idle(t)
	if got := replies(h.fs); len(got) != 0 {
		t.Errorf("refused users were answered: %+v", got)
	}
	eventually(t, "the refusal", func() bool { return len(h.fs.messages("chat.postEphemeral")) > 0 })
	h.idle(t)
	if got := h.fs.messages("chat.postEphemeral"); len(got) != 1 || got[0].User != "UBAD" {
		t.Errorf("refusals = %+v, want one ephemeral to UBAD", got)
	}
}
