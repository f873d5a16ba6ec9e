package mcp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/mcp"
	"github.com/talonhq/talon/mcp/oauthtest"
	"github.com/talonhq/talon/sandbox/egress"
)

// memOAuth is the store and the vault of the flow, in memory.
type memOAuth struct {
	mu      sync.Mutex
	states  map[string]mcp.OAuthState
	clients map[string]mcp.RegisteredClient
	conns   map[string]mcp.Connection
	tokens  map[string]memToken // principal/name → token
	saves   int
}

type memToken struct{ value, hostPort string }

func newMemOAuth() *memOAuth {
	return &memOAuth{states: map[string]mcp.OAuthState{}, clients: map[string]mcp.RegisteredClient{},
		conns: map[string]mcp.Connection{}, tokens: map[string]memToken{}}
}

func (m *memOAuth) PutState(_ context.Context, s mcp.OAuthState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s.ID] = s
	return nil
}

func (m *memOAuth) StartState(_ context.Context, id, browser string, at time.Time) (mcp.OAuthState, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[id]
	if !ok {
		return s, false, mcp.ErrNoState
	}
	if !s.StartedAt.IsZero() {
		return s, false, nil
	}
	s.StartedAt, s.Browser = at, browser
	m.states[id] = s
	return s, true, nil
}

func (m *memOAuth) TakeState(_ context.Context, id string) (mcp.OAuthState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[id]
	if !ok {
		return s, mcp.ErrNoState
	}
	delete(m.states, id)
	return s, nil
}

func (m *memOAuth) Client(_ context.Context, server, issuer string) (mcp.RegisteredClient, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.clients[server+" "+issuer]
	return c, ok, nil
}

func (m *memOAuth) PutClient(_ context.Context, server string, c mcp.RegisteredClient) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clients[server+" "+c.Issuer] = c
	return nil
}

func (m *memOAuth) Connection(_ context.Context, server string, p agent.Principal) (mcp.Connection, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.conns[server+" "+p.String()]
	return c, ok, nil
}

func (m *memOAuth) PutConnection(_ context.Context, c mcp.Connection) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns[c.Server+" "+c.Principal.String()] = c
	return nil
}

func (m *memOAuth) DeleteConnection(_ context.Context, server string, p agent.Principal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, server+" "+p.String())
	return nil
}

