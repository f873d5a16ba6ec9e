package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// Store is what the console reads and writes in the database.
type Store interface {
	Usage(ctx context.Context, from, to time.Time) ([]store.UsageRow, error)
	TokensPerDay(ctx context.Context, from time.Time) ([]store.TokenBucket, error)
	TurnsPer(ctx context.Context, from time.Time, bucket time.Duration) ([]store.TurnBucket, error)
	TurnDurations(ctx context.Context, from time.Time) ([]time.Duration, error)
	AddConsoleAction(ctx context.Context, a store.ConsoleAction) error
	ConsoleActions(ctx context.Context, limit int) ([]store.ConsoleAction, error)
	AddConsoleSession(ctx context.Context, sess store.ConsoleSession, max int) error
	ConsoleSession(ctx context.Context, hash [32]byte, now time.Time) (store.ConsoleSession, error)
	DeleteConsoleSession(ctx context.Context, hash [32]byte) error
	AddOIDCState(ctx context.Context, hash [32]byte, nonce string, expires time.Time, max int) error
	TakeOIDCState(ctx context.Context, hash [32]byte, now time.Time) (string, error)
	Conversations(ctx context.Context, f store.ConversationFilter) ([]store.Conversation, error)
	Transcript(ctx context.Context, s agent.SessionID, limit int) (store.Conversation, []agent.StoredMessage, []store.Approval, error)
	UsersByUsage(ctx context.Context, month, today time.Time, match string, limit int) ([]store.UserUsage, int, error)
	ToolStats(ctx context.Context, since time.Time) ([]store.ToolStat, error)
	DeniedPrincipals(ctx context.Context) ([]store.DeniedPrincipal, error)
	VaultAudit(ctx context.Context, f store.VaultAuditFilter, limit int) ([]vault.AuditEvent, error)
	SetDenied(ctx context.Context, p agent.Principal, denied bool, a store.ConsoleAction) (bool, error)
}

// Credentials is the vault service the gateway and the CLI use: entries
// are listed without their values and removed through it. (Its audit log
// is read through Store.VaultAudit, filtered in the database.)
type Credentials interface {
	List(ctx context.Context, user string) ([]vault.SealedEntry, error)
	Remove(ctx context.Context, user, name string) error
}

var _ Store = (*store.DB)(nil)

// Price is what a model costs, in US dollars per million tokens.
type Price struct{ Input, Output float64 }

// Channel is one platform connection and its state, for the Overview.
type Channel struct{ Name, State string }

// Prefix is where the console is mounted.
const Prefix = "/console/"

// Bounds of sign-in.
const (
	// MinTokenLen is the shortest admin token accepted.
	MinTokenLen = 16
	// signInBurst sign-in attempts are allowed per client address per
	// signInWindow; more are refused with 429 until the window ends.
	signInBurst  = 5
	signInWindow = time.Minute
	maxClients   = 10_000
	maxSessions  = 1000
)

const (
	sessionCookie = "talon_console"
	preCookie     = "talon_console_pre"
)

// Server serves the console. Set the fields, then call Handler.
type Server struct {
	// Store is required.
	Store Store
	// Credentials is the vault service; nil when no vault is configured.
	Credentials Credentials
	// Token is the admin token; at least MinTokenLen bytes, or empty to
	// sign in only with Slack (SlackOIDC).
	Token string
	// SlackOIDC, when set, offers "Sign in with Slack" to its Admins.
	SlackOIDC *SlackOIDC
	// Secure marks cookies Secure (set it when people reach the console
	// over https).
	Secure bool
	// SessionTTL is how long a sign-in lasts; zero means 12 hours.
	SessionTTL time.Duration
	// Prices per model estimate cost; a model not listed costs 0.
	Prices map[string]Price
	// Tools, when set, lists the sandboxed tools; MCP, when set, the MCP
	// servers and their tools as last seen.
	Tools func() []Tool
	MCP   func(ctx context.Context) ([]MCPServer, error)
	// ApproveMCP approves the changed tools of a configured MCP server as
	// talon mcp approve does, returning how many; nil hides the action.
	ApproveMCP func(ctx context.Context, server string) (int, error)
	// Budgets are shown against each user's figures on the Users page.
	Budgets Budgets
	// Channels, when set, lists the platform connections and their state.
	Channels func() []Channel
	// TrustedProxies are the addresses of the reverse proxies in front of
	// the console: a request from one of them is counted (sign-in limit)
	// and audited by the client address its X-Forwarded-For names (the
	// nearest one that is not itself a trusted proxy). Empty: the peer's.
	TrustedProxies []netip.Prefix
	// Log receives failures (with a reference shown to the operator);
	// zero value discards.
	Log zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	// sign-in attempts by client address; guarded by mu. (Sessions and
	// Slack sign-ins in progress are in the store.)
	attempts map[string]*attempt
	// usageMemo keeps what the Usage page derives from settled days.
	usageMemo usageMemo
}

