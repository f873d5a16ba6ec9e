package slack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// outgoing returns the chat.postMessage and chat.update calls, in order.
func outgoing(f *fakeSlack) []posted {
	var out []posted
	for _, m := range f.messages("") {
		if m.Method == "chat.postMessage" || m.Method == "chat.update" {
			out = append(out, m)
		}
	}
	return out
}

// checkOneStreamedMessage checks that calls are one chat.postMessage in
// channel/thread followed only by edits of it, at least interval apart,
// the previews each a beginning of answer, the last call showing final.
func checkOneStreamedMessage(t *testing.T, calls []posted, channel, thread, answer, final string, interval time.Duration) {
	t.Helper()
	if len(calls) < 3 {
		t.Fatalf("%d calls, want a post, a streamed edit and the final edit: %+v", len(calls), calls)
	}
	first := calls[0]
	if first.Method != "chat.postMessage" || first.Channel != channel || first.Thread != thread {
		t.Fatalf("first call = %s to %s/%s, want chat.postMessage to %s/%s", first.Method, first.Channel, first.Thread, channel, thread)
	}
	for i, c := range calls[1:] {
		if c.Method != "chat.update" || c.Channel != channel || c.TS != first.TS {
			t.Fatalf("call %d = %s of %s/%s, want chat.update of the streamed message %s", i+1, c.Method, c.Channel, c.TS, first.TS)
		}
		if gap := c.At.Sub(calls[i].At); gap < interval {
			t.Errorf("call %d came %v after the one before, want at least %v", i+1, gap, interval)
		}
	}
	for i, c := range calls[:len(calls)-1] {
		if !strings.HasPrefix(answer, strings.TrimSpace(c.Text)) {
			t.Errorf("preview %d = %q, not a beginning of the answer", i, c.Text)
		}
	}
	if got := calls[len(calls)-1].Text; got != final {
		t.Errorf("final text = %q, want %q", got, final)
	}
}

func TestStreamEditsThroughRuntime(t *testing.T) {
	const interval = time.Second
	// Every call of Now is 300 ms after the one before: Stream reads it
	// once per word, so a preview is due about every fourth word.
	clock := newFakeClock(300 * time.Millisecond)
	h := newHarness(t, ModeSocket, func(a *Adapter) {
		a.Config.StreamEdits, a.Config.StreamInterval = true, interval
		a.Now, a.Sleep = clock.Now, clock.Sleep
	})
	h.fs.setClock(clock)
	words := strings.Fields("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty")
	ev := dm("U1", "10.000200", strings.Join(words, " "))
	ev["thread_ts"] = "10.000100"
	h.fs.send(eventsEnvelope("e1", "Ev1", ev))
	h.fs.waitAcks(t, "e1")
	h.idle(t)

	calls := outgoing(h.fs)
	t.Logf("%d calls: %d post, %d edits", len(calls), 1, len(calls)-1)
	answer := "echo: " + strings.Join(words, " ")
	checkOneStreamedMessage(t, calls, "D1", "10.000100", answer, answer, interval)
	// 21 words over about 6 s of the fake clock: edits are paced, not one
	// per word.
	if n := len(calls); n > 9 {
		t.Errorf("%d calls for 21 words, want at most one per interval", n)
	}
}

func TestStreamDisabledPostsOnce(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.StreamInterval = time.Millisecond })
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "10.000300", "a b c d e f g h")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	want := []posted{{Method: "chat.postMessage", Channel: "D1", Text: "echo: a b c d e f g h",
		Metadata: `{"event_type":"talon_reply","event_payload":{"part":0,"reply":1}}`, Unfurl: "false/false"}}
	got := outgoing(h.fs)
	for i := range got {
		got[i].TS = ""
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls without stream_edits (-want +got):\n%s", diff)
	}
}

func TestStreamedErrorReplyEndsInOneMessage(t *testing.T) {
	const interval = time.Second
	clock := newFakeClock(400 * time.Millisecond)
	// The model streams its words, then the connection drops: the turn
	// fails after the preview was shown.
	model := llmtest.Script(llmtest.Response{Text: "partial answer that the model never finishes because its stream breaks", Truncate: true})
	h := newHarnessLLM(t, ModeSocket, model, func(a *Adapter) {
		a.Config.StreamEdits, a.Config.StreamInterval = true, interval
		a.Now, a.Sleep = clock.Now, clock.Sleep
	})
	h.fs.setClock(clock)
	ev := dm("U1", "11.000200", "go")
	ev["thread_ts"] = "11.000100"
	h.fs.send(eventsEnvelope("e1", "Ev1", ev))
	h.fs.waitAcks(t, "e1")
	h.idle(t)

	calls := outgoing(h.fs)
	t.Logf("%d calls: %d post, %d edits", len(calls), 1, len(calls)-1)
	if len(calls) < 2 {
		t.Fatalf("calls = %+v, want a streamed post and its final edit", calls)
	}
	final := calls[len(calls)-1].Text
	if !strings.Contains(final, "(ref ") || strings.Contains(final, "partial") {
		t.Fatalf("final text = %q, want the error reply with a reference id", final)
	}
	checkOneStreamedMessage(t, calls, "D1", "11.000100", "partial answer that the model never finishes because its stream breaks", final, interval)
}

