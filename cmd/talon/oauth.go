package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/mcp"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// The MCP authorization flow's wiring: its persistence in the store, its
// tokens in the vault, its pages on http.listen (/oauth/start,
// /oauth/callback), the chat commands (/connect, /disconnect,
// /connections) and `talon mcp login`.

// newOAuth builds the flow of the servers with auth: oauth over a broker
// like broker (the same SSRF rules and private ranges) whose only
// credential is the client's own authentication; nil when no server uses
// OAuth or no vault is open.
func (a *app) newOAuth(broker *egress.Broker, notifier mcp.Notifier) *mcp.OAuth {
	svc := a.vaultSvc()
	if !a.cfg.MCP.UsesOAuth() || svc == nil {
		return nil
	}
	// No leak check on this broker: its requests carry the user's refresh
	// token to the token endpoint, which the vault's check would refuse.
	flow := &egress.Broker{AllowPrivate: broker.AllowPrivate, Resolver: broker.Resolver, TLSConfig: broker.TLSConfig, MaxRedirects: -1}
	o := &mcp.OAuth{
		Egress:    flow,
		Store:     oauthStore{a.db.gatewayStore},
		Tokens:    vaultTokens{svc},
		PublicURL: a.cfg.HTTP.PublicURL,
		Notifier:  notifier,
		Logger:    a.log.With().Str("component", "mcp-oauth").Logger(),
	}
	flow.Credentials = o
	a.closers = append(a.closers, flow.CloseIdleConnections)
	return o
}

// mountOAuth serves the flow's pages on mux when an MCP server uses OAuth.
func (a *app) mountOAuth(mux *http.ServeMux) {
	if a.mcp == nil || a.mcp.OAuth == nil {
		return
	}
	oauthPages{c: a.mcp}.mount(mux)
}

// oauthPages are /oauth/start and /oauth/callback.
type oauthPages struct{ c *mcp.Client }

func (p oauthPages) mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+mcp.StartPath, p.start)
	mux.HandleFunc("GET "+mcp.CallbackPath, p.callback)
}

func (p oauthPages) secure() bool {
	return strings.HasPrefix(p.c.OAuth.PublicURL, "https://")
}

func (p oauthPages) start(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	redirect, cookie, err := p.c.OAuth.Start(r.Context(), state)
	if err != nil {
		p.fail(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: mcp.StateCookie(state), Value: cookie, Path: "/oauth/", MaxAge: int(mcp.StateTTL / time.Second),
		HttpOnly: true, Secure: p.secure(), SameSite: http.SameSiteLaxMode})
	pageHeaders(w)
	http.Redirect(w, r, redirect, http.StatusFound)
}

func (p oauthPages) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cookie := ""
	if c, err := r.Cookie(mcp.StateCookie(q.Get("state"))); err == nil {
		cookie = c.Value
	}
	server, _, err := p.c.OAuth.Callback(r.Context(), p.c.Server, q, cookie)
	// The cookie served its one purpose.
	http.SetCookie(w, &http.Cookie{Name: mcp.StateCookie(q.Get("state")), Value: "", Path: "/oauth/", MaxAge: -1,
		HttpOnly: true, Secure: p.secure(), SameSite: http.SameSiteLaxMode})
	if err != nil {
		p.fail(w, err)
		return
	}
	page(w, http.StatusOK, "Connected", fmt.Sprintf("Connected to %s, you can close this tab.", server))
}

func (p oauthPages) fail(w http.ResponseWriter, err error) {
	var pe *mcp.PageError
	if errors.As(err, &pe) {
		page(w, pe.Status, "Not connected", pe.Message)
		return
	}
	ref := agent.NewRef()
	p.c.Logger.Error().Err(err).Str("ref", ref).Msg("oauth page")
	page(w, http.StatusInternalServerError, "Not connected", "Talon could not finish this sign-in (reference "+ref+"). Ask Talon for a new link: /talon connect NAME.")
}

