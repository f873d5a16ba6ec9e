package mcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
)

// The MCP authorization flow (auth: oauth): discovery (RFC 9728, RFC 8414,
// OpenID discovery), dynamic client registration (RFC 7591), the
// authorization code with PKCE S256 and the resource parameter (RFC 8707),
// refresh and revocation (RFC 7009). Every request goes through the egress
// broker; the tokens are vault entries of the user, injected by the broker.

// StateTTL is how long a connect link is valid.
const StateTTL = 10 * time.Minute

// refreshAhead is how long before its expiry an access token is refreshed.
const refreshAhead = 60 * time.Second

// maxMetadataBytes bounds a metadata, registration or token response.
const maxMetadataBytes = 1 << 20

// AccessTokenName is the vault entry that holds a user's access token for
// server: injected as a bearer token, bound to the server's host and port.
func AccessTokenName(server string) string { return "oauth." + server }

// RefreshTokenName is the vault entry that holds a user's refresh token
// for server, bound to the token endpoint's host and port.
func RefreshTokenName(server string) string { return "oauth." + server + ".refresh" }

// ErrNotConnected is returned when a user has no connection to an OAuth
// server (or it was revoked): they must connect first.
var ErrNotConnected = errors.New("mcp: not connected")

// ErrRefreshUnavailable is wrapped when the authorization server could not
// renew a user's access token just now (it answered 5xx or 429, or not at
// all): the tokens are kept, and trying again later may succeed; the user
// need not connect again.
var ErrRefreshUnavailable = errors.New("mcp: the sign-in provider could not renew the access now")

// RefreshError is a refresh that failed with ErrRefreshUnavailable: Detail
// says how ("HTTP 503", "HTTP 503: temporarily_unavailable", a network
// error), without the response body.
type RefreshError struct {
	Server, Detail string
}

func (e *RefreshError) Error() string {
	return fmt.Sprintf("mcp: the sign-in provider of %s could not renew the access now (%s)", e.Server, e.Detail)
}

// Is makes a RefreshError match ErrRefreshUnavailable.
func (e *RefreshError) Is(target error) bool { return target == ErrRefreshUnavailable }

// ErrNoState is wrapped by OAuthStore when a state does not exist.
var ErrNoState = errors.New("mcp: no such oauth state")

// OAuthState is one connect link, as stored: ID is the SHA-256 of the
// state, never the state itself.
type OAuthState struct {
	ID        string
	Principal agent.Principal
	Server    string
	// Verifier is the PKCE code verifier.
	Verifier                                                         string
	Issuer, AuthURL, TokenURL, RevokeURL, ClientID, Resource, Scopes string
	// Browser is the hash of the cookie the start page set.
	Browser                         string
	CreatedAt, StartedAt, ExpiresAt time.Time
}

// RegisteredClient is Talon's client at an authorization server.
type RegisteredClient struct {
	Issuer, ClientID, ClientSecret string
}

// Connection is a user's connection to a server, without its tokens.
type Connection struct {
	Server                                                  string
	Principal                                               agent.Principal
	Issuer, ClientID, TokenURL, RevokeURL, Resource, Scopes string
	ExpiresAt, ConnectedAt, RefreshedAt                     time.Time
}

// OAuthStore persists the flow's states, the registered clients and the
// connections. The store implements it (wired by cmd).
type OAuthStore interface {
	PutState(ctx context.Context, s OAuthState) error
	// StartState marks the state started by browser, once: first is
	// false when it was started before. The error wraps ErrNoState when
	// there is none.
	StartState(ctx context.Context, id, browser string, at time.Time) (s OAuthState, first bool, err error)
	// TakeState returns and deletes the state; the error wraps ErrNoState
	// when there is none.
	TakeState(ctx context.Context, id string) (OAuthState, error)
	Client(ctx context.Context, server, issuer string) (RegisteredClient, bool, error)
	PutClient(ctx context.Context, server string, c RegisteredClient) error
	Connection(ctx context.Context, server string, p agent.Principal) (Connection, bool, error)
	PutConnection(ctx context.Context, c Connection) error
	DeleteConnection(ctx context.Context, server string, p agent.Principal) error
	// Connections lists the connections to server ("" for all) of p (the
	// zero Principal for everyone's).
	Connections(ctx context.Context, server string, p agent.Principal) ([]Connection, error)
}

// TokenVault keeps the users' tokens as vault entries (AccessTokenName,
// RefreshTokenName). The vault implements it (wired by cmd).
type TokenVault interface {
	// SaveTokens stores p's access token for server, bound to
	// mcpHostPort and injected as a bearer token, and the refresh token
	// ("" for none), bound to tokenHostPort, in one transaction.
	SaveTokens(ctx context.Context, p agent.Principal, server, access, mcpHostPort, refresh, tokenHostPort string) error
	// Token returns the value of p's entry name when it is bound to
	// hostPort (audited); the error wraps egress.ErrNoCredential when not.
	Token(ctx context.Context, p agent.Principal, name, hostPort string) (string, error)
	// DeleteTokens removes p's token entries for server.
	DeleteTokens(ctx context.Context, p agent.Principal, server string) error
}

// Notifier shows one user a message nobody else sees, in the conversation
// of a turn. *agent.Runtime implements it. ok is false when the channel
// cannot show a private message there.
type Notifier interface {
	NotifyPrivately(ctx context.Context, key agent.SessionKey, turn agent.TurnID, n agent.Notice) (ok bool, err error)
}