func TestWorkingStatusThroughRuntime(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "12.000100", "", "<@UBOT> status please")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	var got []posted
	for _, m := range h.fs.messages("") {
		got = append(got, posted{Method: m.Method, Channel: m.Channel, Thread: m.Thread, Text: m.Text})
	}
	want := []posted{
		{Method: "assistant.threads.setStatus", Channel: "C1", Thread: "12.000100", Text: "is thinking…"},
		{Method: "assistant.threads.setStatus", Channel: "C1", Thread: "12.000100", Text: ""},
		{Method: "chat.postMessage", Channel: "C1", Thread: "12.000100", Text: "echo: status please"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestSocketUnpersistedEventIsNotAcked(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.rt.mu.Lock()
	h.rt.failAccepts = 1
	h.rt.mu.Unlock()
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "13.000100", "first try fails")))
	// Events are handled in order: once e2 is acknowledged, e1 was handled.
	h.fs.send(eventsEnvelope("e2", "Ev2", dm("U1", "13.000200", "second")))
	h.fs.waitAcks(t, "e2")
	if _, ok := h.fs.ack("e1"); ok {
		t.Fatal("an event that was not persisted was acknowledged")
	}
	// Slack redelivers it (same event id, new envelope): now it is taken.
	h.fs.send(eventsEnvelope("e1r", "Ev1", dm("U1", "13.000100", "first try fails")))
	h.fs.waitAcks(t, "e1r")
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: first try fails"}, {Channel: "D1", Text: "echo: second"}}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if strings.Contains(h.logs.String(), "first try fails") {
		t.Error("a message body was logged")
	}
}

func TestEventsAPIUnpersistedEventIs500(t *testing.T) {
	h := newHarness(t, ModeEvents, nil)
	if err := h.ad.setup(); err != nil {
		t.Fatal(err)
	}
	if err := h.ad.waitReady(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.rt.mu.Lock()
	h.rt.failAccepts = 1
	h.rt.mu.Unlock()
	b, _ := json.Marshal(callbackBody("Ev1", dm("U1", "14.000100", "persist me")))
	for i, want := range []int{http.StatusInternalServerError, http.StatusOK, http.StatusOK} {
		w := httptest.NewRecorder()
		h.ad.EventsHandler().ServeHTTP(w, signedRequest(t, "signing-secret", time.Now(), string(b)))
		if w.Code != want {
			t.Errorf("delivery %d: status = %d, want %d", i+1, w.Code, want)
		}
	}
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: persist me"}}
	if diff := cmp.Diff(want, replies(h.fs)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	h.rt.mu.Lock()
	accepts := h.rt.accepts
	h.rt.mu.Unlock()
	if accepts != 2 {
		t.Errorf("Accept called %d times, want 2 (the failure, then the retry; the third delivery is a known event id)", accepts)
	}
}

// More answers streamed at once than the adapter keeps do not make it
// forget the live ones: the first answer's preview is still edited into
// its reply (the 1,002nd stream used to wipe them all, and the reply was
// posted again under a stale preview).
func TestManyLiveStreamsKeepTheFirst(t *testing.T) {
	fs := newFakeSlack(t)
	ad := newBareAdapter(t, fs)
	ad.Config.StreamEdits, ad.Config.StreamInterval = true, time.Second
	clock := newFakeClock(0)
	ad.Now, ad.Sleep = clock.Now, clock.Sleep
	ctx := context.Background()
	to := replyTo{Channel: "C1", Thread: "1.1"}.encode()
	ad.Stream(ctx, 1, agent.SessionKey{}, to, "The first answer begins")
	// A thousand more answers start streaming elsewhere (their previews
	// wait for the channel's pace; their streams are live).
	for id := range agent.InboundID(1001) {
		ad.Stream(ctx, id+2, agent.SessionKey{}, replyTo{Channel: "C2"}.encode(), "another answer")
	}
	if _, err := ad.Deliver(ctx, agent.Reply{ID: 1, Inbound: 1, Kind: agent.ReplyAnswer, Text: "The first answer, complete.", ReplyTo: to}); err != nil {
		t.Fatal(err)
	}
	var c1 []posted
	for _, m := range outgoing(fs) {
		if m.Channel == "C1" {
			c1 = append(c1, m)
		}
	}
	if len(c1) != 2 || c1[0].Method != "chat.postMessage" || c1[1].Method != "chat.update" || c1[1].TS != c1[0].TS ||
		c1[1].Text != "The first answer, complete." {
		t.Errorf("calls in C1 = %+v, want the preview posted, then edited into the reply", c1)
	}
}