// pageHTML is the flow's one page: a title and a message, both escaped
// (html/template would make the linker keep every exported method of the
// binary; see RATIONALE.md on the console).
const pageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Talon: %s</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto;">
<h1>%s</h1>
<p>%s</p>
</body></html>
`

// pageHeaders keeps the flow's pages and redirects out of caches, frames
// and referrers (their URLs carry the state).
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
}

// page writes a plain page, title and message escaped.
func page(w http.ResponseWriter, status int, title, message string) {
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	t, m := html.EscapeString(title), html.EscapeString(message)
	fmt.Fprintf(w, pageHTML, t, t, m)
}

// oauthDB is what the flow keeps in the store; the SQLite store and the
// PostgreSQL store both implement it (store/storetest holds them to the
// same behaviour).
type oauthDB interface {
	PutOAuthState(ctx context.Context, s store.OAuthState) error
	StartOAuthState(ctx context.Context, id, browser string, at time.Time) (store.OAuthState, bool, error)
	TakeOAuthState(ctx context.Context, id string) (store.OAuthState, error)
	SweepOAuthStates(ctx context.Context, before time.Time) (int, error)
	GetOAuthClient(ctx context.Context, server, issuer string) (store.OAuthClient, error)
	PutOAuthClient(ctx context.Context, c store.OAuthClient) error
	PutOAuthConnection(ctx context.Context, c store.OAuthConnection) error
	GetOAuthConnection(ctx context.Context, server, principal string) (store.OAuthConnection, error)
	DeleteOAuthConnection(ctx context.Context, server, principal string) (bool, error)
	OAuthConnections(ctx context.Context, server, principal string) ([]store.OAuthConnection, error)
}

// oauthStore is the store as the flow's persistence.
type oauthStore struct{ db oauthDB }

var _ mcp.OAuthStore = oauthStore{}

func toStoreState(s mcp.OAuthState) store.OAuthState {
	return store.OAuthState{ID: s.ID, Principal: s.Principal.String(), Server: s.Server, Verifier: s.Verifier, Issuer: s.Issuer,
		AuthURL: s.AuthURL, TokenURL: s.TokenURL, RevokeURL: s.RevokeURL, ClientID: s.ClientID, Resource: s.Resource, Scopes: s.Scopes,
		Browser: s.Browser, CreatedAt: s.CreatedAt, StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt}
}

func fromStoreState(s store.OAuthState) (mcp.OAuthState, error) {
	p, err := agent.ParsePrincipal(s.Principal)
	if err != nil {
		return mcp.OAuthState{}, err
	}
	return mcp.OAuthState{ID: s.ID, Principal: p, Server: s.Server, Verifier: s.Verifier, Issuer: s.Issuer,
		AuthURL: s.AuthURL, TokenURL: s.TokenURL, RevokeURL: s.RevokeURL, ClientID: s.ClientID, Resource: s.Resource, Scopes: s.Scopes,
		Browser: s.Browser, CreatedAt: s.CreatedAt, StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt}, nil
}

func (o oauthStore) PutState(ctx context.Context, s mcp.OAuthState) error {
	return o.db.PutOAuthState(ctx, toStoreState(s))
}

func (o oauthStore) StartState(ctx context.Context, id, browser string, at time.Time) (mcp.OAuthState, bool, error) {
	s, first, err := o.db.StartOAuthState(ctx, id, browser, at)
	if errors.Is(err, store.ErrNotFound) {
		return mcp.OAuthState{}, false, mcp.ErrNoState
	}
	if err != nil {
		return mcp.OAuthState{}, false, err
	}
	ms, err := fromStoreState(s)
	return ms, first, err
}

func (o oauthStore) TakeState(ctx context.Context, id string) (mcp.OAuthState, error) {
	s, err := o.db.TakeOAuthState(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return mcp.OAuthState{}, mcp.ErrNoState
	}
	if err != nil {
		return mcp.OAuthState{}, err
	}
	return fromStoreState(s)
}

func (o oauthStore) Client(ctx context.Context, server, issuer string) (mcp.RegisteredClient, bool, error) {
	c, err := o.db.GetOAuthClient(ctx, server, issuer)
	if errors.Is(err, store.ErrNotFound) {
		return mcp.RegisteredClient{}, false, nil
	}
	if err != nil {
		return mcp.RegisteredClient{}, false, err
	}
	return mcp.RegisteredClient{Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret}, true, nil
}

func (o oauthStore) PutClient(ctx context.Context, server string, c mcp.RegisteredClient) error {
	return o.db.PutOAuthClient(ctx, store.OAuthClient{Server: server, Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret, RegisteredAt: time.Now()})
}

func fromStoreConn(c store.OAuthConnection) (mcp.Connection, error) {
	p, err := agent.ParsePrincipal(c.Principal)
	if err != nil {
		return mcp.Connection{}, err
	}
	return mcp.Connection{Server: c.Server, Principal: p, Issuer: c.Issuer, ClientID: c.ClientID, TokenURL: c.TokenURL,
		RevokeURL: c.RevokeURL, Resource: c.Resource, Scopes: c.Scopes, ExpiresAt: c.ExpiresAt, ConnectedAt: c.ConnectedAt, RefreshedAt: c.RefreshedAt}, nil
}

func (o oauthStore) Connection(ctx context.Context, server string, p agent.Principal) (mcp.Connection, bool, error) {
	c, err := o.db.GetOAuthConnection(ctx, server, p.String())
	if errors.Is(err, store.ErrNotFound) {
		return mcp.Connection{}, false, nil
	}
	if err != nil {
		return mcp.Connection{}, false, err
	}
	mc, err := fromStoreConn(c)
	return mc, err == nil, err
}

func (o oauthStore) PutConnection(ctx context.Context, c mcp.Connection) error {
	return o.db.PutOAuthConnection(ctx, store.OAuthConnection{Server: c.Server, Principal: c.Principal.String(), Issuer: c.Issuer,
		ClientID: c.ClientID, TokenURL: c.TokenURL, RevokeURL: c.RevokeURL, Resource: c.Resource, Scopes: c.Scopes,
		ExpiresAt: c.ExpiresAt, ConnectedAt: c.ConnectedAt, RefreshedAt: c.RefreshedAt})
}

func (o oauthStore) DeleteConnection(ctx context.Context, server string, p agent.Principal) error {
	_, err := o.db.DeleteOAuthConnection(ctx, server, p.String())
	return err
}

func (o oauthStore) Connections(ctx context.Context, server string, p agent.Principal) ([]mcp.Connection, error) {
	user := ""
	if p != (agent.Principal{}) {
		user = p.String()
	}
	cs, err := o.db.OAuthConnections(ctx, server, user)
	if err != nil {
		return nil, err
	}
	out := make([]mcp.Connection, 0, len(cs))
	for _, c := range cs {
		if mc, err := fromStoreConn(c); err == nil {
			out = append(out, mc)
		}
	}
	return out, nil
}

// vaultTokens keeps the flow's tokens as vault entries of each user.
type vaultTokens struct{ s *vault.Service }

var _ mcp.TokenVault = vaultTokens{}

func (v vaultTokens) SaveTokens(ctx context.Context, p agent.Principal, server, access, mcpHostPort, refresh, tokenHostPort string) error {
	es := []vault.Entry{{User: p.String(), Name: mcp.AccessTokenName(server), Value: vault.SecretString(access), Hosts: []string{mcpHostPort},
		Injection: vault.Injection{Kind: vault.InjectBearer}}}
	if refresh != "" {
		es = append(es, vault.Entry{User: p.String(), Name: mcp.RefreshTokenName(server), Value: vault.SecretString(refresh), Hosts: []string{tokenHostPort},
			Injection: vault.Injection{Kind: vault.InjectBearer}})
	}
	err := v.s.AddAll(ctx, es...)
	var ee *vault.EntryError
	if errors.As(err, &ee) {
		return fmt.Errorf("the provider's token cannot be kept (%s: %s)", ee.Field, ee.Reason)
	}
	return err
}

func (v vaultTokens) Token(ctx context.Context, p agent.Principal, name, hostPort string) (string, error) {
	e, err := v.s.Credential(ctx, p.String(), "mcp-oauth", name, hostPort)
	if errors.Is(err, vault.ErrUnavailable) {
		return "", fmt.Errorf("%w: %w", egress.ErrNoCredential, err)
	}
	if err != nil {
		return "", err
	}
	return string(e.Value.Reveal()), nil
}

func (v vaultTokens) DeleteTokens(ctx context.Context, p agent.Principal, server string) error {
	for _, name := range []string{mcp.AccessTokenName(server), mcp.RefreshTokenName(server)} {
		if err := v.s.Remove(ctx, p.String(), name); err != nil && !errors.Is(err, vault.ErrNotFound) {
			return err
		}
	}
	return nil
}

// mcpConnector answers /connect, /disconnect and /connections.
type mcpConnector struct{ c *mcp.Client }

var _ agent.Connector = mcpConnector{}

func (m mcpConnector) oauthServer(name string) (*mcp.Server, error) {
	srv, ok := m.c.Server(name)
	if !ok || srv.Auth != mcp.AuthOAuth {
		return nil, fmt.Errorf("no server called %q signs in with your own account here", name)
	}
	return srv, nil
}

func (m mcpConnector) ConnectLink(ctx context.Context, p agent.Principal, server string) (string, error) {
	srv, err := m.oauthServer(server)
	if err != nil {
		return "", err
	}
	link, err := m.c.OAuth.Link(ctx, srv, p)
	if err != nil {
		ref := agent.NewRef()
		m.c.Logger.Warn().Err(err).Str("ref", ref).Str("mcp_server", server).Msg("oauth: connect link")
		return "", fmt.Errorf("the sign-in of %s could not be prepared (reference %s; the operator's log says why)", server, ref)
	}
	return link, nil
}

func (m mcpConnector) Disconnect(ctx context.Context, p agent.Principal, server string) (string, error) {
	srv, err := m.oauthServer(server)
	if err != nil {
		return err.Error() + ".", nil
	}
	had, revoked, err := m.c.Disconnect(ctx, srv.Name, p)
	switch {
	case err != nil:
		return "", err
	case !had:
		return fmt.Sprintf("You had not connected %s.", server), nil
	case revoked:
		return fmt.Sprintf("Disconnected %s: the provider revoked the access, and Talon deleted it.", server), nil
	}
	return fmt.Sprintf("Disconnected %s: Talon deleted the access (the provider offers no revocation, so you can also remove Talon in %s's settings).", server, server), nil
}

func (m mcpConnector) Connections(ctx context.Context, p agent.Principal) ([]agent.ConnectionInfo, []string, error) {
	cs, err := m.c.OAuth.Store.Connections(ctx, "", p)
	if err != nil {
		return nil, nil, err
	}
	connected := map[string]bool{}
	out := make([]agent.ConnectionInfo, 0, len(cs))
	for _, c := range cs {
		connected[c.Server] = true
		out = append(out, agent.ConnectionInfo{Server: c.Server, ConnectedAt: c.ConnectedAt, ExpiresAt: c.ExpiresAt})
	}
	var avail []string
	for _, s := range m.c.Servers {
		if s.Auth == mcp.AuthOAuth && !connected[s.Name] {
			avail = append(avail, s.Name)
		}
	}
	return out, avail, nil
}

// cmdMCPLogin connects a user's account of an OAuth server from the
// command line: it prints the link and serves the callback itself on
// http.listen until the user signed in. The gateway must be stopped (it
// holds the data directory and the listener); in chat, /talon connect does
// the same while it runs.
func cmdMCPLogin(ctx context.Context, e env, args []string) error {
	name, user, flagPath, err := mcpFlags(e, "login", args, true)
	if err != nil {
		return err
	}
	if name == "" || user == "" {
		return &usageError{"mcp login: talon mcp login NAME --user PRINCIPAL"}
	}
	p, err := agent.ParsePrincipal(user)
	if err != nil {
		return &usageError{"mcp login: --user: " + err.Error()}
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	var found *mcp.Server
	for _, s := range cfg.MCP.MCPServers() {
		if s.Name == name {
			found = &s
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("mcp login: no server %q in mcp.servers", name)
	case found.Auth != mcp.AuthOAuth:
		return fmt.Errorf("mcp login: server %s has auth: %s; login is for auth: oauth", name, found.Auth)
	}
	a, err := openMCPApp(ctx, e, cfg)
	if errors.Is(err, errDataDirLocked) {
		return fmt.Errorf("mcp login: the gateway is running (it holds the data directory and %s). Ask the user to type /talon connect %s in chat, "+
			"which sends them the link privately, or stop the gateway and run this again", cfg.HTTP.Listen, name)
	}
	if err != nil {
		return err
	}
	defer a.Close()
	broker, err := a.newBroker()
	if err != nil {
		return err
	}
	defer broker.CloseIdleConnections()
	c := a.newMCP(broker, nil)
	if c == nil || c.OAuth == nil {
		return fmt.Errorf("mcp login: the vault is not open, so no token can be kept")
	}
	srv, _ := c.Server(name)

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("mcp login: listen on http.listen %s for the callback: %w", cfg.HTTP.Listen, err)
	}
	mux := http.NewServeMux()
	oauthPages{c: c}.mount(mux)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-served
	}()

	link, err := c.OAuth.Link(ctx, srv, p)
	if err != nil {
		var de *egress.DeniedError
		if errors.As(err, &de) {
			return fmt.Errorf("mcp login %s: %s", name, de.Error())
		}
		return fmt.Errorf("mcp login %s: %w", name, err)
	}
	fmt.Fprintf(e.stdout, "Open this link in the browser of %s, within %d minutes (it works once):\n\n  %s\n\nWaiting for the sign-in (Ctrl-C to stop)…\n",
		p, int(mcp.StateTTL/time.Minute), link)
	wctx, cancel := context.WithTimeout(ctx, mcp.StateTTL)
	defer cancel()
	if err := c.OAuth.Wait(wctx, name, p); err != nil {
		return fmt.Errorf("mcp login %s: no sign-in arrived within %d minutes; run it again for a new link", name, int(mcp.StateTTL/time.Minute))
	}
	fmt.Fprintf(e.stdout, "%s: connected for %s.\n", name, p)
	return nil
}

// doctorMCP checks each MCP server through the egress broker: that it
// answers, and for auth: oauth, http.public_url and what discovery finds
// (the authorization server, whether it offers dynamic registration, and
// revocation).
func doctorMCP(ctx context.Context, e env, cfg *config.Config, check checkFunc) {
	if len(cfg.MCP.Servers) == 0 {
		return
	}
	broker, err := (&app{cfg: cfg, env: e}).newBroker()
	if err != nil {
		check("mcp servers", err, "")
		return
	}
	defer broker.CloseIdleConnections()
	if cfg.MCP.UsesOAuth() {
		var perr error
		if u, err := url.Parse(cfg.HTTP.PublicURL); err == nil && u.Scheme != "https" {
			if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
				perr = fmt.Errorf("%s is not https: providers accept an http redirect URI only on localhost", cfg.HTTP.PublicURL)
			}
		}
		check("http.public_url", perr, " "+cfg.HTTP.PublicURL+" (OAuth providers redirect to "+strings.TrimRight(cfg.HTTP.PublicURL, "/")+mcp.CallbackPath+")")
	}
	flow := &egress.Broker{AllowPrivate: broker.AllowPrivate, Resolver: broker.Resolver, TLSConfig: broker.TLSConfig, MaxRedirects: -1}
	defer flow.CloseIdleConnections()
	o := &mcp.OAuth{Egress: flow, PublicURL: cfg.HTTP.PublicURL}
	flow.Credentials = o
	for _, srv := range cfg.MCP.MCPServers() {
		name := "mcp server " + srv.Name
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if srv.Auth != mcp.AuthOAuth {
			status, err := o.Probe(cctx, &srv)
			cancel()
			check(name, err, fmt.Sprintf(" %s answers (HTTP %d without credentials)", srv.URL, status))
			continue
		}
		d, err := o.Discover(cctx, &srv)
		cancel()
		if err != nil {
			check(name, err, "")
			continue
		}
		reg := "offered (Talon registers its client)"
		switch {
		case srv.OAuth != nil && srv.OAuth.ClientID != "":
			reg = "not needed (oauth.client_id is set)"
		case !d.Registration:
			err = fmt.Errorf("%s's authorization server %s offers no dynamic client registration: register a client there with the redirect URI %s%s and set mcp.servers[].oauth.client_id",
				srv.Name, d.Issuer, strings.TrimRight(cfg.HTTP.PublicURL, "/"), mcp.CallbackPath)
		}
		revoke := "offered"
		if d.RevokeURL == "" {
			revoke = "not offered (disconnecting deletes the tokens only)"
		}
		check(name, err, fmt.Sprintf(" %s: authorization server %s; dynamic registration %s; revocation %s", srv.URL, d.Issuer, reg, revoke))
	}
}