// OAuthClientConfig is the operator's client for a server whose
// authorization server offers no dynamic registration.
type OAuthClientConfig struct {
	ClientID     string
	ClientSecret string
	Scopes       []string
}

// OAuth runs the authorization flow of the servers with auth: oauth. Set
// the fields, then use it from any goroutine.
type OAuth struct {
	// Egress makes the discovery, registration, token and revocation
	// requests: the SSRF rules apply, a server's own origin may be a
	// private address only as the broker allows, any other host must be
	// public. No credential is injected; its leak check must let the
	// refresh token through to the token endpoint (cmd gives a broker
	// without one). Required.
	Egress Egress
	// Store and Tokens are required.
	Store  OAuthStore
	Tokens TokenVault
	// PublicURL is http.public_url: links are PublicURL/oauth/start and
	// the redirect URI is PublicURL/oauth/callback. Required.
	PublicURL string
	// Notifier sends connect links to users in chat; nil sends none.
	Notifier Notifier
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives failures, never tokens, codes or states.
	Logger zerolog.Logger

	mu      sync.Mutex
	meta    map[string]cachedMeta       // server → discovery, guarded by mu
	locks   map[connKey]*sync.Mutex     // one refresh at a time, guarded by mu
	waiters map[connKey][]chan struct{} // waiting for a connection, guarded by mu
}

type connKey struct {
	server string
	user   agent.Principal
}

type cachedMeta struct {
	m  *authMeta
	at time.Time
}

// authMeta is what discovery found for a server.
type authMeta struct {
	Resource    string
	Issuer      string
	AuthURL     string
	TokenURL    string
	RevokeURL   string
	RegisterURL string
	Scopes      []string
	AuthMethods []string
}

func (o *OAuth) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// PageError is a failure of the start or callback page: Status and a
// message for the person in the browser (plain text; the page escapes it).
type PageError struct {
	Status  int
	Message string
}

func (e *PageError) Error() string { return e.Message }

// CallbackPath and StartPath are where Talon's HTTP listener serves the
// flow.
const (
	StartPath    = "/oauth/start"
	CallbackPath = "/oauth/callback"
)

func (o *OAuth) redirectURI() string { return strings.TrimRight(o.PublicURL, "/") + CallbackPath }

// Connection returns p's connection to server.
func (o *OAuth) Connection(ctx context.Context, server string, p agent.Principal) (Connection, bool, error) {
	return o.Store.Connection(ctx, server, p)
}

// Link discovers srv's authorization server (registering a client when it
// offers registration and none is registered yet), stores a new state for
// p and returns the one-time link that starts the flow.
func (o *OAuth) Link(ctx context.Context, srv *Server, p agent.Principal) (string, error) {
	if srv.Auth != AuthOAuth {
		return "", fmt.Errorf("mcp: server %s does not use oauth", srv.Name)
	}
	m, err := o.discover(ctx, srv)
	if err != nil {
		return "", err
	}
	cl, err := o.client(ctx, srv, m)
	if err != nil {
		return "", err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	state := base64.RawURLEncoding.EncodeToString(raw)
	scopes := m.Scopes
	if srv.OAuth != nil && len(srv.OAuth.Scopes) > 0 {
		scopes = srv.OAuth.Scopes
	}
	now := o.now()
	err = o.Store.PutState(ctx, OAuthState{
		ID: hashHex(state), Principal: p, Server: srv.Name, Verifier: oauth2.GenerateVerifier(),
		Issuer: m.Issuer, AuthURL: m.AuthURL, TokenURL: m.TokenURL, RevokeURL: m.RevokeURL, ClientID: cl.ClientID,
		Resource: m.Resource, Scopes: strings.Join(scopes, " "), CreatedAt: now, ExpiresAt: now.Add(StateTTL),
	})
	if err != nil {
		return "", err
	}
	return strings.TrimRight(o.PublicURL, "/") + StartPath + "?state=" + url.QueryEscape(state), nil
}

// StateCookie is the name of the cookie the start page sets for a state:
// the callback is accepted only in the browser that opened the link.
func StateCookie(state string) string { return "talon_oauth_" + hashHex(state)[:16] }

// Start serves the link: it marks the state started (a link opens once)
// and returns the authorization server's URL to redirect to and the value
// of the cookie to set (named StateCookie(state)).
func (o *OAuth) Start(ctx context.Context, state string) (redirect, cookie string, err error) {
	if state == "" || len(state) > 256 {
		return "", "", &PageError{http.StatusBadRequest, "This link is incomplete. Ask Talon for a new one: /talon connect NAME."}
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	cookie = base64.RawURLEncoding.EncodeToString(raw)
	s, first, err := o.Store.StartState(ctx, hashHex(state), hashHex(cookie), o.now())
	switch {
	case errors.Is(err, ErrNoState):
		return "", "", &PageError{http.StatusNotFound, "This link is not valid, or it was already used to connect. Ask Talon for a new one: /talon connect NAME."}
	case err != nil:
		return "", "", err
	case !first:
		return "", "", &PageError{http.StatusGone, fmt.Sprintf("This link was opened already; a link works once. Ask Talon for a new one: /talon connect %s.", s.Server)}
	case o.now().After(s.ExpiresAt):
		return "", "", &PageError{http.StatusGone, fmt.Sprintf("This link expired (links last %d minutes). Ask Talon for a new one: /talon connect %s.", int(StateTTL/time.Minute), s.Server)}
	}
	cfg := oauth2.Config{ClientID: s.ClientID, Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL}, RedirectURL: o.redirectURI()}
	if s.Scopes != "" {
		cfg.Scopes = strings.Fields(s.Scopes)
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(s.Verifier)}
	if s.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", s.Resource))
	}
	return cfg.AuthCodeURL(state, opts...), cookie, nil
}