// session is a signed-in admin's: who signed in ("admin" for the token, or
// a principal for Slack) and the CSRF token their forms carry.
type session struct {
	who  string
	csrf string
}

type attempt struct {
	start time.Time
	n     int
}

// stylesheet is the console's one stylesheet.
//
//go:embed style.css
var stylesheet []byte

// Handler validates s and returns the console's handler, to be mounted at
// Prefix.
func (s *Server) Handler() (http.Handler, error) {
	if s.Store == nil {
		return nil, errors.New("console: no store")
	}
	if len(s.Token) < MinTokenLen && (s.Token != "" || s.SlackOIDC == nil) {
		return nil, errors.New("console: the admin token (TALON_CONSOLE_TOKEN) must be at least 16 characters; generate one with: openssl rand -hex 32")
	}
	if s.SlackOIDC != nil {
		if err := s.SlackOIDC.init(); err != nil {
			return nil, err
		}
		s.SlackOIDC.verifier = s.SlackOIDC.verifierFor(s.Now)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.SessionTTL <= 0 {
		s.SessionTTL = 12 * time.Hour
	}
	s.attempts = map[string]*attempt{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(stylesheet)
	})
	mux.HandleFunc("GET /console/signin", s.signInPage)
	mux.HandleFunc("POST /console/signin", s.signIn)
	mux.Handle("POST /console/signout", s.auth(s.signOut))
	if s.SlackOIDC != nil {
		mux.HandleFunc("GET /console/oidc/start", s.oidcStart)
		mux.HandleFunc("GET /console/oidc/callback", s.oidcCallback)
	}
	mux.Handle("GET /console/{$}", s.auth(s.overview))
	mux.Handle("GET /console/usage", s.auth(s.usage))
	mux.Handle("GET /console/usage.csv", s.auth(s.usageCSV))
	mux.Handle("GET /console/conversations", s.auth(s.conversations))
	mux.Handle("GET /console/conversations/{id}", s.auth(s.transcript))
	mux.Handle("GET /console/credentials", s.auth(s.credentials))
	mux.Handle("GET /console/users", s.auth(s.users))
	mux.Handle("POST /console/users/access", s.auth(s.setAccess))
	mux.Handle("GET /console/tools", s.auth(s.tools))
	mux.Handle("POST /console/tools/approve", s.auth(s.approveMCP))
	mux.Handle("POST /console/credentials/delete", s.auth(s.deleteCredential))
	return headers(mux), nil
}

// csp allows the page's own stylesheet and nothing else: no script at all,
// no inline style, no framing, forms only back to the console.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

// auth serves next to a signed-in admin, sends others to the sign-in page,
// and refuses a POST whose csrf field is not the session's.
func (s *Server) auth(next func(w http.ResponseWriter, r *http.Request, sess *session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
				return
			}
			http.Error(w, "not signed in: sign in at /console/signin", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if !equal(formValue(w, r, "csrf"), sess.csrf) {
				http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		next(w, r, sess)
	})
}

// session is the request's session, or nil when its cookie names none
// (or one that expired). The store holds only the SHA-256 of the cookie
// value; the CSRF token is derived from the value (csrfFor), so it is not
// stored either.
func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	got, err := s.Store.ConsoleSession(r.Context(), sha256.Sum256([]byte(c.Value)), s.Now())
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.Log.Error().Err(err).Msg("console: read session")
		}
		return nil
	}
	return &session{who: got.Who, csrf: csrfFor(c.Value)}
}

