package console

import (
	"context"
	"encoding/csv"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

const testToken = "correct-horse-battery-staple"

// clock is a settable time source shared by the store and the console.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

type fixture struct {
	db    *store.DB
	clk   *clock
	srv   *httptest.Server
	cs    *Server
	vault *vault.Vault
	seq   int
}

func newFixture(t *testing.T) *fixture { t.Helper(); return newFixtureWith(t, nil) }

// newFixtureWith is newFixture with opt applied to the Server before its
// Handler is built.
func newFixtureWith(t *testing.T, opt func(*Server)) *fixture {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)}
	db.Now = clk.Now
	cs := &Server{
		Store:    db,
		Token:    testToken,
		Now:      clk.Now,
		Prices:   map[string]Price{"gpt-big": {Input: 2, Output: 8}},
		Channels: func() []Channel { return []Channel{{Name: "slack", State: "connected"}} },
	}
	key, err := vault.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.New(context.Background(), key, db.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	cs.Credentials = vault.NewService(v) // what cmd/talon hands the console
	if opt != nil {
		opt(cs)
	}
	h, err := cs.Handler()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{db: db, clk: clk, srv: srv, cs: cs, vault: v}
}

// turn stores a finished turn of who in channel at the clock's time, with
// one model call per usage pair, each taking took.
func (f *fixture) turn(t *testing.T, who agent.Principal, channel, model string, failed bool, took time.Duration, usage ...[2]int) {
	t.Helper()
	f.turnIn(t, who, channel, "", model, failed, took, usage...)
}

// turnIn is turn with the message sent in a Discord server.
func (f *fixture) turnIn(t *testing.T, who agent.Principal, channel, server, model string, failed bool, took time.Duration, usage ...[2]int) {
	t.Helper()
	ctx := context.Background()
	f.seq++
	key := agent.SessionKey{Principal: who, Conversation: agent.Conversation{Channel: channel}}
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprint("k", f.seq), Key: key, Text: "hi", Server: server})
	if err != nil {
		t.Fatal(err)
	}
	start := f.clk.Now()
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, sess, _, err := f.db.StartTurn(ctx, q.ID, &user)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range usage {
		st := agent.Step{Session: sess.ID, N: i + 1, Model: model, Usage: llm.Usage{InputTokens: u[0], OutputTokens: u[1]},
			Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "ok"}}}
		if err := f.db.RecordStep(ctx, tid, st); err != nil {
			t.Fatal(err)
		}
	}
	f.clk.Set(start.Add(took))
	state := agent.TurnDone
	if failed {
		state = agent.TurnFailed
	}
	if _, err := f.db.FinishTurn(ctx, q.ID, tid, state, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"}, nil); err != nil {
		t.Fatal(err)
	}
	f.clk.Set(start)
}

// client is a browser-like client: a cookie jar, no redirects followed
// unless asked.
func (f *fixture) client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

// signIn signs c in and returns the Overview page.
func (f *fixture) signIn(t *testing.T, c *http.Client) string {
	t.Helper()
	_, page := get(t, c, f.srv.URL+"/console/signin")
	resp, body := post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {testToken}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
		t.Fatalf("sign-in ended at %s with %d:\n%s", resp.Request.URL, resp.StatusCode, body)
	}
	return body
}