func (m *memOAuth) Connections(_ context.Context, server string, p agent.Principal) ([]mcp.Connection, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []mcp.Connection
	for _, c := range m.conns {
		if (server == "" || c.Server == server) && (p == agent.Principal{} || c.Principal == p) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (m *memOAuth) SaveTokens(_ context.Context, p agent.Principal, server, access, mcpHP, refresh, tokenHP string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saves++
	m.tokens[p.String()+"/"+mcp.AccessTokenName(server)] = memToken{access, mcpHP}
	if refresh != "" {
		m.tokens[p.String()+"/"+mcp.RefreshTokenName(server)] = memToken{refresh, tokenHP}
	}
	return nil
}

func (m *memOAuth) Token(_ context.Context, p agent.Principal, name, hostPort string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[p.String()+"/"+name]
	if !ok || t.hostPort != hostPort {
		return "", fmt.Errorf("mem: %w", egress.ErrNoCredential)
	}
	return t.value, nil
}

func (m *memOAuth) DeleteTokens(_ context.Context, p agent.Principal, server string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, p.String()+"/"+mcp.AccessTokenName(server))
	delete(m.tokens, p.String()+"/"+mcp.RefreshTokenName(server))
	return nil
}

// Credential makes memOAuth the broker's credential source: the access
// token, for its bound host only.
func (m *memOAuth) Credential(ctx context.Context, c egress.Caller, name, hostPort string) (egress.Credential, error) {
	v, err := m.Token(ctx, c.Principal, name, hostPort)
	if err != nil {
		return nil, err
	}
	return bearer(v), nil
}

// notifier records the links sent and, when click is set, opens each in a
// browser of its own.
type notifier struct {
	mu    sync.Mutex
	sent  []string
	click func(link string)
}

func (n *notifier) NotifyPrivately(_ context.Context, key agent.SessionKey, _ agent.TurnID, notice agent.Notice) (bool, error) {
	text := notice.Text
	n.mu.Lock()
	n.sent = append(n.sent, key.Principal.String()+": "+text)
	click := n.click
	n.mu.Unlock()
	if click != nil {
		go click(linkIn(text))
	}
	return true, nil
}

func linkIn(text string) string {
	i := strings.Index(text, "https://talon.example/")
	if i < 0 {
		return ""
	}
	return strings.Fields(text[i:])[0]
}

type oauthFixture struct {
	as     *oauthtest.Server
	client *mcp.Client
	flow   *mcp.OAuth
	mem    *memOAuth
	note   *notifier
	now    time.Time
	nowMu  sync.Mutex
	tls    *tls.Config
}

func (f *oauthFixture) clock() time.Time {
	f.nowMu.Lock()
	defer f.nowMu.Unlock()
	return f.now
}

func (f *oauthFixture) advance(d time.Duration) {
	f.nowMu.Lock()
	defer f.nowMu.Unlock()
	f.now = f.now.Add(d)
}

func newOAuthFixture(t *testing.T, opts oauthtest.Options, srv mcp.Server) *oauthFixture {
	t.Helper()
	as := oauthtest.New(t, opts)
	pool := x509.NewCertPool()
	pool.AddCert(as.Certificate())
	tc := &tls.Config{RootCAs: pool}
	mem := newMemOAuth()
	loop := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	b := &egress.Broker{AllowPrivate: loop, TLSConfig: tc, Credentials: mem}
	flowB := &egress.Broker{AllowPrivate: loop, TLSConfig: tc}
	t.Cleanup(b.CloseIdleConnections)
	t.Cleanup(flowB.CloseIdleConnections)
	f := &oauthFixture{as: as, mem: mem, note: &notifier{}, now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), tls: tc}
	f.flow = &mcp.OAuth{Egress: flowB, Store: mem, Tokens: mem, PublicURL: "https://talon.example", Notifier: f.note, Now: f.clock, Logger: zerolog.Nop()}
	flowB.Credentials = f.flow
	srv.Name, srv.Auth = "linear", mcp.AuthOAuth
	if srv.URL == "" {
		srv.URL = as.URL + "/mcp"
	}
	if err := srv.Validate(); err != nil {
		t.Fatal(err)
	}
	f.client = &mcp.Client{Servers: []mcp.Server{srv}, Egress: b, Approver: &approver{yes: true}, Pins: &memPins{}, OAuth: f.flow, Logger: zerolog.Nop()}
	t.Cleanup(func() { _ = f.client.Close() })
	return f
}

func (f *oauthFixture) servers(name string) (*mcp.Server, bool) { return f.client.Server(name) }

// browser is one person's browser: it keeps cookies, follows the link to
// the provider and stops at Talon's callback, which it hands to Callback.
type browser struct {
	f   *oauthFixture
	jar map[string]string
}

func (f *oauthFixture) browser() *browser { return &browser{f: f, jar: map[string]string{}} }

// open opens a connect link: Talon's start page, then the provider, and
// returns the callback URL the provider redirected to.
func (b *browser) open(t *testing.T, link string) (*url.URL, error) {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		return nil, err
	}
	state := u.Query().Get("state")
	redirect, cookie, err := b.f.flow.Start(context.Background(), state)
	if err != nil {
		return nil, err
	}
	b.jar[mcp.StateCookie(state)] = cookie
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: b.f.tls},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(redirect)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return nil, fmt.Errorf("provider answered %d", resp.StatusCode)
	}
	return url.Parse(resp.Header.Get("Location"))
}

