package console

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/slack-go/slack"

	"github.com/talonhq/talon/store"
)

// SlackOIDC configures "Sign in with Slack" (OpenID Connect): a Slack user
// whose principal is in Admins gets a console session.
type SlackOIDC struct {
	// ClientID and ClientSecret are the Slack app's (Basic Information →
	// App Credentials). Both required.
	ClientID, ClientSecret string
	// RedirectURL is where Slack sends the browser back:
	// http.public_url + /console/oidc/callback, registered in the app's
	// OAuth & Permissions → Redirect URLs. Required.
	RedirectURL string
	// Admins are the principals (platform:workspace:user) who may sign in.
	Admins map[string]bool
	// Principal names the Slack user of an id_token from its team,
	// enterprise and user ids, as the Slack adapter names them; nil means
	// "slack:" + team + ":" + user.
	Principal func(team, enterprise, user string) string

	// Slack's endpoints; empty means Slack's own. Tests point them at a
	// fake on loopback.
	Issuer  string // https://slack.com
	AuthURL string // https://slack.com/openid/connect/authorize
	APIURL  string // https://slack.com/api/ (openid.connect.token)
	JWKSURL string // https://slack.com/openid/connect/keys
	// HTTPClient talks to Slack; nil means one with a 15 s timeout.
	HTTPClient *http.Client

	verifier *oidc.IDTokenVerifier
}

// Bounds of a Slack sign-in in progress.
const (
	// oidcTTL is how long a started sign-in may take to come back.
	oidcTTL = 10 * time.Minute
	// maxPending sign-ins may be in progress at once.
	maxPending = 1000
	oidcCookie = "talon_console_oidc"
	oidcPath   = Prefix + "oidc/"
)

func (o *SlackOIDC) init() error {
	var missing []error
	if o.ClientID == "" {
		missing = append(missing, errors.New("console: Sign in with Slack needs the app's client_id (console.slack_oidc.client_id)"))
	}
	if o.ClientSecret == "" {
		missing = append(missing, errors.New("console: Sign in with Slack needs the app's client_secret (console.slack_oidc.client_secret)"))
	}
	if u, err := url.Parse(o.RedirectURL); o.RedirectURL == "" || err != nil || !u.IsAbs() {
		missing = append(missing, errors.New("console: Sign in with Slack needs http.public_url: Slack sends the browser back to <public_url>/console/oidc/callback"))
	}
	if err := errors.Join(missing...); err != nil {
		return err
	}
	if o.Issuer == "" {
		o.Issuer = "https://slack.com"
	}
	if o.AuthURL == "" {
		o.AuthURL = "https://slack.com/openid/connect/authorize"
	}
	if o.APIURL == "" {
		o.APIURL = slack.APIURL
	}
	if o.JWKSURL == "" {
		o.JWKSURL = "https://slack.com/openid/connect/keys"
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if o.Principal == nil {
		o.Principal = func(team, _, user string) string { return "slack:" + team + ":" + user }
	}
	return nil
}

// verifierFor is the id_token verifier: the signature by a key of Slack's
// JWKS (fetched once, again when a token names a key not seen yet), RS256
// only, the issuer, the audience (our client id) and the expiry, by now.
func (o *SlackOIDC) verifierFor(now func() time.Time) *oidc.IDTokenVerifier {
	keys := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), o.HTTPClient), o.JWKSURL)
	return oidc.NewVerifier(o.Issuer, keys, &oidc.Config{ClientID: o.ClientID, SupportedSigningAlgs: []string{oidc.RS256}, Now: now})
}

// oidcStart sends the browser to Slack with a fresh state and nonce; the
// state is also set in a cookie, so only this browser can finish.
func (s *Server) oidcStart(w http.ResponseWriter, r *http.Request) {
	o := s.SlackOIDC
	if !s.allowAttempt(s.clientAddr(r)) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many sign-in attempts from this address: wait a minute and try again", http.StatusTooManyRequests)
		return
	}
	// The store keeps the SHA-256 of the state (the browser holds the
	// state in a cookie) with the nonce, so a restart does not fail a
	// sign-in in progress.
	state, nonce := randomToken(), randomToken()
	err := s.Store.AddOIDCState(r.Context(), sha256.Sum256([]byte(state)), nonce, s.Now().Add(oidcTTL), maxPending)
	if errors.Is(err, store.ErrTooManySessions) {
		http.Error(w, "too many Slack sign-ins in progress: try again in a few minutes", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, s.oidcStateCookie(state, oidcTTL))
	q := url.Values{
		"response_type": {"code"},
		"scope":         {"openid"},
		"client_id":     {o.ClientID},
		"redirect_uri":  {o.RedirectURL},
		"state":         {state},
		"nonce":         {nonce},
	}
	http.Redirect(w, r, o.AuthURL+"?"+q.Encode(), http.StatusSeeOther)
}

// oidcStateCookie carries a sign-in's state. It is SameSite=Lax, unlike the
// session's: Slack's redirect back is a navigation from another site, which
// a Strict cookie would not come along with.
func (s *Server) oidcStateCookie(state string, maxAge time.Duration) *http.Cookie {
	c := s.cookie(oidcCookie, state, maxAge)
	c.Path = oidcPath
	c.SameSite = http.SameSiteLaxMode
	return c
}