func TestSignInRequired(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	for _, path := range []string{"/console/", "/console/usage", "/console/usage.csv"} {
		resp, body := get(t, c, f.srv.URL+path)
		if resp.Request.URL.Path != "/console/signin" || !strings.Contains(body, "Admin token") {
			t.Errorf("GET %s unsigned ended at %s, want the sign-in page", path, resp.Request.URL.Path)
		}
	}
	resp, _ := post(t, c, f.srv.URL+"/console/signout", url.Values{"csrf": {"x"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST signout unsigned = %d, want 401", resp.StatusCode)
	}
}

func TestSignInSessionAndSignOut(t *testing.T) {
	f := newFixture(t)
	f.cs.Secure = true // cookies must say so; the test server is http, so read them from the header
	c := f.client(t)
	_, page := get(t, c, f.srv.URL+"/console/signin")

	// The wrong token: back to the sign-in page with an error, no session.
	resp, body := post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {"wrong-token-wrong-token"}})
	if resp.Request.URL.Path != "/console/signin" || !strings.Contains(body, "not the admin token") {
		t.Fatalf("wrong token ended at %s:\n%s", resp.Request.URL, body)
	}

	// The right token, checking the cookie's attributes on the raw response.
	raw := &http.Client{Jar: c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	_, page = get(t, c, f.srv.URL+"/console/signin")
	resp, _ = post(t, raw, f.srv.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {testToken}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in = %d, want 303", resp.StatusCode)
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || sc.Path != Prefix || sc.MaxAge != 12*3600 {
		t.Fatalf("session cookie = %+v, want HttpOnly, Secure, SameSite=Strict, Path=/console/, 12h", sc)
	}
	// The jar does not send Secure cookies over http: hand it over.
	u, _ := url.Parse(f.srv.URL + "/console/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sc.Value, Path: Prefix}})

	resp, body = get(t, c, f.srv.URL+"/console/")
	if resp.Request.URL.Path != "/console/" || !strings.Contains(body, "<h1>Overview</h1>") {
		t.Fatalf("after sign-in, GET /console/ ended at %s", resp.Request.URL)
	}
	if !strings.Contains(body, "sign-in refused") || !strings.Contains(body, "sign-in") {
		t.Errorf("the audit log on the Overview does not show the sign-ins:\n%s", body)
	}

	// Sign-out without the CSRF token fails and keeps the session.
	resp, _ = post(t, c, f.srv.URL+"/console/signout", url.Values{})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without csrf = %d, want 403", resp.StatusCode)
	}
	resp, _ = post(t, c, f.srv.URL+"/console/signout", url.Values{"csrf": {csrfOf(t, body)}})
	if resp.Request.URL.Path != "/console/signin" {
		t.Errorf("sign-out ended at %s, want the sign-in page", resp.Request.URL)
	}
	// The old cookie no longer works even if presented again.
	c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sc.Value, Path: Prefix}})
	resp, _ = get(t, c, f.srv.URL+"/console/")
	if resp.Request.URL.Path != "/console/signin" {
		t.Errorf("a signed-out session still opens the console")
	}
}

func TestSessionExpires(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	f.signIn(t, c)
	f.clk.Set(f.clk.Now().Add(12*time.Hour - time.Second))
	if resp, _ := get(t, c, f.srv.URL+"/console/"); resp.Request.URL.Path != "/console/" {
		t.Fatalf("session ended before its 12 hours")
	}
	f.clk.Set(f.clk.Now().Add(time.Second))
	if resp, _ := get(t, c, f.srv.URL+"/console/"); resp.Request.URL.Path != "/console/signin" {
		t.Errorf("session still valid after 12 hours")
	}
}

func TestSignInNeedsCSRFAndIsRateLimited(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	// No pre-session cookie and field: refused even with the right token.
	resp, _ := post(t, c, f.srv.URL+"/console/signin", url.Values{"token": {testToken}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without csrf = %d, want 403", resp.StatusCode)
	}
	_, page := get(t, c, f.srv.URL+"/console/signin")
	csrf := csrfOf(t, page)
	for i := range signInBurst - 1 { // the first attempt above counted
		resp, page := post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {csrf}, "token": {fmt.Sprint("guess-guess-guess-", i)}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("attempt %d = %d, want the sign-in page again", i+2, resp.StatusCode)
		}
		csrf = csrfOf(t, page)
	}
	// Over the burst: even the right token is refused until the window ends.
	resp, _ = post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {csrf}, "token": {testToken}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("attempt over the limit = %d, want 429 with Retry-After", resp.StatusCode)
	}
	f.clk.Set(f.clk.Now().Add(signInWindow))
	resp, _ = post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {csrf}, "token": {testToken}})
	if resp.Request.URL.Path != "/console/" {
		t.Errorf("after the window, the right token ended at %s", resp.Request.URL)
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	f.signIn(t, c)
	for _, path := range []string{"/console/signin", "/console/", "/console/usage", "/console/usage.csv", "/console/style.css"} {
		resp, _ := get(t, c, f.srv.URL+path)
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'none'") || !strings.Contains(got, "frame-ancestors 'none'") || strings.Contains(got, "script-src") {
			t.Errorf("%s: CSP = %q", path, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options = %q", path, h.Get("X-Content-Type-Options"))
		}
	}
}

