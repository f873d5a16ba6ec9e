package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/mcp/oauthtest"
	"github.com/talonhq/talon/vault"
)

// watched is a stdout that a test can wait on, and that opens every
// connect link printed in it in a browser of its own.
type watched struct {
	mu     sync.Mutex
	b      strings.Builder
	opened map[string]bool
	open   func(link string)
}

var linkRe = regexp.MustCompile(`http://127\.0\.0\.1:\d+/oauth/start\?state=[A-Za-z0-9_%-]+`)

func (w *watched) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	for _, l := range linkRe.FindAllString(w.b.String(), -1) {
		if !w.opened[l] && w.open != nil {
			w.opened[l] = true
			go w.open(l)
		}
	}
	return len(p), nil
}

func (w *watched) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *watched) waitFor(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(w.String(), s) {
			return
		}
	}
	t.Fatalf("timed out waiting for %q in:\n%s", s, w.String())
}

// browse opens a connect link as a person's browser does: Talon's start
// page, the provider (which signs in at once), Talon's callback; it
// returns the last page.
func browse(roots *x509.CertPool, link string) (int, string, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 30 * time.Second}
	resp, err := hc.Get(link)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestMCPOAuthEndToEnd runs the gateway on the terminal with an MCP server
// behind OAuth (the fake authorization server, with dynamic client
// registration): the user's request offers the model only the connect
// tool; calling it prints a one-time link; the browser signs in through
// Talon's /oauth/start and /oauth/callback on http.listen; the waiting turn
// continues with the server's tools on the user's own account. The header
// echo reaches the model redacted; no token appears in a model request,
// the output, a log line or the database in clear. Then talon mcp login
// connects another user with the gateway stopped, mcp list shows both,
// and /disconnect revokes.
func TestMCPOAuthEndToEnd(t *testing.T) {
	as := oauthtest.New(t, oauthtest.Options{})
	roots := x509.NewCertPool()
	roots.AddCert(as.Certificate())

	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		if strings.HasPrefix(req.System, "You maintain the") {
			return llmtest.Response{Text: "a summary"}
		}
		offered := map[string]bool{}
		for _, tl := range req.Tools {
			offered[tl] = true
		}
		call := func(name string, args any) llmtest.Response {
			b, _ := json.Marshal(args)
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: fmt.Sprintf("call_%d", len(req.Messages)), Name: name, Arguments: string(b)}}}
		}
		last := req.Messages[len(req.Messages)-1]
		ask := last.Content
		if last.Role == llm.RoleTool {
			if !strings.Contains(last.Content, "connected their linear account") {
				return llmtest.Response{Text: "tool said: " + strings.ReplaceAll(last.Content, "\n", " | ")}
			}
			ask = req.Messages[len(req.Messages)-3].Content // the user's request, before the connect call
		}
		switch {
		case !offered["linear__search"] && offered["linear__connect_account"]:
			return call("linear__connect_account", map[string]string{})
		case strings.HasPrefix(ask, "search "):
			return call("linear__search", map[string]string{"query": strings.TrimPrefix(ask, "search ")})
		case ask == "echo":
			return call("linear__echo_headers", map[string]string{})
		}
		return llmtest.Response{Text: "ok"}
	})

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	listen := freeAddr(t)
	base := strings.Replace(baseConfig(data, "openai", model.URL), "http:\n  listen: \"\"\n",
		fmt.Sprintf("http:\n  listen: %s\n  public_url: http://%s\n", listen, listen), 1)
	cfg := writeConfig(t, dir, base+fmt.Sprintf(`sandbox:
  allow_private: [127.0.0.1/32]
mcp:
  servers:
    - name: linear
      url: %s/mcp
      auth: oauth
`, as.URL))
	key, _ := vault.GenerateKey()
	e := env{getenv: testEnv(map[string]string{vault.EnvKey: key.Encode()}), rootCAs: roots}
	var logs strings.Builder
	var logMu sync.Mutex
	invoke := func(args ...string) result {
		t.Helper()
		res := runMain(t, e, append(args, "--config", cfg)...)
		logMu.Lock()
		logs.WriteString(res.stderr)
		logMu.Unlock()
		return res
	}

	// The gateway, on the terminal, with stdin fed step by step.
	var pages []string
	var pagesMu sync.Mutex
	out := &watched{opened: map[string]bool{}, open: func(link string) {
		code, body, err := browse(roots, link)
		pagesMu.Lock()
		pages = append(pages, fmt.Sprintf("%d %s %v", code, body, err))
		pagesMu.Unlock()
	}}
	say, stop, errOut := runOnTerminal(t, e, cfg, out)
	say("search login")
	out.waitFor(t, "tool said: found as alice: login")
	if n := strings.Count(out.String(), "/oauth/start?state="); n != 1 {
		t.Errorf("links printed = %d, want 1", n)
	}
	pagesMu.Lock()
	if len(pages) != 1 || !strings.HasPrefix(pages[0], "200 ") || !strings.Contains(pages[0], "Connected to linear, you can close this tab.") {
		t.Errorf("browser pages = %q, want the connected page", pages)
	}
	pagesMu.Unlock()
	// An MCP result taints the conversation; a fresh one calls unasked.
	say("/new")
	out.waitFor(t, "Started a fresh conversation")
	say("echo")
	out.waitFor(t, "Authorization: Bearer [REDACTED]")
	say("/connections")
	out.waitFor(t, "Your connected accounts:")
	say("/disconnect linear")
	out.waitFor(t, "Disconnected linear: the provider revoked the access")
	stop()
	logs.WriteString(errOut.String())

	var sawEcho bool
	for _, r := range model.Requests() {
		for _, m := range r.Messages {
			if m.Role == llm.RoleTool && strings.Contains(m.Content, "Authorization: Bearer [REDACTED") {
				sawEcho = true
			}
		}
	}
	if !sawEcho {
		t.Errorf("the echoed Authorization header did not reach the model redacted")
	}
	if _, _, revoked, _ := as.Snapshot(); len(revoked) != 1 {
		t.Errorf("revoked tokens = %d, want 1", len(revoked))
	}

	// Another user, with the gateway stopped: talon mcp login prints the
	// link and serves the callback itself.
	as.SetLogin("bob")
	lout := &watched{opened: map[string]bool{}, open: func(link string) { _, _, _ = browse(roots, link) }}
	le := e
	le.stdin, le.stdout, le.stderr = strings.NewReader(""), lout, &syncWriter{w: errOut}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := le.main(ctx, []string{"mcp", "login", "linear", "--user", "slack:T1:UBOB", "--config", cfg}); code != 0 {
		t.Fatalf("mcp login: exit %d\n%s\n%s", code, lout.String(), errOut.String())
	}
	if !strings.Contains(lout.String(), "linear: connected for slack:T1:UBOB.") {
		t.Errorf("mcp login output:\n%s", lout.String())
	}
	res := invoke("mcp", "test", "linear", "--user", "slack:T1:UBOB")
	if res.code != 0 || !strings.Contains(res.stdout, "linear: connected as slack:T1:UBOB; 3 tools, 3 offered") {
		t.Errorf("mcp test as bob: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The terminal user disconnected: not bob's account.
	res = invoke("mcp", "test", "linear", "--user", "terminal::local")
	if res.code == 0 || !strings.Contains(res.stderr, "has not connected their account") {
		t.Errorf("mcp test as the disconnected user: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = invoke("mcp", "list")
	if !strings.Contains(res.stdout, "auth: oauth (connected users: slack:T1:UBOB)") {
		t.Errorf("mcp list:\n%s", res.stdout)
	}

	res = invoke("doctor")
	for _, want := range []string{"ok    http.public_url http://" + listen, "ok    mcp server linear " + as.URL + "/mcp: authorization server " + as.URL +
		"; dynamic registration offered (Talon registers its client); revocation offered"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor lacks %q:\n%s%s", want, res.stdout, res.stderr)
		}
	}

	// No token anywhere but the vault, sealed.
	tokens := as.Issued()
	if len(tokens) < 4 {
		t.Fatalf("tokens issued = %d, want at least 4", len(tokens))
	}
	db, _ := os.ReadFile(filepath.Join(data, "talon.db"))
	wal, _ := os.ReadFile(filepath.Join(data, "talon.db-wal"))
	for _, tok := range tokens {
		for i, r := range model.Requests() {
			for _, m := range r.Messages {
				if strings.Contains(m.Content, tok) {
					t.Errorf("model request %d carries a token", i)
				}
			}
		}
		if strings.Contains(out.String(), tok) || strings.Contains(lout.String(), tok) {
			t.Error("the output carries a token")
		}
		if strings.Contains(logs.String(), tok) {
			t.Error("a log line carries a token")
		}
		if strings.Contains(string(db), tok) || strings.Contains(string(wal), tok) {
			t.Error("the database holds a token in clear")
		}
	}
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestMCPOAuthSlack is the flow through the fake Slack (events mode): each
// user's call of the OAuth server sends that user alone an ephemeral link
// (chat.postEphemeral to them, never a channel message), each signs in
// with their own account, and each call runs on its caller's account.
// No token reaches the model, Slack, a log line or the database in clear.
func TestMCPOAuthSlack(t *testing.T) {
	as := oauthtest.New(t, oauthtest.Options{})
	roots := x509.NewCertPool()
	roots.AddCert(as.Certificate())
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		offered := map[string]bool{}
		for _, tl := range req.Tools {
			offered[tl] = true
		}
		last := req.Messages[len(req.Messages)-1]
		ask := last.Content
		if last.Role == llm.RoleTool {
			if !strings.Contains(last.Content, "connected their linear account") {
				return llmtest.Response{Text: "tool said: " + last.Content}
			}
			ask = req.Messages[len(req.Messages)-3].Content
		}
		name, args := "linear__search", `{"query":"`+strings.TrimPrefix(ask, "search ")+`"}`
		if !offered["linear__search"] {
			name, args = "linear__connect_account", `{}`
		}
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: fmt.Sprintf("call_%d", len(req.Messages)), Name: name, Arguments: args}}}
	})
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(data, "openai", model.URL), "http:\n  listen: \"\"\n",
		fmt.Sprintf("http:\n  listen: %s\n  public_url: http://%s\n", addr, addr), 1) +
		slackSection("events", fs.url()) + fmt.Sprintf(`sandbox:
  allow_private: [127.0.0.1/32]
mcp:
  servers:
    - name: linear
      url: %s/mcp
      auth: oauth
`, as.URL)
	cfg := writeConfig(t, dir, body)
	key, _ := vault.GenerateKey()
	getenv := func(k string) string {
		if k == vault.EnvKey {
			return key.Encode()
		}
		return slackEnv()(k)
	}
	var stderr syncBuffer
	stop := startRunEnvWith(t, cfg, addr, env{getenv: getenv, rootCAs: roots}, &stderr)

	dm := func(id, user, channel, text string) {
		t.Helper()
		event, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": id, "event_time": time.Now().Unix(),
			"event": map[string]any{"type": "message", "channel": channel, "channel_type": "im", "user": user,
				"ts": "1700000000.0001" + id[len(id)-2:], "event_ts": "1700000000.0001" + id[len(id)-2:], "text": text},
		})
		if code := postSlackEvent(t, "http://"+addr+"/slack/events", testSigningSecret, event); code != http.StatusOK {
			t.Fatalf("event: status %d", code)
		}
	}
	// ephemeral waits for the n-th chat.postEphemeral and returns its form.
	ephemeral := func(n int) url.Values {
		t.Helper()
		var form url.Values
		waitUntil(t, func() bool {
			fs.mu.Lock()
			defer fs.mu.Unlock()
			seen := 0
			for i, m := range fs.methods {
				if m == "chat.postEphemeral" {
					if seen == n {
						form, _ = url.ParseQuery(fs.bodies[i])
						return true
					}
					seen++
				}
			}
			return false
		})
		return form
	}
	signIn := func(form url.Values) {
		t.Helper()
		link := linkRe.FindString(form.Get("text"))
		code, page, err := browse(roots, link)
		if err != nil || code != http.StatusOK || !strings.Contains(page, "Connected to linear, you can close this tab.") {
			t.Fatalf("sign-in: %d %v\n%s", code, err, page)
		}
	}

	dm("Ev01", "U1", "D1", "search login")
	a := ephemeral(0)
	if a.Get("user") != "U1" || a.Get("channel") != "D1" || !linkRe.MatchString(a.Get("text")) {
		t.Fatalf("A's link went to user %q in %q: %q", a.Get("user"), a.Get("channel"), a.Get("text"))
	}
	signIn(a)
	waitUntil(t, func() bool { return len(fs.postedTo("D1")) > 0 })
	if got := fs.postedTo("D1"); len(got) != 1 || got[0] != "tool said: found as alice: login" {
		t.Errorf("A's replies = %q", got)
	}

	// B's call gets B's own link, not A's account.
	as.SetLogin("bob")
	dm("Ev02", "U2", "D2", "search x")
	b := ephemeral(1)
	if b.Get("user") != "U2" || b.Get("channel") != "D2" || linkRe.FindString(b.Get("text")) == linkRe.FindString(a.Get("text")) {
		t.Fatalf("B's link went to user %q in %q: %q", b.Get("user"), b.Get("channel"), b.Get("text"))
	}
	signIn(b)
	waitUntil(t, func() bool { return len(fs.postedTo("D2")) > 0 })
	if got := fs.postedTo("D2"); len(got) != 1 || got[0] != "tool said: found as bob: x" {
		t.Errorf("B's replies = %q", got)
	}
	stop()

	fs.mu.Lock()
	slackBodies, _ := url.QueryUnescape(strings.Join(fs.bodies, "\n"))
	fs.mu.Unlock()
	if strings.Count(slackBodies, "/oauth/start") != 2 {
		t.Errorf("links sent to Slack = %d, want 2 (both ephemeral)", strings.Count(slackBodies, "/oauth/start"))
	}
	for _, p := range append(fs.postedTo("D1"), fs.postedTo("D2")...) {
		if strings.Contains(p, "/oauth/start") {
			t.Errorf("a link was posted as a message: %q", p)
		}
	}
	db, _ := os.ReadFile(filepath.Join(data, "talon.db"))
	wal, _ := os.ReadFile(filepath.Join(data, "talon.db-wal"))
	for _, tok := range as.Issued() {
		for i, r := range model.Requests() {
			for _, m := range r.Messages {
				if strings.Contains(m.Content, tok) {
					t.Errorf("model request %d carries a token", i)
				}
			}
		}
		if strings.Contains(slackBodies, tok) || strings.Contains(stderr.String(), tok) {
			t.Error("Slack or a log line got a token")
		}
		if strings.Contains(string(db), tok) || strings.Contains(string(wal), tok) {
			t.Error("the database holds a token in clear")
		}
	}
}

