package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// BenchmarkThreadContextOverhead measures what reading a thread of 100
// messages adds to a turn, beyond Slack's own round trip: the real adapter
// (events mode) and runtime on a real SQLite file, the fake Slack and an
// instant fake model. Each iteration runs, in an order rotated every
// iteration: a mention in a thread of 100 messages by three people with
// thread context off (plain: the gateway as before, nothing read), the
// same mention in another thread of 100 with it on (thread: read, named,
// framed, stored and sent), and the same conversations.replies call made
// with net/http alone (roundtrip: the platform's own round trip, the body
// read and nothing decoded). Each turn is timed from the event's POST to
// the reply delivered. overhead-p50 is p50(thread) − p50(plain) −
// p50(roundtrip).
//
//	go test ./adapters/slack -run '^$' -bench ThreadContextOverhead -benchtime 200x -count 5
func BenchmarkThreadContextOverhead(b *testing.B) {
	// Pacing of posts does not wait: what is measured is work, not Slack's
	// rate limits.
	noWait := func(a *Adapter) {
		a.Sleep = func(ctx context.Context, _ time.Duration) bool { return ctx.Err() == nil }
	}
	start := func(threadMessages int) (*fakeSlack, *harness, http.Handler) {
		fs := newFakeSlack(b)
		fs.users = map[string]slackUser{"U1": {name: "Alice", team: team}, "U2": {name: "Bob", team: team}, "U3": {name: "Carol", team: team}}
		h := startHarness(b, harnessOptions{mode: ModeEvents, fs: fs, model: llmtest.Text("ok"), tweak: noWait, threadMessages: threadMessages})
		if err := h.ad.setup(); err != nil {
			b.Fatal(err)
		}
		if err := h.ad.waitReady(h.ctx); err != nil {
			b.Fatal(err)
		}
		return fs, h, h.ad.EventsHandler()
	}
	offFS, offH, offEvents := start(-1)
	onFS, onH, onEvents := start(0)
	n := 0
	turn := func(h *harness, events http.Handler, ts, thread string) time.Duration {
		n++
		ev := channelMsg("app_mention", "U1", ts, thread, "<@UBOT> summarise this thread")
		body, _ := json.Marshal(callbackBody(fmt.Sprintf("Ev%d", n), ev))
		now := time.Now()
		r := httptest.NewRequest(http.MethodPost, "/slack/events", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		sec := strconv.FormatInt(now.Unix(), 10)
		r.Header.Set("X-Slack-Request-Timestamp", sec)
		r.Header.Set("X-Slack-Signature", sign("signing-secret", sec, body))
		w := httptest.NewRecorder()
		start := time.Now()
		events.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("event: status %d", w.Code)
		}
		ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
		defer cancel()
		if err := h.rt.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	fs := onFS
	client := &http.Client{}
	roundTrip := func(thread, latest string) time.Duration {
		form := url.Values{"channel": {"C1"}, "ts": {thread}, "latest": {latest}, "limit": {strconv.Itoa(threadPage)}}
		req, _ := http.NewRequest(http.MethodPost, fs.apiURL()+"conversations.replies", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer xoxb-test-bot-token")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if err != nil || !strings.Contains(string(body), `"line 99`) {
			b.Fatalf("round trip: %v %.200s", err, body)
		}
		return d
	}
	var plain, thread, rt []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		parent := fmt.Sprintf("%d.000000", 1700000000+i)
		msgs := make([]map[string]any, 0, 100)
		for j := 0; j < 100; j++ {
			msgs = append(msgs, map[string]any{"type": "message", "channel": "C1", "user": fmt.Sprintf("U%d", j%3+1),
				"text": fmt.Sprintf("line %d: the deploy of service %d failed with exit code %d, see the log above", j, j, j%7),
				"ts":   fmt.Sprintf("%d.%06d", 1700000000+i, j), "thread_ts": parent})
		}
		for _, f := range []*fakeSlack{offFS, onFS} {
			f.mu.Lock()
			f.seeded, f.msgs, f.bodies, f.methods, f.historyCalls = msgs, nil, nil, nil, nil // only this thread: the fake's scan stays small
			f.mu.Unlock()
		}
		mention := fmt.Sprintf("%d.000200", 1700000000+i)
		steps := []func(){
			func() { plain = append(plain, turn(offH, offEvents, mention, parent)) },
			func() { thread = append(thread, turn(onH, onEvents, mention, parent)) },
			func() { rt = append(rt, roundTrip(parent, mention)) },
		}
		for k := range steps {
			steps[(k+i)%len(steps)]()
		}
		if i == 0 && !strings.Contains(onH.llm.Requests()[0].LastUserText(), "> line 99: ") {
			b.Fatal("the thread did not reach the model")
		}
	}
	b.StopTimer()
	p50 := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(p50(plain)), "plain-p50-ms")
	b.ReportMetric(ms(p50(thread)), "thread-p50-ms")
	b.ReportMetric(ms(p50(rt)), "roundtrip-p50-ms")
	b.ReportMetric(ms(p50(thread)-p50(plain)-p50(rt)), "overhead-p50-ms")
	b.ReportMetric(0, "ns/op")
}