func TestHandlerRefusesShortToken(t *testing.T) {
	s := &Server{Store: (*store.DB)(nil), Token: "short"}
	if _, err := s.Handler(); err == nil || !strings.Contains(err.Error(), "TALON_CONSOLE_TOKEN") {
		t.Errorf("Handler with a short token = %v, want an error naming TALON_CONSOLE_TOKEN", err)
	}
}

var (
	alice = agent.Principal{Platform: "slack", Workspace: "T1", User: "UALICE"}
	bob   = agent.Principal{Platform: "discord", User: "42"}
	xss   = agent.Principal{Platform: "slack", Workspace: "T1", User: `<script>alert(1)</script>`}
)

func TestOverview(t *testing.T) {
	f := newFixture(t)
	now := f.clk.Now()
	// Yesterday: outside "today", inside 30 days and (at 13:00) the last 24 hours.
	f.clk.Set(now.Add(-23 * time.Hour))
	f.turn(t, alice, "C1", "gpt-big", false, 100*time.Millisecond, [2]int{1000, 100})
	// Today: three turns (one failed) within the last hour.
	f.clk.Set(now.Add(-10 * time.Minute))
	f.turn(t, alice, "C1", "gpt-big", false, 200*time.Millisecond, [2]int{100_000, 10_000}, [2]int{200_000, 5_000})
	f.turn(t, bob, "D9", "other", true, 3*time.Second, [2]int{50, 5})
	f.turn(t, bob, "D9", "other", false, 400*time.Millisecond)
	f.clk.Set(now)

	c := f.client(t)
	body := f.signIn(t, c)
	for _, want := range []string{
		"<dd>0.1</dd>",              // 3 turns in the last hour / 60
		"<dd>4</dd>",                // turns in 24 h
		`<dd class="bad">1</dd>`,    // failed
		"<dd>200 ms / 3000 ms</dd>", // p50 / p95 of 100, 200, 400, 3000 ms
		"<dd>300,050 / 15,005</dd>", // tokens today
		"<dd>$0.72</dd>",            // 300000*2/1e6 + 15000*8/1e6 = 0.6 + 0.12; "other" has no price
		"<td>slack</td><td>connected</td>",
		`aria-label="Turns per hour, last 24 hours (failed in red)"`,
		`aria-label="Tokens per day, last 30 days"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("Overview lacks %q", want)
		}
	}
	if n := strings.Count(body, `<rect class="alt"`); n != 1 {
		t.Errorf("turns chart has %d failed bars, want 1", n)
	}
}

func TestUsagePageAndCSV(t *testing.T) {
	f := newFixture(t)
	now := f.clk.Now()
	f.clk.Set(now.AddDate(0, 0, -2))
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{1000, 500})
	f.clk.Set(now)
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{2000, 1000}, [2]int{3000, 0})
	f.turn(t, xss, "=cmd|' /C calc'!A0", "<img src=x onerror=alert(1)>", false, time.Second, [2]int{7, 3})
	// Older than 7 days: only in the 30-day view.
	f.clk.Set(now.AddDate(0, 0, -20))
	f.turn(t, bob, "D9", "gpt-big", false, time.Second, [2]int{1, 1})
	f.clk.Set(now)

	c := f.client(t)
	f.signIn(t, c)
	_, body := get(t, c, f.srv.URL+"/console/usage?days=7")
	for _, want := range []string{
		"<td>slack:T1:UALICE</td><td class=\"num\">3</td><td class=\"num\">6,000</td><td class=\"num\">1,500</td><td class=\"num\">$0.02</td>",
		"<td>gpt-big</td>",
		"&lt;img src=x onerror=alert(1)&gt;",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		`aria-label="Tokens per day, last 7 days"`,
		`href="/console/usage.csv?days=7"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("Usage page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "discord::42"} {
		if strings.Contains(body, bad) {
			t.Errorf("Usage page (7 days) contains %q", bad)
		}
	}
	if n := strings.Count(body, `<rect class="bar"`); n != 7 {
		t.Errorf("usage chart has %d bars, want 7 (one per day)", n)
	}

	resp, csvBody := get(t, c, f.srv.URL+"/console/usage.csv?days=30")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("CSV Content-Type = %q", ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, "attachment") {
		t.Errorf("CSV Content-Disposition = %q", cd)
	}
	recs, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"day", "platform", "workspace_or_server", "user", "channel", "model", "calls", "input_tokens", "output_tokens", "cost_usd"},
		{"2026-03-10", "slack", "T1", "UALICE", "C1", "gpt-big", "2", "5000", "1000", "0.018000"},
		{"2026-03-10", "slack", "T1", "<script>alert(1)</script>", "'=cmd|' /C calc'!A0", "<img src=x onerror=alert(1)>", "1", "7", "3", "0.000000"},
		{"2026-03-08", "slack", "T1", "UALICE", "C1", "gpt-big", "1", "1000", "500", "0.006000"},
		{"2026-02-18", "discord", "", "42", "D9", "gpt-big", "1", "1", "1", "0.000010"},
	}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("CSV mismatch (-want +got):\n%s", diff)
	}
}

