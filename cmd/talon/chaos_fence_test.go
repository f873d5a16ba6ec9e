package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestChaosPausedOwnerIsFenced: two `talon run` replicas on PostgreSQL and
// NATS with one partition; a message makes the model call http_fetch
// twice in a row, and the first call's target blocks. The partition's
// owner is stopped with SIGSTOP while that call blocks; the other replica
// takes the partition over (its lease expired), resumes the turn (the
// blocked call reported interrupted, not run again), runs the second call
// and answers. Then the target lets the first call return and the sleeper
// is woken with SIGCONT: whatever it still does for that turn, the store
// refuses under its superseded fencing token. Each call reached its target
// once, the message has one reply, and the blocked call's record is the
// new owner's.
func TestChaosPausedOwnerIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two replicas and pauses one")
	}
	natsURL := needPostgresAndNATS(t, "the test of a paused partition owner")
	dbURL, pool := postgresSchema(t)
	prefix := natsPrefix(t, natsURL)

	var hitsMu sync.Mutex
	hits := map[string]int{}
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	counter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hitsMu.Lock()
		hits[r.URL.Path]++
		hitsMu.Unlock()
		if strings.HasSuffix(r.URL.Path, "-1") {
			<-release
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "counted %s", r.URL.Path)
	}))
	defer counter.Close()
	// "TEXT fetch": http_fetch of /TEXT-1, then of /TEXT-2, then the answer.
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		user := strings.TrimSuffix(req.LastUserText(), " fetch")
		call := func(n int) llmtest.Response {
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_" + strconv.Itoa(n), Name: "http_fetch",
				Arguments: fmt.Sprintf(`{"url":%q}`, fmt.Sprintf("%s/%s-%d", counter.URL, user, n))}}}
		}
		switch last := req.Messages[len(req.Messages)-1]; {
		case last.Role != llm.RoleTool:
			return call(1)
		case last.ToolCallID == "call_1":
			return call(2)
		}
		return llmtest.Response{Text: "answer to " + user}
	})
	fs := newFakeSlackAPI(t)

	dir := t.TempDir()
	toolsDir := writeFetchTool(t, dir, counter.URL, "60s")
	setReplicaEnv(t, dbURL, natsURL)

	reps := make([]*chaosProc, 2)
	for i := range reps {
		rdir := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := &chaosProc{t: t, name: fmt.Sprintf("fence-%d", i), addr: freeAddr(t)}
		body := strings.Replace(baseConfig(filepath.Join(rdir, "data"), "openai", model.URL), `listen: ""`, "listen: "+r.addr, 1)
		body = strings.Replace(body, "level: debug", "level: info", 1)
		body += slackSection("events", fs.url()) +
			"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n" +
			fmt.Sprintf("nats:\n  url: ${NATS_URL}\n  partitions: 1\n  lease_ttl: 3s\n  replica: %s\n  prefix: %s\n", r.name, prefix) +
			fmt.Sprintf("sandbox:\n  tools_dir: %s\n  allow_private: [127.0.0.1/32]\n", toolsDir)
		r.cfg = writeConfig(t, rdir, body)
		reps[i] = r
	}
	defer func() {
		for _, r := range reps {
			r.kill(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, r := range reps {
				t.Logf("last log of %s:\n%s", r.name, tailLog(filepath.Dir(r.cfg), r.starts))
			}
		}
	}()
	for _, r := range reps {
		r.start()
	}
	for _, r := range reps {
		r.ready()
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, prefix+"_partitions")
	if err != nil {
		t.Fatal(err)
	}
	ownerOf := func() string {
		e, err := kv.Get(ctx, "owner.0")
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	waitFor(t, 30*time.Second, "the partition owned", func() bool { return ownerOf() != "" })

	body, _ := json.Marshal(map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "EvFence1", "event_time": time.Now().Unix(),
		"event": map[string]any{"type": "message", "channel": "D001", "channel_type": "im", "user": "U001",
			"ts": "1700000000.000001", "event_ts": "1700000000.000001", "text": "paused fetch"},
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+reps[0].addr+"/slack/events", bytes.NewReader(body))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", signSlack(testSigningSecret, ts, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("event: HTTP %d", resp.StatusCode)
	}
	count := func(path string) int {
		hitsMu.Lock()
		defer hitsMu.Unlock()
		return hits[path]
	}
	waitFor(t, 30*time.Second, "the first call blocks at its target", func() bool { return count("/paused-1") == 1 })

	var sleeper *chaosProc
	for _, r := range reps {
		if r.name == ownerOf() {
			sleeper = r
		}
	}
	if sleeper == nil {
		t.Fatalf("the partition is owned by %q, not a replica", ownerOf())
	}
	if err := sleeper.proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	posted := func() []string {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var out []string
		for _, p := range fs.posts {
			out = append(out, p.Get("text"))
		}
		return out
	}
	waitFor(t, 45*time.Second, "the other replica answers", func() bool { return len(posted()) > 0 })
	took := time.Since(paused)
	releaseOnce.Do(func() { close(release) })
	if err := sleeper.proc.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := time.Now()
	// The sleeper's call returns now; give what it still does time to
	// show, and wait for its log to say its lease was lost.
	waitFor(t, 30*time.Second, "the woken replica loses its lease", func() bool {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(sleeper.cfg), fmt.Sprintf("run%d.log", sleeper.starts)))
		return bytes.Contains(b, []byte("cluster: lease lost; its work stops"))
	})
	time.Sleep(2 * time.Second)

	if n := count("/paused-1"); n != 1 {
		t.Errorf("the blocked call reached its target %d times, want 1", n)
	}
	if n := count("/paused-2"); n != 1 {
		t.Errorf("the second call reached its target %d times, want 1", n)
	}
	if got := posted(); len(got) != 1 || got[0] != "answer to paused" {
		t.Errorf("replies posted: %q, want one answer", got)
	}
	var replies, delivered int
	var result string
	var callDone, turnDone int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM outbound), (SELECT count(*) FROM outbound WHERE state = 'delivered'),
			(SELECT result FROM tool_calls WHERE call_id = 'call_1'), (SELECT coalesce(finished_at, 0) FROM tool_calls WHERE call_id = 'call_1'),
			(SELECT coalesce(max(finished_at), 0) FROM turns)`).Scan(&replies, &delivered, &result, &callDone, &turnDone); err != nil {
		t.Fatal(err)
	}
	if replies != 1 || delivered != 1 {
		t.Errorf("%d replies stored, %d delivered; want 1, 1", replies, delivered)
	}
	if !strings.HasPrefix(result, "interrupted") || callDone == 0 || callDone > turnDone {
		t.Errorf("the blocked call's record: %q finished at %d (the turn at %d); want the new owner's interrupted, before the turn ended", result, callDone, turnDone)
	}
	t.Logf("the owner paused with the call blocked; the other replica answered %s later; woken %s after the pause; each call ran once, one reply",
		took.Round(time.Millisecond), woke.Sub(paused).Round(time.Millisecond))
}
