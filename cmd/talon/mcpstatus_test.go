package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/vault"
)

// progressMessage is what the MCP server reports while it works: hostile,
// as any server's text may be.
const progressMessage = "indexing <!channel> @everyone https://evil.example\nnext line"

// progressStatus is how it must reach a user: one line, nothing that pings
// or links.
const progressStatus = "50% — indexing ‹!channel› ＠everyone https[:]//evil.example next line"

// progressServer is an MCP server (the SDK's, on loopback TLS as
// mcp.example) with a tool that reports its progress once and then waits
// until seen is closed (or 30 s), so that the status is shown while the
// call runs.
func progressServer(t *testing.T, seen <-chan struct{}) (hostPort string, roots *x509.CertPool) {
	t.Helper()
	srv := sdk.NewServer(&sdk.Implementation{Name: "indexer", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "reindex", Description: "Rebuild the index.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, any, error) {
			tok := req.Params.GetProgressToken()
			if tok == nil {
				return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "no progress token"}}}, nil, nil
			}
			if err := req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2, Message: progressMessage}); err != nil {
				return nil, nil, err
			}
			select {
			case <-seen:
			case <-time.After(30 * time.Second):
			case <-ctx.Done():
			}
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "reindexed"}}}, nil, nil
		})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{DisableLocalhostProtection: true})
	ts := tlsServer(t, h, "mcp.example")
	roots = x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return "mcp.example:" + ts.URL[strings.LastIndex(ts.URL, ":")+1:], roots
}

func progressModel(t *testing.T) *llmtest.Server {
	return llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		if strings.HasPrefix(req.System, "You maintain the") {
			return llmtest.Response{Text: "a summary"}
		}
		last := req.Messages[len(req.Messages)-1]
		if last.Role == llm.RoleTool {
			return llmtest.Response{Text: "tool said: " + last.Content}
		}
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: fmt.Sprintf("call_%d", len(req.Messages)), Name: "idx__reindex", Arguments: `{}`}}}
	})
}

func progressConfig(hostPort string) string {
	return fmt.Sprintf(`sandbox:
  allow_private: [127.0.0.1/32]
mcp:
  servers:
    - name: idx
      url: https://%s/mcp
`, hostPort)
}

// TestMCPProgressTerminal: an MCP tool's progress notification reaches the
// terminal as a status line while the call runs, one line and defused.
func TestMCPProgressTerminal(t *testing.T) {
	seen := make(chan struct{})
	var closeSeen sync.Once
	defer closeSeen.Do(func() { close(seen) })
	hostPort, roots := progressServer(t, seen)
	model := progressModel(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", model.URL)+progressConfig(hostPort))
	key, _ := vault.GenerateKey()
	out := &watched{opened: map[string]bool{}}
	stdin, feed := io.Pipe()
	var errOut strings.Builder
	e := env{getenv: testEnv(map[string]string{vault.EnvKey: key.Encode()}), resolver: loopbackResolver{"mcp.example": true}, rootCAs: roots,
		stdin: stdin, stdout: out, stderr: &syncWriter{w: &errOut}}
	done := make(chan int, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() { done <- e.main(ctx, []string{"run", "--config", cfg}) }()

	_, _ = io.WriteString(feed, "reindex\n")
	out.waitFor(t, "… "+progressStatus+"\n")
	closeSeen.Do(func() { close(seen) })
	out.waitFor(t, "tool said: reindexed")
	_ = feed.Close()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run: exit %d\n%s", code, errOut.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the gateway did not stop")
	}
	if strings.Contains(out.String(), "@everyone") || strings.Contains(out.String(), "<!channel>") {
		t.Errorf("the raw progress message reached the terminal:\n%s", out.String())
	}
}

// TestMCPProgressSlack: an MCP tool's progress notification reaches the
// fake Slack as the reply thread's assistant status
// (assistant.threads.setStatus) while the call runs, defused; the status
// is cleared when the turn ends.
func TestMCPProgressSlack(t *testing.T) {
	seen := make(chan struct{})
	var closeSeen sync.Once
	defer closeSeen.Do(func() { close(seen) })
	hostPort, roots := progressServer(t, seen)
	model := progressModel(t)
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", model.URL), "http:\n  listen: \"\"\n",
		fmt.Sprintf("http:\n  listen: %s\n", addr), 1) + slackSection("events", fs.url()) + progressConfig(hostPort)
	cfg := writeConfig(t, dir, body)
	key, _ := vault.GenerateKey()
	getenv := func(k string) string {
		if k == vault.EnvKey {
			return key.Encode()
		}
		return slackEnv()(k)
	}
	var stderr syncBuffer
	stop := startRunEnvWith(t, cfg, addr, env{getenv: getenv, resolver: loopbackResolver{"mcp.example": true}, rootCAs: roots}, &stderr)
	defer stop()

	event, _ := json.Marshal(map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1", "event_time": time.Now().Unix(),
		"event": map[string]any{"type": "app_mention", "channel": "C1", "user": "U1",
			"ts": "1700000000.000100", "event_ts": "1700000000.000100", "text": "<@UBOT> reindex"},
	})
	if code := postSlackEvent(t, "http://"+addr+"/slack/events", testSigningSecret, event); code != http.StatusOK {
		t.Fatalf("event: status %d", code)
	}
	statuses := func() []url.Values {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var out []url.Values
		for i, m := range fs.methods {
			if m == "assistant.threads.setStatus" {
				form, _ := url.ParseQuery(fs.bodies[i])
				out = append(out, form)
			}
		}
		return out
	}
	want := "is thinking… (" + progressStatus + ")"
	waitUntil(t, func() bool {
		for _, f := range statuses() {
			if f.Get("status") == want {
				return true
			}
		}
		return false
	})
	closeSeen.Do(func() { close(seen) })
	waitUntil(t, func() bool { return len(fs.postedTo("C1")) > 0 })
	waitUntil(t, func() bool {
		ss := statuses()
		return len(ss) > 0 && ss[len(ss)-1].Get("status") == ""
	})
	for _, f := range statuses() {
		if f.Get("channel_id") != "C1" || f.Get("thread_ts") != "1700000000.000100" {
			t.Errorf("status set in %q/%q, want C1/1700000000.000100", f.Get("channel_id"), f.Get("thread_ts"))
		}
		if s := f.Get("status"); strings.Contains(s, "<!channel>") || strings.Contains(s, "@everyone") || strings.Contains(s, "\n") {
			t.Errorf("raw progress text reached Slack: %q", s)
		}
	}
	if got := fs.postedTo("C1"); len(got) != 1 || got[0] != "tool said: reindexed" {
		t.Errorf("replies = %q", got)
	}
}