// A Discord user's usage is grouped by the server each message was sent
// in, on the page and in the CSV; a DM's usage has no server.
func TestUsageByDiscordServer(t *testing.T) {
	f := newFixture(t)
	f.turnIn(t, bob, "C300", "300", "gpt-big", false, time.Second, [2]int{100, 10})
	f.turnIn(t, bob, "C301", "301", "gpt-big", false, time.Second, [2]int{200, 20})
	f.turnIn(t, bob, "D9", "", "gpt-big", false, time.Second, [2]int{400, 40})
	c := f.client(t)
	f.signIn(t, c)
	_, body := get(t, c, f.srv.URL+"/console/usage?days=7")
	for _, want := range []string{
		`<td>discord:300</td><td class="num">1</td><td class="num">100</td><td class="num">10</td>`,
		`<td>discord:301</td><td class="num">1</td><td class="num">200</td><td class="num">20</td>`,
		`<td>discord: (no server)</td><td class="num">1</td><td class="num">400</td><td class="num">40</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("Usage page lacks %q", want)
		}
	}
	_, csvBody := get(t, c, f.srv.URL+"/console/usage.csv?days=7")
	recs, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]string{}
	for _, r := range recs[1:] {
		servers[r[4]] = r[2]
	}
	if diff := cmp.Diff(map[string]string{"C300": "300", "C301": "301", "D9": ""}, servers); diff != "" {
		t.Errorf("CSV workspace_or_server by channel (-want +got):\n%s", diff)
	}
}

func TestBarChartEscapes(t *testing.T) {
	got := string(barChart(`a "<b>"`, []bar{{Label: "<x>", Title: "&", Value: 2, Alt: 1}, {Value: 0}}))
	for _, want := range []string{`aria-label="a &#34;&lt;b&gt;&#34;"`, "&lt;x&gt;", "<title>&amp;</title>", `<rect class="alt"`} {
		if !strings.Contains(got, want) {
			t.Errorf("chart lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "<x>") || strings.Contains(got, "<b>") {
		t.Errorf("chart has unescaped text:\n%s", got)
	}
}

func TestDocEscapes(t *testing.T) {
	var d doc
	d.text(`<img src=x onerror=alert(1)>&"'` + "\xff")
	d.attr("value", `"><script>alert(1)</script>`)
	got := d.b.String()
	want := `&lt;img src=x onerror=alert(1)&gt;&amp;&#34;&#39;` + "\uFFFD" + ` value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"`
	if got != want {
		t.Errorf("escaped = %s\nwant      %s", got, want)
	}
}

// A restart (a new Server on the same database) keeps a sign-in and its
// CSRF token; sign-out on the new one ends it.
func TestSessionSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	page := f.signIn(t, c)
	csrf := csrfOf(t, page)

	again := &Server{Store: f.db, Token: testToken, Now: f.clk.Now}
	h, err := again.Handler()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	srv := httptest.NewServer(mux) // the same host, so the jar sends the cookie
	defer srv.Close()
	resp, body := get(t, c, srv.URL+"/console/")
	if resp.Request.URL.Path != "/console/" || csrfOf(t, body) != csrf {
		t.Fatalf("after a restart the sign-in ended at %s", resp.Request.URL)
	}
	u, _ := url.Parse(srv.URL + "/console/")
	kept := c.Jar.Cookies(u)
	resp, _ = post(t, c, srv.URL+"/console/signout", url.Values{"csrf": {csrf}})
	if resp.Request.URL.Path != "/console/signin" {
		t.Fatalf("sign-out after a restart ended at %s", resp.Request.URL)
	}
	c.Jar.SetCookies(u, kept) // the old cookie, presented again
	if resp, _ := get(t, c, f.srv.URL+"/console/"); resp.Request.URL.Path != "/console/signin" {
		t.Error("signed out on one server, still signed in on the other")
	}
}

