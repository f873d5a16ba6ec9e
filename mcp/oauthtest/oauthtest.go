// Package oauthtest is a fake OAuth authorization server in front of an
// MCP server built with the SDK's server side, both on one loopback TLS
// server, for tests of the MCP authorization flow: protected resource
// metadata (RFC 9728), authorization server metadata (RFC 8414), dynamic
// client registration (RFC 7591, or none), authorization codes bound to
// a PKCE S256 challenge and a resource (RFC 8707), refresh with rotation
// (naming the resource too), a token endpoint that fails on demand
// and revocation (RFC 7009). Only tests import it.
package oauthtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options shape the fake.
type Options struct {
	// NoRegistration leaves out dynamic client registration; ClientID and
	// ClientSecret are then the one pre-registered client.
	NoRegistration         bool
	ClientID, ClientSecret string
	// ExpiresIn is the access tokens' lifetime (default an hour).
	ExpiresIn time.Duration
	// TokenEndpoint, RegistrationEndpoint replace the advertised URLs (a
	// hostile metadata document).
	TokenEndpoint string
	// AuthorizationServer replaces the issuer the resource metadata
	// names.
	AuthorizationServer string
	// HugeToken makes the token endpoint answer this many bytes.
	HugeToken int
}

// Server is the fake: URL+"/mcp" is the MCP endpoint.
type Server struct {
	*httptest.Server
	opts Options

	mu        sync.Mutex
	clients   map[string]string    // client id → redirect uri
	codes     map[string]codeGrant // guarded by mu
	access    map[string]string    // access token → user (the code's "login")
	refresh   map[string]string    // refresh token → user
	Registers int                  // registrations, guarded by mu
	Refreshes int                  // refresh grants answered, guarded by mu
	Revoked   []string             // tokens revoked, guarded by mu
	Failures  []string             // why token requests were refused, guarded by mu
	Auth      []string             // Authorization headers the MCP endpoint saw, guarded by mu
	Login     string               // the account the next authorization signs in, guarded by mu
	// refreshStatus, when set, is the HTTP status every refresh grant
	// answers (a provider that is down), its tokens untouched. Guarded by
	// mu.
	refreshStatus int
	issued        []string // every token issued, guarded by mu
	n             int
}

type codeGrant struct {
	client, redirect, challenge, resource, user string
}

// New starts the fake.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{opts: opts, clients: map[string]string{}, codes: map[string]codeGrant{}, access: map[string]string{},
		refresh: map[string]string{}, Login: "alice"}
	if opts.ExpiresIn == 0 {
		s.opts.ExpiresIn = time.Hour
	}
	m := sdk.NewServer(&sdk.Implementation{Name: "fake-oauth", Version: "1"}, nil)
	type searchIn struct {
		Query string `json:"query"`
	}
	sdk.AddTool(m, &sdk.Tool{Name: "search", Description: "Search issues.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, in searchIn) (*sdk.CallToolResult, any, error) {
			user := s.user(req.Extra.Header.Get("Authorization"))
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "found as " + user + ": " + in.Query}}}, nil, nil
		})
	sdk.AddTool(m, &sdk.Tool{Name: "create_issue", Description: "Create an issue."},
		func(ctx context.Context, req *sdk.CallToolRequest, in struct {
			Title string `json:"title"`
		}) (*sdk.CallToolResult, any, error) {
			user := s.user(req.Extra.Header.Get("Authorization"))
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "created ISS-1 by " + user + ": " + in.Title}}}, nil, nil
		})
	sdk.AddTool(m, &sdk.Tool{Name: "echo.headers", Description: "Echo the request's headers.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, any, error) {
			var lines []string
			for k, v := range req.Extra.Header {
				lines = append(lines, k+": "+strings.Join(v, ","))
			}
			sort.Strings(lines)
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strings.Join(lines, "\n")}}}, nil, nil
		})
	mcpH := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return m }, nil)

	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		s.mu.Lock()
		s.Auth = append(s.Auth, auth)
		_, ok := s.access[strings.TrimPrefix(auth, "Bearer ")]
		s.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", resource_metadata="`+s.URL+`/.well-known/oauth-protected-resource/mcp"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mcpH.ServeHTTP(w, r)
	})
	mux.HandleFunc("/.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, r *http.Request) {
		as := s.URL
		if s.opts.AuthorizationServer != "" {
			as = s.opts.AuthorizationServer
		}
		writeJSON(w, http.StatusOK, map[string]any{"resource": s.URL + "/mcp", "authorization_servers": []string{as}})
	})
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		meta := map[string]any{
			"issuer": s.URL, "authorization_endpoint": s.URL + "/authorize", "token_endpoint": s.URL + "/token",
			"revocation_endpoint": s.URL + "/revoke", "code_challenge_methods_supported": []string{"S256"},
			"response_types_supported": []string{"code"}, "grant_types_supported": []string{"authorization_code", "refresh_token"},
		}
		if !s.opts.NoRegistration {
			meta["registration_endpoint"] = s.URL + "/register"
		}
		if s.opts.TokenEndpoint != "" {
			meta["token_endpoint"] = s.opts.TokenEndpoint
		}
		writeJSON(w, http.StatusOK, meta)
	})
	mux.HandleFunc("/register", s.register)
	mux.HandleFunc("/authorize", s.authorize)
	mux.HandleFunc("/token", s.token)
	mux.HandleFunc("/revoke", s.revoke)
	s.Server = httptest.NewTLSServer(mux)
	if opts.NoRegistration {
		s.clients[opts.ClientID] = ""
	}
	t.Cleanup(s.Close)
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) token32() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	s.n++
	return fmt.Sprintf("tok%d-%s", s.n, base64.RawURLEncoding.EncodeToString(b))
}

