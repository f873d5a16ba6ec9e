package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestConsoleServedByRun boots talon run with the console enabled, has one
// conversation on the terminal channel, and reads its usage in the console
// after signing in with TALON_CONSOLE_TOKEN.
func TestConsoleServedByRun(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgText := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", srv.URL), `listen: ""`, "listen: "+addr+"\n  public_url: https://talon.example.com/", 1) +
		"console:\n  enabled: true\n  admins: [slack:T1:U1]\n  slack_oidc: {client_id: \"123.456\", client_secret: \"${SLACK_CLIENT_SECRET}\"}\n"
	cfg := writeConfig(t, dir, cfgText)
	const token = "console-token-0123456789"
	stdinR, stdinW := io.Pipe()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- env{stdin: stdinR, stdout: &out, stderr: io.Discard, getenv: testEnv(map[string]string{"TALON_CONSOLE_TOKEN": token, "SLACK_CLIENT_SECRET": "client-secret-xyz"})}.
			main(context.Background(), []string{"run", "--config", cfg})
	}()
	base := "http://" + addr
	waitUntil(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	fmt.Fprintln(stdinW, "count me")
	waitUntil(t, func() bool { return strings.Contains(out.String(), "echo: count me") })

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	read := func(resp *http.Response, err error) (*http.Response, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, page := read(c.Get(base + "/console/"))
	if resp.Request.URL.Path != "/console/signin" {
		t.Fatalf("unsigned GET /console/ ended at %s, want the sign-in page", resp.Request.URL)
	}
	// Sign in with Slack starts at Slack, coming back to http.public_url.
	noFollow := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ = read(noFollow.Get(base + "/console/oidc/start"))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc == nil || loc.Host != "slack.com" || loc.Path != "/openid/connect/authorize" ||
		loc.Query().Get("client_id") != "123.456" || loc.Query().Get("redirect_uri") != "https://talon.example.com/console/oidc/callback" ||
		strings.Contains(loc.String(), "client-secret-xyz") {
		t.Errorf("Sign in with Slack sends the browser to %q", resp.Header.Get("Location"))
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field on the sign-in page:\n%s", page)
	}
	resp, page = read(c.PostForm(base+"/console/signin", url.Values{"csrf": {m[1]}, "token": {token}}))
	if resp.Request.URL.Path != "/console/" || !strings.Contains(page, "<h1>Overview</h1>") {
		t.Fatalf("sign-in ended at %s:\n%s", resp.Request.URL, page)
	}
	if !strings.Contains(page, "<dd>1</dd>") { // the turn of "count me"
		t.Errorf("Overview does not count the turn:\n%s", page)
	}
	_, body := read(c.Get(base + "/console/usage.csv?days=1"))
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("usage CSV = %q (%v), want a header and one row", body, err)
	}
	row := recs[1]
	if row[1] != "terminal" || row[3] != "local" || row[5] != "test-model" || row[6] != "1" {
		t.Errorf("usage row = %q, want terminal::local, test-model, 1 call", row)
	}
	if n, _ := strconv.Atoi(row[7]); n <= 0 {
		t.Errorf("usage row input tokens = %q, want what the provider reported", row[7])
	}
	stdinW.Close()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop at end of input")
	}
}

func TestConsoleNeedsToken(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfgText := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", srv.URL), `listen: ""`, "listen: "+freeAddr(t), 1) +
		"console:\n  enabled: true\n"
	cfg := writeConfig(t, dir, cfgText)
	res := runMain(t, env{stdin: strings.NewReader(""), getenv: testEnv(map[string]string{"TALON_CONSOLE_TOKEN": "short"})}, "run", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stderr, "TALON_CONSOLE_TOKEN") || strings.Contains(res.stderr, "short") {
		t.Errorf("exit %d, stderr %s; want a failure naming TALON_CONSOLE_TOKEN without its value", res.code, res.stderr)
	}
}