// back delivers the provider's redirect to Talon's callback.
func (b *browser) back(cb *url.URL) (string, agent.Principal, error) {
	q := cb.Query()
	return b.f.flow.Callback(context.Background(), b.f.servers, q, b.jar[mcp.StateCookie(q.Get("state"))])
}

// connect opens link and completes the sign-in; it may run on a goroutine
// of its own, so it reports with Errorf.
func (b *browser) connect(t *testing.T, link string) {
	t.Helper()
	cb, err := b.open(t, link)
	if err != nil {
		t.Errorf("open link: %v", err)
		return
	}
	if !strings.HasPrefix(cb.String(), "https://talon.example/oauth/callback?") {
		t.Errorf("provider redirected to %s, want Talon's callback", cb)
		return
	}
	if _, _, err := b.back(cb); err != nil {
		t.Errorf("callback: %v", err)
	}
}

func TestOAuthConnectCallRefreshRevoke(t *testing.T) {
	f := newOAuthFixture(t, oauthtest.Options{ExpiresIn: time.Hour}, mcp.Server{})
	ctx := context.Background()

	// Not connected: the model is offered only the connect tool.
	if got := toolNames(t, f.client, userA); len(got) != 1 || got[0] != "linear__connect_account" {
		t.Fatalf("tools before connecting = %v, want only linear__connect_account", got)
	}
	// Calling a tool of the server sends the user a private link and
	// waits; the user opens it in their browser; the call continues.
	f.note.click = func(link string) { f.browser().connect(t, link) }
	res := runT(t, f.client, call("linear__search", `{"query":"login"}`))
	if res.IsError || res.Content != "found as alice: login" {
		t.Fatalf("search after connecting = %+v, want alice's result", res)
	}
	if len(f.note.sent) != 1 || !strings.HasPrefix(f.note.sent[0], userA.String()+": ") || !strings.Contains(f.note.sent[0], "https://talon.example/oauth/start?state=") {
		t.Fatalf("links sent = %q, want one to user A", f.note.sent)
	}
	if got := toolNames(t, f.client, userA); strings.Join(got, ",") != "linear__create_issue,linear__echo_headers,linear__search" {
		t.Errorf("tools once connected = %v", got)
	}

	// The token reaches the server, never the result.
	access, refresh := f.as.Tokens()
	if len(access) != 1 || len(refresh) != 1 {
		t.Fatalf("tokens issued = %d access, %d refresh, want 1 and 1", len(access), len(refresh))
	}
	res = runT(t, f.client, call("linear__echo_headers", `{}`))
	if strings.Contains(res.Content, access[0]) || !strings.Contains(res.Content, "Authorization: Bearer "+egress.Redacted) {
		t.Errorf("echoed headers = %q, want the token redacted", res.Content)
	}

	// User B gets their own link, not A's account.
	f.note.click = nil
	bctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	res, err := f.client.Run(bctx, callAs(userB, "linear__search", `{"query":"x"}`))
	cancel()
	if err != nil || !res.IsError || strings.Contains(res.Content, "alice") || !strings.Contains(res.Content, "link") {
		t.Fatalf("B's call = %+v, %v; want a refusal that says a link was sent", res, err)
	}
	if len(f.note.sent) != 2 || !strings.HasPrefix(f.note.sent[1], userB.String()+": ") {
		t.Fatalf("links sent = %q, want the second to user B", f.note.sent)
	}
	// B connects as bob: the client registered once, and is reused.
	f.as.SetLogin("bob")
	f.browser().connect(t, linkIn(f.note.sent[1]))
	if res := runT(t, f.client, callAs(userB, "linear__search", `{"query":"x"}`)); res.Content != "found as bob: x" {
		t.Errorf("B's search = %+v, want bob's", res)
	}
	if regs, _, _, _ := f.as.Snapshot(); regs != 1 {
		t.Errorf("registrations = %d, want 1 (the registered client is kept)", regs)
	}

	// Near its expiry the token is refreshed first, once for many
	// parallel calls; the refresh token rotates.
	f.advance(time.Hour - 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			res, err := f.client.Run(ctx, call("linear__search", `{"query":"p"}`))
			if err != nil || res.Content != "found as alice: p" {
				errs <- fmt.Sprintf("%+v %v", res, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("parallel call after expiry = %s", e)
	}
	if _, refreshes, _, fails := f.as.Snapshot(); refreshes != 1 || len(fails) != 0 {
		t.Errorf("refreshes = %d (failures %q), want exactly 1", refreshes, fails)
	}
	if old, _ := f.mem.Token(ctx, userA, mcp.RefreshTokenName("linear"), hostOf(f.as.URL)); old == refresh[0] {
		t.Errorf("the refresh token was not rotated in the vault")
	}

	// The provider drops the access tokens: the 401 refreshes and the call
	// goes through.
	f.as.Expire()
	if res := runT(t, f.client, call("linear__search", `{"query":"q"}`)); res.Content != "found as alice: q" {
		t.Errorf("call after a 401 = %+v, want it retried with a refreshed token", res)
	}

	// Disconnect revokes (RFC 7009) and deletes.
	rt, _ := f.mem.Token(ctx, userA, mcp.RefreshTokenName("linear"), hostOf(f.as.URL))
	srv, _ := f.client.Server("linear")
	had, revoked, err := f.flow.Disconnect(ctx, srv, userA)
	if err != nil || !had || !revoked {
		t.Fatalf("Disconnect = %v, %v, %v; want a revoked connection", had, revoked, err)
	}
	if _, _, rev, _ := f.as.Snapshot(); len(rev) != 1 || rev[0] != rt {
		t.Errorf("revoked = %v, want A's refresh token", rev)
	}
	if _, err := f.mem.Token(ctx, userA, mcp.AccessTokenName("linear"), hostOf(f.as.URL)); err == nil {
		t.Errorf("the access token is still in the vault after disconnecting")
	}
	if got := toolNames(t, f.client, userA); len(got) != 1 || got[0] != "linear__connect_account" {
		t.Errorf("tools after disconnecting = %v, want the connect tool", got)
	}
	if res := runT(t, f.client, callAs(userB, "linear__search", `{"query":"y"}`)); res.Content != "found as bob: y" {
		t.Errorf("B after A disconnected = %+v, want bob's result", res)
	}
}

func hostOf(u string) string {
	pu, _ := url.Parse(u)
	return pu.Host
}

func TestOAuthConnectToolContinuesTheTurn(t *testing.T) {
	f := newOAuthFixture(t, oauthtest.Options{}, mcp.Server{})
	f.note.click = func(link string) { f.browser().connect(t, link) }
	res := runT(t, f.client, call("linear__connect_account", `{}`))
	if res.IsError || !res.ToolsChanged {
		t.Fatalf("connect tool = %+v, want success that changes the tools", res)
	}
	if got := toolNames(t, f.client, userA); len(got) != 3 {
		t.Errorf("tools after the connect tool = %v, want the server's", got)
	}
}

func TestOAuthWithoutRegistration(t *testing.T) {
	// Without DCR and without a client_id, the link cannot be made, and
	// the message says what to configure.
	f := newOAuthFixture(t, oauthtest.Options{NoRegistration: true, ClientID: "talon-app", ClientSecret: "s3cret-of-the-app"}, mcp.Server{})
	srv, _ := f.client.Server("linear")
	_, err := f.flow.Link(context.Background(), srv, userA)
	if err == nil || !strings.Contains(err.Error(), "client_id") || !strings.Contains(err.Error(), "https://talon.example/oauth/callback") {
		t.Fatalf("Link without DCR or client_id = %v, want an error naming client_id and the redirect URI", err)
	}

	// With the operator's client (confidential: its secret is sent in the
	// Authorization header of the token request), it works.
	f = newOAuthFixture(t, oauthtest.Options{NoRegistration: true, ClientID: "talon-app", ClientSecret: "s3cret-of-the-app"},
		mcp.Server{OAuth: &mcp.OAuthClientConfig{ClientID: "talon-app", ClientSecret: "s3cret-of-the-app"}})
	f.note.click = func(link string) { f.browser().connect(t, link) }
	if res := runT(t, f.client, call("linear__search", `{"query":"z"}`)); res.Content != "found as alice: z" {
		t.Fatalf("search with the operator's client = %+v", res)
	}
	if regs, _, _, fails := f.as.Snapshot(); regs != 0 || len(fails) != 0 {
		t.Errorf("registrations = %d, failures %q; want none", regs, fails)
	}
}

func TestOAuthHostileFlows(t *testing.T) {
	ctx := context.Background()
	t.Run("state replayed, another user's, expired", func(t *testing.T) {
		f := newOAuthFixture(t, oauthtest.Options{}, mcp.Server{})
		srv, _ := f.client.Server("linear")
		linkA, err := f.flow.Link(ctx, srv, userA)
		if err != nil {
			t.Fatal(err)
		}
		linkB, err := f.flow.Link(ctx, srv, userB)
		if err != nil {
			t.Fatal(err)
		}
		a := f.browser()
		cbA, err := a.open(t, linkA)
		if err != nil {
			t.Fatal(err)
		}
		// The link opens once.
		if _, err := f.browser().open(t, linkA); !isPage(err, http.StatusGone) {
			t.Errorf("second opening of a link = %v, want 410", err)
		}
		// B's sign-in, delivered to A's browser, is refused.
		b := f.browser()
		cbB, err := b.open(t, linkB)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.back(cbB); !isPage(err, http.StatusForbidden) {
			t.Errorf("B's callback in A's browser = %v, want 403", err)
		}
		if _, ok, _ := f.flow.Connection(ctx, "linear", userB); ok {
			t.Errorf("B is connected by a callback in another browser")
		}
		// A's own completes; replayed, it is refused.
		server, p, err := a.back(cbA)
		if err != nil || server != "linear" || p != userA {
			t.Fatalf("A's callback = %s, %v, %v", server, p, err)
		}
		if _, _, err := a.back(cbA); !isPage(err, http.StatusBadRequest) {
			t.Errorf("replayed callback = %v, want 400", err)
		}
		// A link older than 10 minutes is refused.
		linkC, _ := f.flow.Link(ctx, srv, userB)
		linkD, _ := f.flow.Link(ctx, srv, userB)
		c := f.browser()
		cbC, err := c.open(t, linkC)
		if err != nil {
			t.Fatal(err)
		}
		f.advance(mcp.StateTTL + time.Second)
		if _, _, err := c.back(cbC); !isPage(err, http.StatusGone) || !strings.Contains(err.Error(), "/talon connect linear") {
			t.Errorf("expired callback = %v, want 410 saying how to get a new link", err)
		}
		if _, err := f.browser().open(t, linkD); !isPage(err, http.StatusGone) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("opening a link after 10 minutes = %v, want 410 expired", err)
		}
	})
	t.Run("token endpoint at a metadata address", func(t *testing.T) {
		f := newOAuthFixture(t, oauthtest.Options{TokenEndpoint: "https://169.254.169.254/token"}, mcp.Server{})
		srv, _ := f.client.Server("linear")
		link, err := f.flow.Link(ctx, srv, userA)
		if err != nil {
			t.Fatal(err)
		}
		b := f.browser()
		cb, err := b.open(t, link)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = b.back(cb)
		if !isPage(err, http.StatusBadGateway) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("exchange at 169.254.169.254 = %v, want refused by the broker", err)
		}
		if _, ok, _ := f.flow.Connection(ctx, "linear", userA); ok {
			t.Errorf("connected through a refused token endpoint")
		}
	})
	t.Run("authorization server at a private address", func(t *testing.T) {
		f := newOAuthFixture(t, oauthtest.Options{AuthorizationServer: "https://10.1.2.3"}, mcp.Server{})
		srv, _ := f.client.Server("linear")
		if _, err := f.flow.Link(ctx, srv, userA); err == nil || !strings.Contains(err.Error(), "10.1.2.3") || !strings.Contains(err.Error(), "refused") {
			t.Errorf("Link with a private authorization server = %v, want refused", err)
		}
	})
	t.Run("token endpoint answers 10 MB", func(t *testing.T) {
		f := newOAuthFixture(t, oauthtest.Options{HugeToken: 10 << 20}, mcp.Server{})
		srv, _ := f.client.Server("linear")
		link, _ := f.flow.Link(ctx, srv, userA)
		b := f.browser()
		cb, err := b.open(t, link)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.back(cb); !isPage(err, http.StatusBadGateway) {
			t.Errorf("10 MB token answer = %v, want a refused exchange", err)
		}
		if _, ok, _ := f.flow.Connection(ctx, "linear", userA); ok || f.mem.saves != 0 {
			t.Errorf("stored a connection from a 10 MB answer")
		}
	})
	t.Run("provider error is escaped text", func(t *testing.T) {
		f := newOAuthFixture(t, oauthtest.Options{}, mcp.Server{})
		srv, _ := f.client.Server("linear")
		link, _ := f.flow.Link(ctx, srv, userA)
		b := f.browser()
		cb, err := b.open(t, link)
		if err != nil {
			t.Fatal(err)
		}
		q := cb.Query()
		q.Del("code")
		q.Set("error", "access_denied\n<script>")
		cb.RawQuery = q.Encode()
		if _, _, err := b.back(cb); !isPage(err, http.StatusBadRequest) || strings.Contains(err.Error(), "\n") {
			t.Errorf("provider error = %v, want one line", err)
		}
	})
}

