package console

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/store"
)

const (
	oidcClientID     = "1234.5678"
	oidcClientSecret = "oidc-client-secret-9f8e7d"
	oidcRedirect     = "https://talon.example/console/oidc/callback"
)

// fakeSlackOIDC is Slack's side of Sign in with Slack on loopback: the
// JWKS with the test key, and openid.connect.token answering each code the
// test registered with the id_token it registered.
type fakeSlackOIDC struct {
	srv *httptest.Server
	key *rsa.PrivateKey

	mu sync.Mutex
	// codes maps an authorization code to its id_token; exchanges records
	// the forms posted to openid.connect.token; guarded by mu.
	codes     map[string]string
	exchanges []url.Values
}

var (
	oidcKeyOnce         sync.Once
	oidcKey, oidcForger *rsa.PrivateKey
)

// oidcKeys are the fake's signing key and a forger's, made once per test
// binary (RSA key generation is slow).
func oidcKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	oidcKeyOnce.Do(func() {
		var err error
		if oidcKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if oidcForger, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return oidcKey, oidcForger
}

func newFakeSlackOIDC(t *testing.T) *fakeSlackOIDC {
	key, _ := oidcKeys(t)
	f := &fakeSlackOIDC{key: key, codes: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openid/connect/keys", func(w http.ResponseWriter, r *http.Request) {
		pub := key.PublicKey
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("POST /api/openid.connect.token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.mu.Lock()
		f.exchanges = append(f.exchanges, r.PostForm)
		tok, ok := f.codes[r.PostForm.Get("code")]
		delete(f.codes, r.PostForm.Get("code"))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok || r.PostForm.Get("client_secret") != oidcClientSecret || r.PostForm.Get("redirect_uri") != oidcRedirect {
			_, _ = w.Write([]byte(`{"ok":false,"error":"invalid_code"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "access_token": "xoxp-not-used", "token_type": "Bearer", "id_token": tok})
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sign makes a JWT of claims with header alg and kid k1, signed by key
// (RS256), by the HMAC of secret (HS256) or unsigned (none).
func sign(t *testing.T, alg string, key *rsa.PrivateKey, secret []byte, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": "k1", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	in := b64(h) + "." + b64(c)
	var sig []byte
	switch alg {
	case "RS256":
		sum := sha256.Sum256([]byte(in))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case "HS256":
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		sig = m.Sum(nil)
	}
	return in + "." + b64(sig)
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newOIDCFixture(t *testing.T, opts ...func(*Server)) (*fixture, *fakeSlackOIDC) {
	t.Helper()
	fake := newFakeSlackOIDC(t)
	f := newFixtureWith(t, func(s *Server) {
		for _, o := range opts {
			o(s)
		}
		s.SlackOIDC = &SlackOIDC{
			ClientID: oidcClientID, ClientSecret: oidcClientSecret, RedirectURL: oidcRedirect,
			Admins:  map[string]bool{"slack:T1:UADMIN": true, "slack:E9:UGRID": true},
			Issuer:  "https://slack.com",
			AuthURL: fake.srv.URL + "/openid/connect/authorize",
			APIURL:  fake.srv.URL + "/api/",
			JWKSURL: fake.srv.URL + "/openid/connect/keys",
		}
	})
	return f, fake
}

// begin starts a sign-in from browser c and returns the state and nonce
// the console sent to Slack.
func (o *fakeSlackOIDC) begin(t *testing.T, f *fixture, c *http.Client) (state, nonce string) {
	t.Helper()
	raw := &http.Client{Jar: c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := get(t, raw, f.srv.URL+"/console/oidc/start")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || !strings.HasPrefix(loc.String(), o.srv.URL+"/openid/connect/authorize?") {
		t.Fatalf("start = %d to %q, want 303 to Slack's authorize endpoint", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := loc.Query()
	for k, want := range map[string]string{"response_type": "code", "scope": "openid", "client_id": oidcClientID, "redirect_uri": oidcRedirect} {
		if q.Get(k) != want {
			t.Errorf("authorize %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if q.Get("state") == "" || q.Get("nonce") == "" || q.Get("state") == q.Get("nonce") {
		t.Fatalf("authorize state %q, nonce %q: want two distinct random values", q.Get("state"), q.Get("nonce"))
	}
	return q.Get("state"), q.Get("nonce")
}

// code registers an authorization code Slack would answer with token.
func (o *fakeSlackOIDC) code(token string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := randomToken()
	o.codes[c] = token
	return c
}

func finish(t *testing.T, f *fixture, c *http.Client, state, code string) (*http.Response, string) {
	t.Helper()
	return get(t, c, f.srv.URL+"/console/oidc/callback?"+url.Values{"state": {state}, "code": {code}}.Encode())
}

// claims are a valid id_token's claims for user of team, at the clock's
// time, with nonce.
func claims(f *fixture, team, user, nonce string) map[string]any {
	now := f.clk.Now()
	return map[string]any{
		"iss": "https://slack.com", "aud": oidcClientID, "sub": user,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix(), "nonce": nonce,
		"https://slack.com/user_id": user, "https://slack.com/team_id": team,
	}
}

func signedIn(t *testing.T, f *fixture, c *http.Client) bool {
	t.Helper()
	resp, _ := get(t, c, f.srv.URL+"/console/")
	return resp.Request.URL.Path == "/console/"
}

func TestSlackSignIn(t *testing.T) {
	f, fake := newOIDCFixture(t)
	c := f.client(t)
	_, page := get(t, c, f.srv.URL+"/console/signin")
	if !strings.Contains(page, `href="/console/oidc/start"`) || !strings.Contains(page, "Admin token") {
		t.Fatalf("the sign-in page does not offer both Slack and the token:\n%s", page)
	}
	state, nonce := fake.begin(t, f, c)
	resp, body := finish(t, f, c, state, fake.code(sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce))))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Signed in as <code>slack:T1:UADMIN</code>") {
		t.Fatalf("callback = %d:\n%s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Refresh"); got != "0; url=/console/" {
		t.Errorf("Refresh = %q, want the console", got)
	}
	if !signedIn(t, f, c) {
		t.Fatal("after Slack sign-in, the console sends the admin to sign in")
	}
	_, body = get(t, c, f.srv.URL+"/console/")
	if !strings.Contains(body, "<td>slack:T1:UADMIN</td><td>sign-in</td>") {
		t.Errorf("the audit log does not show the Slack admin's sign-in:\n%s", body)
	}
	fake.mu.Lock()
	ex := fake.exchanges
	fake.mu.Unlock()
	if len(ex) != 1 || ex[0].Get("client_id") != oidcClientID || ex[0].Get("redirect_uri") != oidcRedirect {
		t.Errorf("openid.connect.token got %d exchanges: %v", len(ex), ex)
	}
	if strings.Contains(body, oidcClientSecret) {
		t.Error("a console page shows the client secret")
	}

	// The same state again, even with its cookie put back: refused.
	u, _ := url.Parse(f.srv.URL + "/console/oidc/")
	c2 := f.client(t)
	c2.Jar.SetCookies(u, []*http.Cookie{{Name: oidcCookie, Value: state, Path: oidcPath}})
	resp, body = finish(t, f, c2, state, fake.code(sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce))))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "already used") || signedIn(t, f, c2) {
		t.Errorf("replayed state = %d, signed in %v:\n%s", resp.StatusCode, signedIn(t, f, c2), body)
	}
}

func TestSlackSignInRefusals(t *testing.T) {
	_, forger := oidcKeys(t)
	cases := []struct {
		name string
		// token makes the id_token Slack answers with, for the sign-in's nonce.
		token func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string
		want  string
		// why is in the log line of the refusal ("" for no log line).
		why string
	}{
		{"forged signature", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "RS256", forger, nil, claims(f, "T1", "UADMIN", nonce))
		}, "could not be verified", "failed to verify id token signature"},
		{"alg none", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "none", nil, nil, claims(f, "T1", "UADMIN", nonce))
		}, "could not be verified", "unexpected signature algorithm"},
		{"HS256 keyed with the public key", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "HS256", nil, o.key.PublicKey.N.Bytes(), claims(f, "T1", "UADMIN", nonce))
		}, "could not be verified", "unexpected signature algorithm"},
		{"wrong audience", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			cl := claims(f, "T1", "UADMIN", nonce)
			cl["aud"] = "another-app"
			return sign(t, "RS256", o.key, nil, cl)
		}, "could not be verified", "expected audience"},
		{"wrong issuer", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			cl := claims(f, "T1", "UADMIN", nonce)
			cl["iss"] = "https://evil.example"
			return sign(t, "RS256", o.key, nil, cl)
		}, "could not be verified", "different provider"},
		{"expired", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			cl := claims(f, "T1", "UADMIN", nonce)
			cl["exp"] = f.clk.Now().Add(-time.Minute).Unix()
			return sign(t, "RS256", o.key, nil, cl)
		}, "could not be verified", "token is expired"},
		{"another sign-in's nonce", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "RS256", o.key, nil, claims(f, "T1", "UADMIN", "not-"+nonce))
		}, "could not be verified", "nonce is not this sign-in"},
		{"not an admin", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "RS256", o.key, nil, claims(f, "T1", "UOTHER", nonce))
		}, "<code>slack:T1:UOTHER</code>, who is not a console admin", ""},
		{"an admin's user id in another workspace", func(t *testing.T, f *fixture, o *fakeSlackOIDC, nonce string) string {
			return sign(t, "RS256", o.key, nil, claims(f, "T2", "UADMIN", nonce))
		}, "not a console admin", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var log syncBuffer
			f, fake := newOIDCFixture(t, func(s *Server) { s.Log = zerolog.New(&log) })
			c := f.client(t)
			state, nonce := fake.begin(t, f, c)
			resp, body := finish(t, f, c, state, fake.code(tc.token(t, f, fake, nonce)))
			if got := log.String(); tc.why != "" && !strings.Contains(got, tc.why) || tc.why == "" && got != "" {
				t.Errorf("log = %q, want the reason %q", got, tc.why)
			}
			if strings.Contains(log.String(), oidcClientSecret) || strings.Contains(body, oidcClientSecret) {
				t.Error("the client secret is in the log or the page")
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Errorf("callback = %d, want 403 saying %q:\n%s", resp.StatusCode, tc.want, body)
			}
			if signedIn(t, f, c) {
				t.Error("refused, yet signed in")
			}
		})
	}
}

func TestSlackSignInStateBoundToBrowserAndTime(t *testing.T) {
	f, fake := newOIDCFixture(t)
	// Finished in another browser (a login CSRF): refused, and it does not
	// use up the sign-in of the browser that started it.
	a, b := f.client(t), f.client(t)
	state, nonce := fake.begin(t, f, a)
	resp, body := finish(t, f, b, state, fake.code(sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce))))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not started in this browser") || signedIn(t, f, b) {
		t.Errorf("another browser's state = %d:\n%s", resp.StatusCode, body)
	}
	if resp, _ := finish(t, f, a, state, fake.code(sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce)))); resp.StatusCode != http.StatusOK || !signedIn(t, f, a) {
		t.Errorf("the browser that started it = %d, want signed in", resp.StatusCode)
	}

	// Back after ten minutes: expired.
	c := f.client(t)
	state, nonce = fake.begin(t, f, c)
	f.clk.Set(f.clk.Now().Add(oidcTTL))
	resp, body = finish(t, f, c, state, fake.code(sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce))))
	if resp.StatusCode != http.StatusForbidden || signedIn(t, f, c) {
		t.Errorf("a sign-in back after 10 minutes = %d:\n%s", resp.StatusCode, body)
	}

	// Slack reports an error (the user pressed Cancel): refused, said so.
	c = f.client(t)
	state, _ = fake.begin(t, f, c)
	resp, body = get(t, c, f.srv.URL+"/console/oidc/callback?"+url.Values{"state": {state}, "error": {"access_denied"}}.Encode())
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Slack did not sign you in (access_denied)") {
		t.Errorf("error=access_denied = %d:\n%s", resp.StatusCode, body)
	}
}

func TestSlackSignInGridUserAndOnlySlack(t *testing.T) {
	fake := newFakeSlackOIDC(t)
	// No admin token: only Slack; a Grid user is named by the Principal
	// function (here: the org, as the Slack adapter names them).
	f := newFixtureWith(t, func(s *Server) {
		s.Token = ""
		s.SlackOIDC = &SlackOIDC{
			ClientID: oidcClientID, ClientSecret: oidcClientSecret, RedirectURL: oidcRedirect,
			Admins: map[string]bool{"slack:E9:UGRID": true},
			Principal: func(team, enterprise, user string) string {
				if enterprise != "" {
					team = enterprise
				}
				return "slack:" + team + ":" + user
			},
			AuthURL: fake.srv.URL + "/openid/connect/authorize",
			APIURL:  fake.srv.URL + "/api/",
			JWKSURL: fake.srv.URL + "/openid/connect/keys",
		}
	})
	c := f.client(t)
	_, page := get(t, c, f.srv.URL+"/console/signin")
	if strings.Contains(page, "Admin token") {
		t.Error("without TALON_CONSOLE_TOKEN the sign-in page still asks for it")
	}
	resp, _ := post(t, c, f.srv.URL+"/console/signin", url.Values{"csrf": {"x"}, "token": {""}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("token sign-in without a token configured = %d, want 403", resp.StatusCode)
	}
	state, nonce := fake.begin(t, f, c)
	cl := claims(f, "T7", "UGRID", nonce)
	cl["https://slack.com/enterprise_id"] = "E9"
	if resp, body := finish(t, f, c, state, fake.code(sign(t, "RS256", fake.key, nil, cl))); resp.StatusCode != http.StatusOK || !signedIn(t, f, c) {
		t.Errorf("Grid admin = %d:\n%s", resp.StatusCode, body)
	}
}

func TestSlackSignInConfig(t *testing.T) {
	s := &Server{Store: (*store.DB)(nil), SlackOIDC: &SlackOIDC{}}
	_, err := s.Handler()
	for _, want := range []string{"client_id", "client_secret", "http.public_url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Handler with an empty SlackOIDC = %v, want it to name %s", err, want)
		}
	}
}

// A sign-in started before a restart finishes after it (the state is in
// the store), once.
func TestSlackSignInSurvivesRestart(t *testing.T) {
	f, fake := newOIDCFixture(t)
	c := f.client(t)
	state, nonce := fake.begin(t, f, c)

	again := &Server{Store: f.db, Token: testToken, Now: f.clk.Now, SlackOIDC: &SlackOIDC{
		ClientID: oidcClientID, ClientSecret: oidcClientSecret, RedirectURL: oidcRedirect,
		Admins:  map[string]bool{"slack:T1:UADMIN": true},
		AuthURL: fake.srv.URL + "/openid/connect/authorize", APIURL: fake.srv.URL + "/api/", JWKSURL: fake.srv.URL + "/openid/connect/keys",
	}}
	h, err := again.Handler()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	srv := httptest.NewServer(mux) // the same host: the jar sends the state cookie
	defer srv.Close()
	tok := sign(t, "RS256", fake.key, nil, claims(f, "T1", "UADMIN", nonce))
	resp, body := get(t, c, srv.URL+"/console/oidc/callback?"+url.Values{"state": {state}, "code": {fake.code(tok)}}.Encode())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Signed in as") {
		t.Fatalf("after a restart the callback = %d:\n%s", resp.StatusCode, body)
	}
	u, _ := url.Parse(srv.URL + "/console/oidc/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: oidcCookie, Value: state, Path: oidcPath}})
	if resp, _ := finish(t, f, c, state, fake.code(tok)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("the same state on the first server = %d, want 403 (used)", resp.StatusCode)
	}
}