// Behind a trusted proxy, sign-in attempts are counted and audited per
// client address from X-Forwarded-For; from anyone else the header is
// ignored.
func TestSignInLimitBehindProxy(t *testing.T) {
	attempt := func(t *testing.T, f *fixture, xff string) int {
		t.Helper()
		c := f.client(t)
		_, page := get(t, c, f.srv.URL+"/console/signin")
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/console/signin",
			strings.NewReader(url.Values{"csrf": {csrfOf(t, page)}, "token": {"wrong-wrong-wrong-wrong"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := (&http.Client{Jar: c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("trusted", func(t *testing.T) {
		f := newFixtureWith(t, func(s *Server) { s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
		// The client forges a left entry; the proxy appends the real one.
		for i := range signInBurst {
			if got := attempt(t, f, fmt.Sprintf("10.9.9.%d, 203.0.113.7", i)); got != http.StatusSeeOther {
				t.Fatalf("attempt %d from 203.0.113.7 = %d, want 303 (refused, within the limit)", i+1, got)
			}
		}
		if got := attempt(t, f, "10.9.9.99, 203.0.113.7"); got != http.StatusTooManyRequests {
			t.Errorf("attempt %d from 203.0.113.7 = %d, want 429", signInBurst+1, got)
		}
		if got := attempt(t, f, "198.51.100.2, 127.0.0.9"); got != http.StatusSeeOther { // through two of our proxies
			t.Errorf("another client's first attempt = %d, want 303", got)
		}
		acts, err := f.db.ConsoleActions(context.Background(), 100)
		if err != nil || len(acts) == 0 || acts[0].Remote != "198.51.100.2" || acts[1].Remote != "203.0.113.7" {
			t.Errorf("audited addresses = %+v, %v", acts, err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		f := newFixture(t)
		for i := range signInBurst {
			attempt(t, f, fmt.Sprintf("203.0.113.%d", i))
		}
		if got := attempt(t, f, "203.0.113.200"); got != http.StatusTooManyRequests {
			t.Errorf("a forged X-Forwarded-For from an untrusted peer escaped the limit: %d", got)
		}
	})
}
