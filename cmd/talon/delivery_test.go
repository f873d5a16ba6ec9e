package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestLongSlackReplyAcrossSIGKILL boots `talon run` in a child process with
// Slack in events mode, asks for an answer Slack gets in five messages,
// and kills the gateway with SIGKILL while Slack has taken the third
// message but not yet answered: posted, not recorded. The next start posts
// only the fourth and the fifth, in the thread: the first two are recorded
// in the database, the third is found in the thread by its metadata.
func TestLongSlackReplyAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the gateway")
	}
	t.Setenv("SLACK_BOT_TOKEN", testBotToken)
	t.Setenv("SLACK_APP_TOKEN", testAppToken)
	t.Setenv("SLACK_SIGNING_SECRET", testSigningSecret)
	var parts []string
	for i := 1; i <= 5; i++ {
		parts = append(parts, fmt.Sprintf("Part %d: %s(end of part %d)", i, strings.Repeat("words to fill the paragraph ", 4), i))
	}
	llmSrv := llmtest.NewServer(t, llmtest.Text(strings.Join(parts, "\n\n")))
	fs := newFakeSlackAPI(t)
	fs.lost = "Part 3:"
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url()) + "  max_message_chars: 200\n"
	cfg := writeConfig(t, dir, body)
	ready := func() {
		t.Helper()
		waitUntil(t, func() bool {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	first := startChild(t, cfg)
	ready()
	event, _ := json.Marshal(map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1", "event_time": time.Now().Unix(),
		"event": map[string]any{"type": "app_mention", "channel": "C1", "user": "U1",
			"ts": "1700000000.000100", "event_ts": "1700000000.000100", "text": "<@UBOT> a long answer please"},
	})
	if code := postSlackEvent(t, "http://"+addr+"/slack/events", testSigningSecret, event); code != http.StatusOK {
		t.Fatalf("event: status %d", code)
	}
	select {
	case <-fs.hung:
	case <-time.After(30 * time.Second):
		t.Fatal("the third message was never posted")
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited

	startChild(t, cfg)
	inThread := func() []string {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var texts []string
		for _, p := range fs.posts {
			if p.Get("channel") == "C1" && p.Get("thread_ts") == "1700000000.000100" {
				texts = append(texts, strings.TrimSpace(p.Get("text")))
			}
		}
		return texts
	}
	waitUntil(t, func() bool { return slices.Contains(inThread(), parts[4]) })
	if got := inThread(); !slices.Equal(got, parts) {
		t.Errorf("messages in the thread: %.9q, want the five parts once each, in order", got)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if !slices.Contains(fs.methods, "conversations.replies") {
		t.Error("the restarted gateway did not look in the thread for what it had posted")
	}
}