// Callback finishes the flow: q is the callback's query, cookie the value
// of StateCookie(q's state) in the request ("" when absent). The state is
// consumed whatever happens. It exchanges the code, stores the tokens in
// the vault of the state's principal and wakes the turns waiting for this
// connection. A failure is a *PageError saying what to do.
func (o *OAuth) Callback(ctx context.Context, servers func(string) (*Server, bool), q url.Values, cookie string) (server string, p agent.Principal, err error) {
	state := q.Get("state")
	if state == "" || len(state) > 256 {
		return "", p, &PageError{http.StatusBadRequest, "The sign-in provider sent no state back. Start again from the link Talon sends you: /talon connect NAME."}
	}
	s, err := o.Store.TakeState(ctx, hashHex(state))
	switch {
	case errors.Is(err, ErrNoState):
		return "", p, &PageError{http.StatusBadRequest, "This sign-in was already completed, or was not started by Talon. If you are not connected, ask Talon for a new link: /talon connect NAME."}
	case err != nil:
		return "", p, err
	}
	again := fmt.Sprintf("Ask Talon for a new link: /talon connect %s.", s.Server)
	switch {
	case o.now().After(s.ExpiresAt):
		return s.Server, p, &PageError{http.StatusGone, fmt.Sprintf("This sign-in took longer than the %d minutes a link lasts. %s", int(StateTTL/time.Minute), again)}
	case s.Browser == "" || cookie == "" || hashHex(cookie) != s.Browser:
		return s.Server, p, &PageError{http.StatusForbidden, "This sign-in was not started from this browser by the person the link was sent to, so it is refused. Open the link Talon sent you, in this browser. " + again}
	case q.Get("error") != "":
		return s.Server, p, &PageError{http.StatusBadRequest, fmt.Sprintf("The sign-in provider refused: %s %s. %s", clip(oneLine(q.Get("error")), 100), clip(oneLine(q.Get("error_description")), 300), again)}
	case q.Get("code") == "":
		return s.Server, p, &PageError{http.StatusBadRequest, "The sign-in provider sent no code back. " + again}
	}
	srv, ok := servers(s.Server)
	if !ok || srv.Auth != AuthOAuth {
		return s.Server, p, &PageError{http.StatusNotFound, fmt.Sprintf("The MCP server %q is no longer configured with OAuth on this Talon.", s.Server)}
	}
	secret, err := o.clientSecret(ctx, srv, s.Issuer, s.ClientID)
	if err != nil {
		return s.Server, p, err
	}
	cfg := o.config(s.ClientID, secret, s.AuthURL, s.TokenURL)
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(s.Verifier)}
	if s.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", s.Resource))
	}
	tok, err := cfg.Exchange(o.clientCtx(ctx, srv, s.Principal), q.Get("code"), opts...)
	if err != nil {
		o.Logger.Warn().Str("mcp_server", srv.Name).Str("principal", s.Principal.String()).Str("reason", tokenErr(err)).Msg("oauth: code exchange failed")
		return s.Server, p, &PageError{http.StatusBadGateway, fmt.Sprintf("Talon could not finish the sign-in with %s's provider: %s. %s", s.Server, tokenErr(err), again)}
	}
	now := o.now()
	c := Connection{Server: srv.Name, Principal: s.Principal, Issuer: s.Issuer, ClientID: s.ClientID, TokenURL: s.TokenURL,
		RevokeURL: s.RevokeURL, Resource: s.Resource, Scopes: s.Scopes, ConnectedAt: now, RefreshedAt: now}
	if err := o.save(ctx, srv, c, tok); err != nil {
		o.Logger.Warn().Err(err).Str("mcp_server", srv.Name).Str("principal", s.Principal.String()).Msg("oauth: store tokens")
		return s.Server, p, &PageError{http.StatusBadGateway, fmt.Sprintf("Talon could not store the connection to %s: %s. %s", s.Server, clip(oneLine(err.Error()), 300), again)}
	}
	o.wake(connKey{srv.Name, s.Principal})
	return s.Server, s.Principal, nil
}

// tokenErr says why a token request failed, without the response body.
func tokenErr(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		if code == "" && re.Response != nil {
			code = "HTTP " + strconv.Itoa(re.Response.StatusCode)
		}
		if re.ErrorDescription != "" {
			code += ": " + re.ErrorDescription
		}
		return clip(oneLine(code), 300)
	}
	var de *egress.DeniedError
	if errors.As(err, &de) {
		return clip(de.Error(), 300)
	}
	return clip(oneLine(err.Error()), 300)
}