func (s *Server) user(auth string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.access[strings.TrimPrefix(auth, "Bearer ")]
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if s.opts.NoRegistration || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var req struct {
		RedirectURIs []string `json:"redirect_uris"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.RedirectURIs) != 1 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri"})
		return
	}
	s.mu.Lock()
	s.Registers++
	id := fmt.Sprintf("client-%d", s.Registers)
	s.clients[id] = req.RedirectURIs[0]
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"client_id": id, "redirect_uris": req.RedirectURIs})
}

// authorize signs in s.Login at once and redirects back with a code, as a
// provider does after the user agreed.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	redirect, ok := s.clients[q.Get("client_id")]
	switch {
	case !ok:
		http.Error(w, "unknown client", http.StatusBadRequest)
		return
	case redirect != "" && q.Get("redirect_uri") != redirect:
		http.Error(w, "redirect_uri mismatch", http.StatusBadRequest)
		return
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE S256 required", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code":
		http.Error(w, "response_type", http.StatusBadRequest)
		return
	}
	code := s.token32()
	s.codes[code] = codeGrant{client: q.Get("client_id"), redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"),
		resource: q.Get("resource"), user: s.Login}
	u, _ := url.Parse(q.Get("redirect_uri"))
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Server) fail(w http.ResponseWriter, why string) {
	s.Failures = append(s.Failures, why)
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": why})
}

func (s *Server) clientOf(r *http.Request) string {
	if id, secret, ok := r.BasicAuth(); ok {
		if id == s.opts.ClientID && secret == s.opts.ClientSecret {
			return id
		}
		return ""
	}
	id := r.PostForm.Get("client_id")
	if s.opts.ClientSecret != "" && id == s.opts.ClientID {
		return "" // a confidential client must authenticate
	}
	return id
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if s.opts.HugeToken > 0 {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"`))
		chunk := []byte(strings.Repeat("A", 64<<10))
		for n := 0; n < s.opts.HugeToken; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		return
	}
	_ = r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	client := s.clientOf(r)
	if _, ok := s.clients[client]; !ok {
		s.Failures = append(s.Failures, "unknown client")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	var user string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		g, ok := s.codes[r.PostForm.Get("code")]
		delete(s.codes, r.PostForm.Get("code"))
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		switch {
		case !ok:
			s.fail(w, "unknown or used code")
			return
		case g.client != client || g.redirect != r.PostForm.Get("redirect_uri"):
			s.fail(w, "code of another client or redirect")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
			s.fail(w, "PKCE verifier does not match")
			return
		case g.resource != s.URL+"/mcp" || r.PostForm.Get("resource") != g.resource:
			s.fail(w, "resource missing or wrong")
			return
		}
		user = g.user
	case "refresh_token":
		if s.refreshStatus != 0 {
			writeJSON(w, s.refreshStatus, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		rt := r.PostForm.Get("refresh_token")
		u, ok := s.refresh[rt]
		switch {
		case !ok:
			s.fail(w, "unknown or rotated refresh token")
			return
		case r.PostForm.Get("resource") != s.URL+"/mcp":
			// RFC 8707: a refresh names the resource as the grant did.
			s.fail(w, "resource missing or wrong on refresh")
			return
		}
		delete(s.refresh, rt) // rotation: a refresh token is used once
		s.Refreshes++
		user = u
	default:
		s.fail(w, "grant_type")
		return
	}
	at, rt := s.token32(), s.token32()
	s.access[at], s.refresh[rt] = user, user
	s.issued = append(s.issued, at, rt)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": at, "token_type": "Bearer", "refresh_token": rt,
		"expires_in": int(s.opts.ExpiresIn / time.Second)})
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := r.PostForm.Get("token")
	s.Revoked = append(s.Revoked, tok)
	if u, ok := s.refresh[tok]; ok {
		delete(s.refresh, tok)
		for a, au := range s.access {
			if au == u {
				delete(s.access, a)
			}
		}
	}
	delete(s.access, tok)
	w.WriteHeader(http.StatusOK)
}

// Expire makes every access token invalid (as a provider that revoked them
// or restarted would), leaving the refresh tokens.
func (s *Server) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.access)
}

// FailRefresh makes every refresh grant answer status (a 5xx: the
// provider is down) without touching any token; 0 answers them again.
func (s *Server) FailRefresh(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshStatus = status
}

// DropGrants forgets every access and refresh token (a user who revoked
// the app at the provider): a refresh is then refused with invalid_grant.
func (s *Server) DropGrants() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.access)
	clear(s.refresh)
}

// Tokens returns every access and refresh token the fake issued and still
// honours.
func (s *Server) Tokens() (access, refresh []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.access {
		access = append(access, a)
	}
	for r := range s.refresh {
		refresh = append(refresh, r)
	}
	return access, refresh
}

// Issued returns every access and refresh token ever issued.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Snapshot returns what the fake counted: registrations, refresh grants,
// revoked tokens and why token requests were refused.
func (s *Server) Snapshot() (registers, refreshes int, revoked, failures []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Registers, s.Refreshes, append([]string(nil), s.Revoked...), append([]string(nil), s.Failures...)
}

// SetLogin sets the account the next authorization signs in.
func (s *Server) SetLogin(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Login = user
}