// slackClaims are the id_token's claims the console reads.
type slackClaims struct {
	Nonce      string `json:"nonce"`
	User       string `json:"https://slack.com/user_id"`
	Team       string `json:"https://slack.com/team_id"`
	Enterprise string `json:"https://slack.com/enterprise_id"`
}

// oidcCallback finishes a sign-in: the state must be one this server
// started, not yet used, not expired, and the one in this browser's cookie;
// the code is exchanged for an id_token, which must verify (verifierFor) and
// carry the sign-in's nonce; its principal must be in Admins.
func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	o := s.SlackOIDC
	remote := s.clientAddr(r)
	if !s.allowAttempt(remote) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many sign-in attempts from this address: wait a minute and try again", http.StatusTooManyRequests)
		return
	}
	http.SetCookie(w, s.oidcStateCookie("", -1))
	q := r.URL.Query()
	state := q.Get("state")
	c, err := r.Cookie(oidcCookie)
	if state == "" || err != nil || !equal(state, c.Value) {
		s.refuseOIDC(w, r, "-", "this sign-in was not started in this browser, or it was already used", http.StatusForbidden)
		return
	}
	// Taken once, whatever happens next.
	nonce, err := s.Store.TakeOIDCState(r.Context(), sha256.Sum256([]byte(state)), s.Now())
	if errors.Is(err, store.ErrNotFound) {
		s.refuseOIDC(w, r, "-", "this sign-in expired or was already used", http.StatusForbidden)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if e := q.Get("error"); e != "" {
		s.refuseOIDC(w, r, "-", "Slack did not sign you in ("+e+")", http.StatusForbidden)
		return
	}
	code := q.Get("code")
	if code == "" {
		s.refuseOIDC(w, r, "-", "Slack sent no authorization code", http.StatusBadRequest)
		return
	}
	resp, err := slack.GetOpenIDConnectTokenContext(r.Context(), o.HTTPClient, o.ClientID, o.ClientSecret, code, o.RedirectURL, slack.OAuthOptionAPIURL(o.APIURL))
	if err != nil {
		s.oidcFailed(w, r, fmt.Errorf("console: slack openid.connect.token: %w", err))
		return
	}
	tok, err := o.verifier.Verify(r.Context(), resp.IdToken)
	if err != nil {
		s.oidcFailed(w, r, fmt.Errorf("console: slack id_token: %w", err))
		return
	}
	var cl slackClaims
	if err := tok.Claims(&cl); err != nil {
		s.oidcFailed(w, r, fmt.Errorf("console: slack id_token claims: %w", err))
		return
	}
	if !equal(cl.Nonce, nonce) {
		s.oidcFailed(w, r, errors.New("console: slack id_token: the nonce is not this sign-in's"))
		return
	}
	if cl.User == "" || (cl.Team == "" && cl.Enterprise == "") {
		s.oidcFailed(w, r, errors.New("console: slack id_token: no user or team id"))
		return
	}
	who := o.Principal(cl.Team, cl.Enterprise, cl.User)
	if !o.Admins[who] {
		s.audit(r.Context(), who, "sign-in refused (not an admin)", "", remote)
		s.render(w, http.StatusForbidden, page{Title: "Not an admin"}, func(d *doc) {
			d.raw(`<div class="card signin"><p>Slack signed you in as <code>`)
			d.text(who)
			d.raw(`</code>, who is not a console admin.</p>
<p>An operator can add that principal to <code>console.admins</code> in the gateway's configuration.</p>
<p><a href="/console/signin">Back to sign-in</a></p></div>
`)
		})
		return
	}
	if !s.startSession(w, r, who) {
		return
	}
	// A page rather than a redirect: this response ends a navigation that
	// began on Slack's site, and the browser would not send the SameSite=
	// Strict session cookie with a redirect that continues it.
	w.Header().Set("Refresh", "0; url="+Prefix)
	s.render(w, http.StatusOK, page{Title: "Signed in"}, func(d *doc) {
		d.raw(`<div class="card signin"><p>Signed in as <code>`)
		d.text(who)
		d.raw(`</code>.</p><p><a class="button" href="/console/">Continue to the console</a></p></div>
`)
	})
}

// refuseOIDC shows why a Slack sign-in was refused and audits it.
func (s *Server) refuseOIDC(w http.ResponseWriter, r *http.Request, who, why string, status int) {
	s.audit(r.Context(), who, "sign-in refused (Slack)", "", s.clientAddr(r))
	s.render(w, status, page{Title: "Sign-in refused"}, func(d *doc) {
		d.raw(`<div class="card signin"><p class="error" role="alert">`)
		d.text(why)
		d.raw(`.</p><p><a href="/console/signin">Start again</a></p></div>
`)
	})
}

// oidcFailed refuses a sign-in whose exchange or token failed: the reason
// goes to the log under a reference, the browser gets the reference.
func (s *Server) oidcFailed(w http.ResponseWriter, r *http.Request, err error) {
	ref := randomToken()[:10]
	s.Log.Warn().Err(err).Str("ref", ref).Str("remote", s.clientAddr(r)).Msg("console: Slack sign-in refused")
	s.refuseOIDC(w, r, "-", "Slack's answer could not be verified (reference "+ref+" in the gateway's log)", http.StatusForbidden)
}