// save checks the token response and stores the tokens and the
// connection.
func (o *OAuth) save(ctx context.Context, srv *Server, c Connection, tok *oauth2.Token) error {
	if tok.AccessToken == "" {
		return errors.New("the token response has no access token")
	}
	if t := tok.Type(); !strings.EqualFold(t, "bearer") {
		return fmt.Errorf("the token type %q is not bearer", clip(oneLine(t), 40))
	}
	_, mcpHP, err := srv.origin()
	if err != nil {
		return err
	}
	tokenHP := ""
	if tok.RefreshToken != "" {
		if tokenHP, err = hostPortOf(c.TokenURL); err != nil {
			return err
		}
	}
	if err := o.Tokens.SaveTokens(ctx, c.Principal, srv.Name, tok.AccessToken, mcpHP, tok.RefreshToken, tokenHP); err != nil {
		return err
	}
	c.ExpiresAt = time.Time{}
	if tok.ExpiresIn > 0 {
		c.ExpiresAt = o.now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	return o.Store.PutConnection(ctx, c)
}

// Disconnect revokes p's tokens for srv where the authorization server
// offers revocation (RFC 7009), then deletes them and the connection. It
// reports whether there was a connection and whether revocation was
// accepted.
func (o *OAuth) Disconnect(ctx context.Context, srv *Server, p agent.Principal) (had, revoked bool, err error) {
	c, ok, err := o.Store.Connection(ctx, srv.Name, p)
	if err != nil {
		return false, false, err
	}
	if ok && c.RevokeURL != "" {
		revoked = o.revoke(ctx, srv, c)
	}
	if err := o.Tokens.DeleteTokens(ctx, p, srv.Name); err != nil {
		return ok, revoked, err
	}
	if err := o.Store.DeleteConnection(ctx, srv.Name, p); err != nil {
		return ok, revoked, err
	}
	return ok, revoked, nil
}

// revoke asks the authorization server to revoke the refresh token (which
// revokes its access tokens) or, without one, the access token.
func (o *OAuth) revoke(ctx context.Context, srv *Server, c Connection) bool {
	token, hint := "", ""
	if hp, err := hostPortOf(c.TokenURL); err == nil {
		if t, err := o.Tokens.Token(ctx, c.Principal, RefreshTokenName(srv.Name), hp); err == nil {
			token, hint = t, "refresh_token"
		}
	}
	if token == "" {
		_, hp, _ := srv.origin()
		t, err := o.Tokens.Token(ctx, c.Principal, AccessTokenName(srv.Name), hp)
		if err != nil {
			return false
		}
		token, hint = t, "access_token"
	}
	secret, err := o.clientSecret(ctx, srv, c.Issuer, c.ClientID)
	if err != nil {
		return false
	}
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	if secret == "" {
		form.Set("client_id", c.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.RevokeURL, strings.NewReader(form.Encode()))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(secret))
	}
	resp, err := o.httpClient(srv, c.Principal, true).Do(req)
	if err != nil {
		o.Logger.Warn().Str("mcp_server", srv.Name).Str("reason", tokenErr(err)).Msg("oauth: revoke")
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ensure returns p's connection to srv, refreshing its access token when
// it expires within refreshAhead. It returns ErrNotConnected when there is
// none or its refresh token was refused.
func (o *OAuth) ensure(ctx context.Context, srv *Server, p agent.Principal) (Connection, error) {
	c, ok, err := o.Store.Connection(ctx, srv.Name, p)
	if err != nil {
		return Connection{}, err
	}
	if !ok {
		return Connection{}, ErrNotConnected
	}
	if c.ExpiresAt.IsZero() || o.now().Add(refreshAhead).Before(c.ExpiresAt) {
		return c, nil
	}
	return o.refresh(ctx, srv, p, c.RefreshedAt)
}

// refresh refreshes p's tokens for srv unless they were refreshed since
// seen (another call did it meanwhile): one refresh at a time per user
// and server. A refused refresh token removes the connection
// (ErrNotConnected: the user must connect again).
func (o *OAuth) refresh(ctx context.Context, srv *Server, p agent.Principal, seen time.Time) (Connection, error) {
	k := connKey{srv.Name, p}
	o.mu.Lock()
	if o.locks == nil {
		o.locks = map[connKey]*sync.Mutex{}
	}
	l := o.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		o.locks[k] = l
	}
	o.mu.Unlock()
	l.Lock()
	defer l.Unlock()

	c, ok, err := o.Store.Connection(ctx, srv.Name, p)
	switch {
	case err != nil:
		return Connection{}, err
	case !ok:
		return Connection{}, ErrNotConnected
	case !c.RefreshedAt.Equal(seen):
		return c, nil
	}
	hp, err := hostPortOf(c.TokenURL)
	if err != nil {
		return Connection{}, err
	}
	rt, err := o.Tokens.Token(ctx, p, RefreshTokenName(srv.Name), hp)
	if errors.Is(err, egress.ErrNoCredential) {
		o.forget(ctx, srv, p)
		return Connection{}, ErrNotConnected
	}
	if err != nil {
		return Connection{}, err
	}
	secret, err := o.clientSecret(ctx, srv, c.Issuer, c.ClientID)
	if err != nil {
		return Connection{}, err
	}
	cfg := o.config(c.ClientID, secret, "", c.TokenURL)
	// The refresh names the resource too (RFC 8707 §2.2), which x/oauth2's
	// refresh does not send: the flow's transport adds it.
	rctx := context.WithValue(o.clientCtx(ctx, srv, p), refreshResourceKey{}, c.Resource)
	tok, err := cfg.TokenSource(rctx, &oauth2.Token{RefreshToken: rt, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		isRE := errors.As(err, &re)
		switch {
		case isRE && (re.ErrorCode == "invalid_grant" || re.ErrorCode == "unauthorized_client" || re.ErrorCode == "invalid_client"):
			o.Logger.Info().Str("mcp_server", srv.Name).Str("principal", p.String()).Str("reason", tokenErr(err)).Msg("oauth: refresh token refused; the user must connect again")
			o.forget(ctx, srv, p)
			return Connection{}, ErrNotConnected
		case ctx.Err() == nil && (!isRE || re.Response == nil || re.Response.StatusCode >= 500 || re.Response.StatusCode == http.StatusTooManyRequests):
			// The provider is down or busy: the tokens stay, a later
			// call tries again.
			o.Logger.Warn().Str("mcp_server", srv.Name).Str("principal", p.String()).Str("reason", tokenErr(err)).Msg("oauth: the token could not be refreshed now; the tokens are kept")
			detail := tokenErr(err)
			if isRE && re.Response != nil {
				detail = "HTTP " + strconv.Itoa(re.Response.StatusCode)
				if re.ErrorCode != "" {
					detail += ": " + clip(oneLine(re.ErrorCode), 60)
				}
			}
			return Connection{}, &RefreshError{Server: srv.Name, Detail: detail}
		}
		return Connection{}, fmt.Errorf("mcp: refresh the token of %s: %s", srv.Name, tokenErr(err))
	}
	c.RefreshedAt = o.now()
	if !c.RefreshedAt.After(seen) {
		c.RefreshedAt = seen.Add(time.Millisecond)
	}
	if err := o.save(ctx, srv, c, tok); err != nil {
		return Connection{}, fmt.Errorf("mcp: store the refreshed token of %s: %w", srv.Name, err)
	}
	c, _, err = o.Store.Connection(ctx, srv.Name, p)
	return c, err
}

// forget deletes a connection whose tokens are no longer valid.
func (o *OAuth) forget(ctx context.Context, srv *Server, p agent.Principal) {
	_ = o.Tokens.DeleteTokens(ctx, p, srv.Name)
	_ = o.Store.DeleteConnection(ctx, srv.Name, p)
}

// Wait returns when p is connected to server, or ctx ends.
func (o *OAuth) Wait(ctx context.Context, server string, p agent.Principal) error {
	k := connKey{server, p}
	ch := make(chan struct{}, 1)
	o.mu.Lock()
	if o.waiters == nil {
		o.waiters = map[connKey][]chan struct{}{}
	}
	o.waiters[k] = append(o.waiters[k], ch)
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		ws := o.waiters[k]
		for i, w := range ws {
			if w == ch {
				o.waiters[k] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(o.waiters[k]) == 0 {
			delete(o.waiters, k)
		}
	}()
	// A connection made meanwhile (or by another process) counts too.
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		if _, ok, err := o.Store.Connection(ctx, server, p); err == nil && ok {
			return nil
		}
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
}

func (o *OAuth) wake(k connKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ch := range o.waiters[k] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (o *OAuth) config(clientID, secret, authURL, tokenURL string) *oauth2.Config {
	style := oauth2.AuthStyleInParams
	if secret != "" {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: o.redirectURI(),
		Endpoint: oauth2.Endpoint{AuthURL: authURL, TokenURL: tokenURL, AuthStyle: style}}
}

// clientCtx carries the HTTP client x/oauth2 uses: through the broker.
func (o *OAuth) clientCtx(ctx context.Context, srv *Server, p agent.Principal) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, o.httpClient(srv, p, true))
}

// httpClient makes Talon's own requests of the flow for srv through the
// broker: each request may go to srv's origin (where the broker may let a
// private address through, as for the server itself) or to any public
// https host; it follows no redirect and reads at most maxMetadataBytes.
func (o *OAuth) httpClient(srv *Server, p agent.Principal, post bool) *http.Client {
	return &http.Client{
		Transport: &flowTransport{o: o, srv: srv, p: p},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Timeout: 30 * time.Second,
	}
}

type flowTransport struct {
	o   *OAuth
	srv *Server
	p   agent.Principal
}

// clientAuthName is the credential the flow's broker injects for the
// client's own authentication at the token and revocation endpoints (see
// OAuth.Credential).
const clientAuthName = "oauth-client"

type clientAuthKey struct{}

// clientAuth is a client's Authorization header, injected at the edge.
type clientAuth string

func (c clientAuth) Apply(h http.Header, _ *url.URL) { h.Set("Authorization", string(c)) }
func (c clientAuth) Secrets() [][]byte {
	out := [][]byte{[]byte(c)}
	if s, ok := strings.CutPrefix(string(c), "Basic "); ok {
		if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
			if _, secret, ok := strings.Cut(string(dec), ":"); ok && len(secret) >= 8 {
				out = append(out, []byte(secret))
			}
		}
	}
	return out
}

// Credential makes OAuth the credential source of its own broker
// (OAuth.Egress): the only credential it gives is the client
// authentication of the request being sent (clientAuthName), which the
// flow's transport took off the request, so that the broker, which
// refuses an Authorization header set by its caller, injects it itself.
func (o *OAuth) Credential(ctx context.Context, c egress.Caller, name, _ string) (egress.Credential, error) {
	v, ok := ctx.Value(clientAuthKey{}).(string)
	if name != clientAuthName || !ok || v == "" || !strings.HasPrefix(c.Tool, "mcp-oauth:") {
		return nil, fmt.Errorf("mcp: %w", egress.ErrNoCredential)
	}
	return clientAuth(v), nil
}

// refreshResourceKey carries the resource a refresh request names.
type refreshResourceKey struct{}

// withResource adds resource to a refresh_token grant request that lacks
// it (x/oauth2 sends only grant_type and refresh_token, and the client's
// authentication).
func withResource(r *http.Request, resource string) (*http.Request, error) {
	if r.Body == nil {
		return r, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > 64<<10 {
		return nil, errors.New("mcp: refresh request too large")
	}
	v, err := url.ParseQuery(string(body))
	if err == nil && v.Get("grant_type") == "refresh_token" && !v.Has("resource") {
		v.Set("resource", resource)
		body = []byte(v.Encode())
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return r, nil
}

func (t *flowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	scheme, origin, err := t.srv.origin()
	if err != nil {
		return nil, err
	}
	if res, _ := r.Context().Value(refreshResourceKey{}).(string); res != "" && r.Method == http.MethodPost {
		if r, err = withResource(r, res); err != nil {
			return nil, err
		}
	}
	cred := ""
	if a := r.Header.Get("Authorization"); a != "" {
		r = r.Clone(context.WithValue(r.Context(), clientAuthKey{}, a))
		r.Header.Del("Authorization")
		cred = clientAuthName
	}
	// Any public https host; the server's own origin named exactly, so
	// that the broker's private ranges apply to it as to the server.
	rule := egress.Rule{Scheme: "https", Host: "*", Methods: []string{"GET", "POST"}}
	if p := r.URL.Port(); p != "" && p != "443" {
		rule.Host = "*:" + p
	}
	if hp, err := hostPortOf(r.URL.String()); err == nil && hp == origin && r.URL.Scheme == scheme {
		rule = egress.Rule{Scheme: scheme, Host: origin, Methods: []string{"GET", "POST"}}
	}
	pol := &egress.Policy{Allow: []egress.Rule{rule}, MaxRequestBytes: 64 << 10, MaxResponseBytes: maxMetadataBytes, Timeout: 30 * time.Second}
	if cred != "" {
		pol.Credentials = []string{cred}
	}
	return t.o.Egress.RoundTripper(egress.Caller{Tool: "mcp-oauth:" + t.srv.Name, Principal: t.p, Policy: pol}, cred).RoundTrip(r)
}

// hostPortOf is u's host and port (always present), as the vault binds
// entries.
func hostPortOf(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return "", fmt.Errorf("mcp: %q is not an absolute URL", clip(u, 200))
	}
	host := strings.ToLower(strings.TrimSuffix(pu.Hostname(), "."))
	port := pu.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[pu.Scheme]
	}
	return net.JoinHostPort(host, port), nil
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// checkEndpoint refuses a URL an authorization server names that is not
// https (or http on a loopback address, as for servers), or carries user
// info or a fragment.
func checkEndpoint(name, u string) error {
	pu, err := url.Parse(u)
	if err != nil || !pu.IsAbs() || pu.Host == "" {
		return fmt.Errorf("%s %q is not an absolute URL", name, clip(oneLine(u), 200))
	}
	if pu.User != nil || pu.Fragment != "" {
		return fmt.Errorf("%s may not carry user info or a fragment", name)
	}
	switch pu.Scheme {
	case "https":
		return nil
	case "http":
		host := pu.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("%s %q must be https", name, clip(oneLine(u), 200))
}

// discover finds srv's authorization server: the protected resource
// metadata named by the 401's WWW-Authenticate resource_metadata, else at
// the well-known URL, then the authorization server's metadata (RFC 8414,
// then OpenID discovery). Results are kept for 10 minutes.
func (o *OAuth) discover(ctx context.Context, srv *Server) (*authMeta, error) {
	o.mu.Lock()
	if c, ok := o.meta[srv.Name]; ok && o.now().Sub(c.at) < 10*time.Minute {
		o.mu.Unlock()
		return c.m, nil
	}
	o.mu.Unlock()
	m, err := o.discoverNow(ctx, srv)
	if err != nil {
		return nil, fmt.Errorf("mcp: discover the authorization server of %s: %w", srv.Name, err)
	}
	o.mu.Lock()
	if o.meta == nil {
		o.meta = map[string]cachedMeta{}
	}
	o.meta[srv.Name] = cachedMeta{m: m, at: o.now()}
	o.mu.Unlock()
	return m, nil
}

// Discovery is what `talon doctor` shows of a server's authorization.
type Discovery struct {
	Issuer, AuthURL, TokenURL, RevokeURL, RegisterURL string
	// Registration says whether the server offers dynamic client
	// registration.
	Registration bool
}

// Discover runs discovery for srv now, for diagnostics.
func (o *OAuth) Discover(ctx context.Context, srv *Server) (Discovery, error) {
	m, err := o.discoverNow(ctx, srv)
	if err != nil {
		return Discovery{}, err
	}
	return Discovery{Issuer: m.Issuer, AuthURL: m.AuthURL, TokenURL: m.TokenURL, RevokeURL: m.RevokeURL, RegisterURL: m.RegisterURL, Registration: m.RegisterURL != ""}, nil
}

// Probe sends srv an unauthenticated initialize request through the
// flow's broker and returns the HTTP status, for diagnostics.
func (o *OAuth) Probe(ctx context.Context, srv *Server) (int, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"talon","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := o.httpClient(srv, agent.Principal{}, false).Do(req)
	if err != nil {
		return 0, fmt.Errorf("reach %s: %s", srv.URL, tokenErr(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func (o *OAuth) discoverNow(ctx context.Context, srv *Server) (*authMeta, error) {
	hc := o.httpClient(srv, agent.Principal{}, false)
	resource := srv.URL
	// The 401 of an unauthenticated request names the metadata.
	var prmURLs []string
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"talon","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach %s: %s", srv.URL, tokenErr(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		for _, h := range resp.Header.Values("Www-Authenticate") {
			if u := resourceMetadata(h); u != "" {
				prmURLs = append(prmURLs, u)
			}
		}
	}
	su, _ := url.Parse(srv.URL)
	base := su.Scheme + "://" + su.Host
	if p := strings.TrimRight(su.Path, "/"); p != "" {
		prmURLs = append(prmURLs, base+"/.well-known/oauth-protected-resource"+p)
	}
	prmURLs = append(prmURLs, base+"/.well-known/oauth-protected-resource")

	m := &authMeta{}
	var issuer string
	for _, u := range prmURLs {
		if err := checkEndpoint("resource_metadata", u); err != nil {
			return nil, err
		}
		var prm struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			ScopesSupported      []string `json:"scopes_supported"`
		}
		found, err := getJSON(ctx, hc, u, &prm)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		if prm.Resource == "" || strings.TrimRight(prm.Resource, "/") != strings.TrimRight(resource, "/") &&
			strings.TrimRight(prm.Resource, "/") != base {
			return nil, fmt.Errorf("the protected resource metadata names the resource %q, not %q", clip(oneLine(prm.Resource), 200), resource)
		}
		if len(prm.AuthorizationServers) == 0 {
			return nil, errors.New("the protected resource metadata names no authorization server")
		}
		m.Resource = prm.Resource
		m.Scopes = prm.ScopesSupported
		issuer = prm.AuthorizationServers[0]
		break
	}
	if issuer == "" {
		// Servers of the 2025-03-26 specification: the server's origin is
		// the authorization server.
		issuer = base
		m.Resource = resource
	}
	if err := checkEndpoint("authorization server", issuer); err != nil {
		return nil, err
	}
	iu, _ := url.Parse(issuer)
	ibase := iu.Scheme + "://" + iu.Host
	ipath := strings.TrimRight(iu.Path, "/")
	candidates := []string{ibase + "/.well-known/oauth-authorization-server" + ipath, ibase + "/.well-known/openid-configuration" + ipath}
	if ipath != "" {
		candidates = append(candidates, ibase+ipath+"/.well-known/openid-configuration")
	}
	var asm struct {
		Issuer                            string   `json:"issuer"`
		AuthorizationEndpoint             string   `json:"authorization_endpoint"`
		TokenEndpoint                     string   `json:"token_endpoint"`
		RegistrationEndpoint              string   `json:"registration_endpoint"`
		RevocationEndpoint                string   `json:"revocation_endpoint"`
		ScopesSupported                   []string `json:"scopes_supported"`
		CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
		TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	}
	found := false
	for _, u := range candidates {
		ok, err := getJSON(ctx, hc, u, &asm)
		if err != nil {
			return nil, err
		}
		if ok {
			found = true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("the authorization server %s publishes no metadata (RFC 8414 or OpenID discovery)", clip(issuer, 200))
	}
	if strings.TrimRight(asm.Issuer, "/") != strings.TrimRight(issuer, "/") {
		return nil, fmt.Errorf("the authorization server's metadata names the issuer %q, not %q", clip(oneLine(asm.Issuer), 200), issuer)
	}
	s256 := false
	for _, mth := range asm.CodeChallengeMethodsSupported {
		s256 = s256 || mth == "S256"
	}
	if !s256 {
		return nil, fmt.Errorf("the authorization server %s does not offer PKCE with S256", clip(issuer, 200))
	}
	for _, e := range []struct{ name, u string }{{"authorization_endpoint", asm.AuthorizationEndpoint}, {"token_endpoint", asm.TokenEndpoint}} {
		if err := checkEndpoint(e.name, e.u); err != nil {
			return nil, err
		}
	}
	for _, e := range []struct{ name, u string }{{"registration_endpoint", asm.RegistrationEndpoint}, {"revocation_endpoint", asm.RevocationEndpoint}} {
		if e.u == "" {
			continue
		}
		if err := checkEndpoint(e.name, e.u); err != nil {
			return nil, err
		}
	}
	m.Issuer, m.AuthURL, m.TokenURL = issuer, asm.AuthorizationEndpoint, asm.TokenEndpoint
	m.RegisterURL, m.RevokeURL, m.AuthMethods = asm.RegistrationEndpoint, asm.RevocationEndpoint, asm.TokenEndpointAuthMethodsSupported
	if len(m.Scopes) == 0 {
		m.Scopes = nil // asking for every scope the server knows is too much
	}
	return m, nil
}

// getJSON GETs u into v; found is false on a 404 or 405 (try the next
// URL).
func getJSON(ctx context.Context, hc *http.Client, u string, v any) (found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("fetch %s: %s", clip(u, 200), tokenErr(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
		resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusBadRequest:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("fetch %s: HTTP %d", clip(u, 200), resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return false, fmt.Errorf("fetch %s: not JSON", clip(u, 200))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return false, fmt.Errorf("fetch %s: %s", clip(u, 200), tokenErr(err))
	}
	if len(data) > maxMetadataBytes {
		return false, fmt.Errorf("fetch %s: over %d bytes", clip(u, 200), maxMetadataBytes)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("fetch %s: invalid JSON", clip(u, 200))
	}
	return true, nil
}

// client returns Talon's client at m's authorization server: the one
// registered before, else a new registration where offered, else the
// operator's.
func (o *OAuth) client(ctx context.Context, srv *Server, m *authMeta) (RegisteredClient, error) {
	if srv.OAuth != nil && srv.OAuth.ClientID != "" {
		return RegisteredClient{Issuer: m.Issuer, ClientID: srv.OAuth.ClientID, ClientSecret: srv.OAuth.ClientSecret}, nil
	}
	if c, ok, err := o.Store.Client(ctx, srv.Name, m.Issuer); err != nil || ok {
		return c, err
	}
	if m.RegisterURL == "" {
		return RegisteredClient{}, fmt.Errorf("mcp: the authorization server of %s offers no dynamic client registration: register a client there with the redirect URI %s and set mcp.servers[%s].oauth.client_id (and client_secret)", srv.Name, o.redirectURI(), srv.Name)
	}
	reg := map[string]any{
		"client_name":                "Talon",
		"redirect_uris":              []string{o.redirectURI()},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
	data, _ := json.Marshal(reg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.RegisterURL, bytes.NewReader(data))
	if err != nil {
		return RegisteredClient{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := o.httpClient(srv, agent.Principal{}, true).Do(req)
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("mcp: register a client for %s: %s", srv.Name, tokenErr(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil || len(body) > maxMetadataBytes {
		return RegisteredClient{}, fmt.Errorf("mcp: register a client for %s: the answer is unreadable or too large", srv.Name)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return RegisteredClient{}, fmt.Errorf("mcp: register a client for %s: HTTP %d", srv.Name, resp.StatusCode)
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.ClientID == "" || len(out.ClientID) > 512 || len(out.ClientSecret) > 512 {
		return RegisteredClient{}, fmt.Errorf("mcp: register a client for %s: the answer has no usable client_id", srv.Name)
	}
	c := RegisteredClient{Issuer: m.Issuer, ClientID: out.ClientID, ClientSecret: out.ClientSecret}
	if err := o.Store.PutClient(ctx, srv.Name, c); err != nil {
		return RegisteredClient{}, err
	}
	return c, nil
}

// clientSecret is the secret of the client clientID at issuer for srv: the
// operator's, or the registered one's.
func (o *OAuth) clientSecret(ctx context.Context, srv *Server, issuer, clientID string) (string, error) {
	if srv.OAuth != nil && srv.OAuth.ClientID == clientID {
		return srv.OAuth.ClientSecret, nil
	}
	c, ok, err := o.Store.Client(ctx, srv.Name, issuer)
	if err != nil {
		return "", err
	}
	if ok && c.ClientID == clientID {
		return c.ClientSecret, nil
	}
	return "", nil
}

// resourceMetadata is the resource_metadata parameter of a Bearer
// challenge in a WWW-Authenticate value (RFC 9728 section 5.1), "" when
// there is none. It reads the value as RFC 9110 challenges: a scheme, then
// name=value parameters (token or quoted string, with backslash escapes)
// separated by commas; a token without "=" starts the next challenge.
func resourceMetadata(h string) string {
	if len(h) > 8<<10 {
		return ""
	}
	i, scheme := 0, ""
	skip := func() {
		for i < len(h) && (h[i] == ' ' || h[i] == '\t' || h[i] == ',') {
			i++
		}
	}
	token := func() string {
		start := i
		for i < len(h) && h[i] != ' ' && h[i] != '\t' && h[i] != ',' && h[i] != '=' && h[i] != '"' {
			i++
		}
		return h[start:i]
	}
	for {
		skip()
		if i >= len(h) {
			return ""
		}
		name := token()
		if name == "" {
			i++ // a stray character: step over it
			continue
		}
		j := i
		for j < len(h) && (h[j] == ' ' || h[j] == '\t') {
			j++
		}
		if j >= len(h) || h[j] != '=' {
			scheme = strings.ToLower(name) // the next challenge
			continue
		}
		i = j + 1
		for i < len(h) && (h[i] == ' ' || h[i] == '\t') {
			i++
		}
		var value string
		if i < len(h) && h[i] == '"' {
			var b strings.Builder
			for i++; i < len(h) && h[i] != '"'; i++ {
				if h[i] == '\\' && i+1 < len(h) {
					i++
				}
				b.WriteByte(h[i])
			}
			i++
			value = b.String()
		} else {
			value = token()
		}
		if scheme == "bearer" && strings.EqualFold(name, "resource_metadata") {
			return value
		}
	}
}