func isPage(err error, status int) bool {
	var pe *mcp.PageError
	return errors.As(err, &pe) && pe.Status == status
}

// runT is run with a bound on the wait for a connection, so that a flow
// that fails shows as a failure rather than a hang.
func runT(t *testing.T, c *mcp.Client, call agent.ToolCall) agent.ToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Run(ctx, call)
	if err != nil {
		t.Fatalf("Run %s: %v", call.Name, err)
	}
	return res
}

func TestResourceMetadataParam(t *testing.T) {
	for _, tt := range []struct{ h, want string }{
		{`Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`, "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"},
		{`Bearer error="invalid_token", resource_metadata="https://a.example/x\"y"`, `https://a.example/x"y`},
		{`Bearer realm="x", resource_metadata=https://a.example/prm, scope="a"`, "https://a.example/prm"},
		{`Bearer error_description="no resource_metadata=here"`, ""},
		{`Basic realm="x"`, ""},
		{`Bearer not_resource_metadata="https://evil.example"`, ""},
	} {
		if got := mcp.ResourceMetadata(tt.h); got != tt.want {
			t.Errorf("resourceMetadata(%q) = %q, want %q", tt.h, got, tt.want)
		}
	}
}

// FuzzResourceMetadata: any header value parses without panicking, and
// what it returns is no longer than the value.
func FuzzResourceMetadata(f *testing.F) {
	f.Add(`Bearer resource_metadata="https://a.example/prm"`)
	f.Add(`Bearer error="x\"", resource_metadata=tok, Basic realm=y`)
	f.Add(`"=,\`)
	f.Fuzz(func(t *testing.T, h string) {
		if got := mcp.ResourceMetadata(h); len(got) > len(h) {
			t.Errorf("resourceMetadata(%q) = %q, longer than its input", h, got)
		}
	})
}

// TestOAuthRefreshFailures: a token endpoint that answers 5xx on refresh
// leaves the stored tokens and the connection intact, and the model is
// told to have the user try again, not reconnect (the tools stay offered);
// once the provider is back the same refresh token works. A refresh
// refused with invalid_grant (the user revoked the app) sends the user a
// private connect link, and the call runs once they connected again.
func TestOAuthRefreshFailures(t *testing.T) {
	f := newOAuthFixture(t, oauthtest.Options{ExpiresIn: time.Hour}, mcp.Server{})
	ctx := context.Background()
	f.note.click = func(link string) { f.browser().connect(t, link) }
	if res := runT(t, f.client, call("linear__search", `{"query":"a"}`)); res.Content != "found as alice: a" {
		t.Fatalf("search after connecting = %+v", res)
	}
	f.note.click = nil
	tokenHP := hostOf(f.as.URL)
	access, _ := f.mem.Token(ctx, userA, mcp.AccessTokenName("linear"), tokenHP)
	refresh, _ := f.mem.Token(ctx, userA, mcp.RefreshTokenName("linear"), tokenHP)

	f.as.FailRefresh(http.StatusServiceUnavailable)
	f.advance(time.Hour) // the access token expired: the next call refreshes
	if got := toolNames(t, f.client, userA); strings.Join(got, ",") != "linear__create_issue,linear__echo_headers,linear__search" {
		t.Errorf("tools while the provider is down = %v, want the server's (the user is still connected)", got)
	}
	res := runT(t, f.client, call("linear__search", `{"query":"b"}`))
	if !res.IsError || !strings.Contains(res.Content, "try again") || !strings.Contains(res.Content, "HTTP 503") ||
		!strings.Contains(res.Content, "do not need to connect it again") || strings.Contains(res.Content, "/talon connect") {
		t.Errorf("call while the provider is down = %+v, want: try again, no need to reconnect", res)
	}
	if len(f.note.sent) != 1 {
		t.Errorf("links sent = %q, want none more (the user is still connected)", f.note.sent)
	}
	if got, _ := f.mem.Token(ctx, userA, mcp.AccessTokenName("linear"), tokenHP); got != access {
		t.Errorf("the access token changed after a failed refresh")
	}
	if got, _ := f.mem.Token(ctx, userA, mcp.RefreshTokenName("linear"), tokenHP); got != refresh {
		t.Errorf("the refresh token changed after a failed refresh")
	}
	if _, ok, err := f.mem.Connection(ctx, "linear", userA); !ok || err != nil {
		t.Errorf("the connection is gone after a failed refresh (%v)", err)
	}

	// The provider is back: the same refresh token works.
	f.as.FailRefresh(0)
	if res := runT(t, f.client, call("linear__search", `{"query":"c"}`)); res.IsError || res.Content != "found as alice: c" {
		t.Errorf("call once the provider is back = %+v", res)
	}
	if _, refreshes, _, fails := f.as.Snapshot(); refreshes != 1 || len(fails) != 0 {
		t.Errorf("refreshes = %d, failures %q; want 1 and none", refreshes, fails)
	}

	// The user revoked the app at the provider: invalid_grant. The call
	// sends them a private link; once they connected it runs.
	f.as.DropGrants()
	f.advance(time.Hour)
	f.note.click = func(link string) { f.browser().connect(t, link) }
	if res := runT(t, f.client, call("linear__search", `{"query":"d"}`)); res.IsError || res.Content != "found as alice: d" {
		t.Errorf("call after invalid_grant = %+v, want it to run once the user connected again", res)
	}
	if len(f.note.sent) != 2 || !strings.HasPrefix(f.note.sent[1], userA.String()+": ") || !strings.Contains(f.note.sent[1], "/oauth/start?state=") {
		t.Errorf("links sent = %q, want a second one, to user A", f.note.sent)
	}
	if _, _, _, fails := f.as.Snapshot(); len(fails) != 1 || fails[0] != "unknown or rotated refresh token" {
		t.Errorf("token endpoint failures = %q, want the one refused refresh", fails)
	}
}