// TestMCPOAuthOnPostgres: the flow with the store on PostgreSQL. The
// user's call prints a connect link; the browser signs in through Talon's
// pages; the turn continues on the user's account; the connection is a
// row in PostgreSQL (the link's state consumed), and no token is in any
// of its tables in clear.
func TestMCPOAuthOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	as := oauthtest.New(t, oauthtest.Options{})
	roots := x509.NewCertPool()
	roots.AddCert(as.Certificate())
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		offered := map[string]bool{}
		for _, tl := range req.Tools {
			offered[tl] = true
		}
		last := req.Messages[len(req.Messages)-1]
		switch {
		case last.Role == llm.RoleTool && strings.Contains(last.Content, "connected their linear account"):
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_search", Name: "linear__search", Arguments: `{"query":"login"}`}}}
		case last.Role == llm.RoleTool:
			return llmtest.Response{Text: "tool said: " + strings.ReplaceAll(last.Content, "\n", " | ")}
		case !offered["linear__search"] && offered["linear__connect_account"]:
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_connect", Name: "linear__connect_account", Arguments: `{}`}}}
		}
		return llmtest.Response{Text: "ok"}
	})
	dir := t.TempDir()
	listen := freeAddr(t)
	base := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", model.URL), "http:\n  listen: \"\"\n",
		fmt.Sprintf("http:\n  listen: %s\n  public_url: http://%s\n", listen, listen), 1)
	cfg := writeConfig(t, dir, base+fmt.Sprintf(`sandbox:
  allow_private: [127.0.0.1/32]
mcp:
  servers:
    - name: linear
      url: %s/mcp
      auth: oauth
store:
  driver: postgres
  url: ${DATABASE_URL}
`, as.URL))
	key, _ := vault.GenerateKey()
	e := env{getenv: testEnv(map[string]string{vault.EnvKey: key.Encode(), "DATABASE_URL": dbURL}), rootCAs: roots}

	var pages []string
	var pagesMu sync.Mutex
	out := &watched{opened: map[string]bool{}, open: func(link string) {
		code, body, err := browse(roots, link)
		pagesMu.Lock()
		pages = append(pages, fmt.Sprintf("%d %s %v", code, body, err))
		pagesMu.Unlock()
	}}
	say, stop, errOut := runOnTerminal(t, e, cfg, out)
	say("search login")
	out.waitFor(t, "tool said: found as alice: login")
	pagesMu.Lock()
	if len(pages) != 1 || !strings.Contains(pages[0], "Connected to linear, you can close this tab.") {
		t.Errorf("browser pages = %q, want the connected page", pages)
	}
	pagesMu.Unlock()
	stop()
	ctx := context.Background()

	var conns, states, clients, entries int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM oauth_connections WHERE server = 'linear' AND principal = 'terminal::local'),
		(SELECT count(*) FROM oauth_states), (SELECT count(*) FROM oauth_clients), (SELECT count(*) FROM vault_entries WHERE "user" = 'terminal::local')`).
		Scan(&conns, &states, &clients, &entries); err != nil {
		t.Fatal(err)
	}
	if conns != 1 || states != 0 || clients != 1 || entries < 1 {
		t.Errorf("in PostgreSQL: %d connections, %d states left, %d registered clients, %d vault entries; want 1, 0, 1, at least 1", conns, states, clients, entries)
	}
	var dump string
	if err := pool.QueryRow(ctx, `SELECT concat_ws(' ', (SELECT string_agg(t::text, ' ') FROM oauth_connections t), (SELECT string_agg(t::text, ' ') FROM oauth_clients t),
		(SELECT string_agg(t::text, ' ') FROM vault_entries t), (SELECT string_agg(t::text, ' ') FROM messages t), (SELECT string_agg(t::text, ' ') FROM tool_calls t))`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	tokens := as.Issued()
	if len(tokens) < 2 {
		t.Fatalf("tokens issued = %d, want an access and a refresh token", len(tokens))
	}
	for _, tok := range tokens {
		if strings.Contains(dump, tok) || strings.Contains(out.String(), tok) || strings.Contains(errOut.String(), tok) {
			t.Error("a token is in PostgreSQL, the output or the log in clear")
		}
	}
}