// csrfFor is the CSRF token of the session whose cookie value is value: a
// hash of it under its own label, so neither the token nor the stored hash
// gives away the other or the value.
func csrfFor(value string) string {
	h := sha256.Sum256([]byte("talon console csrf\x00" + value))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	if s.session(r) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	wrong := r.URL.Query().Get("e") != ""
	s.render(w, http.StatusOK, page{Title: "Sign in"}, func(d *doc) {
		if s.SlackOIDC != nil {
			d.raw(`<div class="card signin">
<p>Console admins (<code>console.admins</code>) can sign in with their Slack account.</p>
<a class="button" href="/console/oidc/start">Sign in with Slack</a>
</div>
`)
		}
		if s.Token == "" {
			return
		}
		pre := randomToken()
		http.SetCookie(w, s.cookie(preCookie, pre, 10*time.Minute))
		d.raw(`<form method="post" action="/console/signin" class="card signin">
<p>Sign in with the admin token the gateway reads from <code>TALON_CONSOLE_TOKEN</code>.</p>
`)
		if wrong {
			d.raw(`<p class="error" role="alert">That token is not the admin token. Check <code>TALON_CONSOLE_TOKEN</code> where the gateway runs.</p>
`)
		}
		d.hiddenCSRF(pre)
		d.raw(`<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
`)
	})
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	remote := s.clientAddr(r)
	if !s.allowAttempt(remote) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many sign-in attempts from this address: wait a minute and try again", http.StatusTooManyRequests)
		return
	}
	pre, err := r.Cookie(preCookie)
	if err != nil || !equal(formValue(w, r, "csrf"), pre.Value) {
		http.Error(w, "missing or wrong CSRF token: open /console/signin again and sign in from there", http.StatusForbidden)
		return
	}
	if s.Token == "" || !equal(formValue(w, r, "token"), s.Token) {
		s.audit(r.Context(), "-", "sign-in refused", "", remote)
		http.Redirect(w, r, "/console/signin?e=1", http.StatusSeeOther)
		return
	}
	if !s.startSession(w, r, "admin") {
		return
	}
	http.SetCookie(w, s.cookie(preCookie, "", -1))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// startSession opens a session for who and sets its cookie; it answers the
// request itself and returns false when there are too many sessions.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, who string) bool {
	value := randomToken()
	now := s.Now()
	err := s.Store.AddConsoleSession(r.Context(), store.ConsoleSession{Hash: sha256.Sum256([]byte(value)), Who: who, Created: now, Expires: now.Add(s.SessionTTL)}, maxSessions)
	if errors.Is(err, store.ErrTooManySessions) {
		http.Error(w, "too many open console sessions: sign out elsewhere or wait for them to expire", http.StatusServiceUnavailable)
		return false
	}
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	s.audit(r.Context(), who, "sign-in", "", s.clientAddr(r))
	http.SetCookie(w, s.cookie(sessionCookie, value, s.SessionTTL))
	return true
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, sess *session) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := s.Store.DeleteConsoleSession(r.Context(), sha256.Sum256([]byte(c.Value))); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.audit(r.Context(), sess.who, "sign-out", "", s.clientAddr(r))
	http.SetCookie(w, s.cookie(sessionCookie, "", -1))
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}

// allowAttempt counts a sign-in attempt from remote and reports whether it
// is within signInBurst per signInWindow.
func (s *Server) allowAttempt(remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	a := s.attempts[remote]
	if a == nil || now.Sub(a.start) >= signInWindow {
		if len(s.attempts) >= maxClients {
			for k, old := range s.attempts {
				if now.Sub(old.start) >= signInWindow {
					delete(s.attempts, k)
				}
			}
			if len(s.attempts) >= maxClients {
				return false // a flood from many addresses: refuse until windows end
			}
		}
		a = &attempt{start: now}
		s.attempts[remote] = a
	}
	a.n++
	return a.n <= signInBurst
}

// cookie is a console cookie; maxAge < 0 deletes it.
func (s *Server) cookie(name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: Prefix, HttpOnly: true, Secure: s.Secure, SameSite: http.SameSiteStrictMode}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge / time.Second)
	}
	return c
}

func (s *Server) audit(ctx context.Context, actor, action, target, remote string) {
	err := s.Store.AddConsoleAction(context.WithoutCancel(ctx), store.ConsoleAction{At: s.Now(), Actor: actor, Action: action, Target: target, Remote: remote})
	if err != nil {
		s.Log.Error().Err(err).Str("action", action).Msg("console: audit log")
	}
}

// formValue reads a field of a POST's url-encoded body (at most 16 KiB; no
// multipart forms: the console's forms are small).
func formValue(w http.ResponseWriter, r *http.Request, name string) string {
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if err := r.ParseForm(); err != nil {
			return ""
		}
	}
	return r.PostForm.Get(name)
}

// clientAddr is the client's IP address: the peer's, or behind a trusted
// proxy the nearest address in X-Forwarded-For that is not a trusted
// proxy's (entries further left are whatever the client sent, and are not
// read).
func (s *Server) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // not written by a proxy we trust
		}
		addr = hop.Unmap()
		if !s.trusted(addr) {
			break
		}
	}
	return addr.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// equal compares in constant time (for equal lengths; hashing first makes
// the length of the secret irrelevant too).
func equal(got, want string) bool {
	if got == "" || want == "" {
		return false
	}
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
