package egress

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

const secret = "s3cret-token-value"

type bearer struct{ v string }

func (c bearer) Apply(h http.Header, _ *url.URL) { h.Set("Authorization", "Bearer "+c.v) }
func (c bearer) Secrets() [][]byte               { return [][]byte{[]byte(c.v)} }

type queryParam struct{ k, v string }

func (c queryParam) Apply(_ http.Header, u *url.URL) {
	q := u.Query()
	q.Set(c.k, c.v)
	u.RawQuery = q.Encode()
}
func (c queryParam) Secrets() [][]byte { return [][]byte{[]byte(c.v)} }

// fakeVault holds one entry per name, bound to one host, like the real
// vault's host binding.
type fakeVault struct {
	mu      sync.Mutex
	entries map[string]vaultEntry
	asked   []string // name@host, guarded by mu
}

type vaultEntry struct {
	host string
	cred Credential
}

func (v *fakeVault) Credential(_ context.Context, _ Caller, name, host string) (Credential, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.asked = append(v.asked, name+"@"+host)
	e, ok := v.entries[name]
	if !ok || e.host != host {
		return nil, fmt.Errorf("fake vault: %w", ErrNoCredential)
	}
	return e.cred, nil
}

func (v *fakeVault) askedFor() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.asked...)
}

// fakeChecker refuses bodies containing "leak" and redacts the base64 form
// of each secret, as the vault's leak checker would.
type fakeChecker struct{}

func (fakeChecker) CheckOutbound(_ context.Context, _ Caller, r Request) error {
	if strings.Contains(r.Body, "leak") {
		return errors.New("body holds a secret")
	}
	return nil
}

func (fakeChecker) RedactInbound(_ agent.Principal, secrets [][]byte, s string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, base64.StdEncoding.EncodeToString(sec), "[B64-REDACTED]")
	}
	return s
}

func TestCredentials(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // server name -> Authorization, guarded by mu
	record := func(name string, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen[name] = r.Header.Get("Authorization")
	}
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("other", r)
		fmt.Fprint(w, "other:"+r.Header.Get("Authorization"))
	}))
	defer other.Close()
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("api", r)
		auth := r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/to-other":
			http.Redirect(w, r, urlFor("other.example.com", other, "/"), http.StatusFound)
			return
		case "/same-host":
			http.Redirect(w, r, "/echo", http.StatusFound)
			return
		case "/b64":
			fmt.Fprint(w, base64.StdEncoding.EncodeToString([]byte(secret)))
			return
		}
		w.Header().Set("X-Echo", auth)
		fmt.Fprintf(w, "auth=%s query=%s", auth, r.URL.RawQuery)
	}))
	defer api.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("plain", r)
	}))
	defer plain.Close()

	// The broker asks the source with the request's host and port.
	apiHP, otherHP := hostRule("api.example.com", api).Host, hostRule("other.example.com", other).Host
	vault := func() *fakeVault {
		return &fakeVault{entries: map[string]vaultEntry{
			"gh":  {host: apiHP, cred: bearer{secret}},
			"key": {host: apiHP, cred: queryParam{"key", secret}},
		}}
	}
	rules := []Rule{hostRule("api.example.com", api, "GET", "POST"), hostRule("other.example.com", other), hostRule("plain.example.com", plain)}
	u := func(p string) string { return urlFor("api.example.com", api, p) }

	tests := []struct {
		name       string
		granted    []string
		noSource   bool
		checker    LeakChecker
		maxResp    int64
		req        Request
		wantErr    *DeniedError
		wantBody   string
		wantHeader string // X-Echo
		wantURL    string
		wantSeen   map[string]string
		wantAsked  []string
	}{
		{
			name: "injected and redacted", granted: []string{"gh"},
			req:      Request{URL: u("/echo"), Credential: "gh"},
			wantBody: "auth=Bearer [REDACTED] query=", wantHeader: "Bearer [REDACTED]", wantURL: u("/echo"),
			wantSeen: map[string]string{"api": "Bearer " + secret}, wantAsked: []string{"gh@" + apiHP},
		},
		{
			name: "kept on same-host redirect", granted: []string{"gh"},
			req:      Request{URL: u("/same-host"), Credential: "gh"},
			wantBody: "auth=Bearer [REDACTED] query=", wantHeader: "Bearer [REDACTED]", wantURL: u("/echo"),
			wantSeen: map[string]string{"api": "Bearer " + secret}, wantAsked: []string{"gh@" + apiHP},
		},
		{
			name: "dropped on cross-host redirect", granted: []string{"gh"},
			req:      Request{URL: u("/to-other"), Credential: "gh"},
			wantBody: "other:", wantURL: urlFor("other.example.com", other, "/"),
			wantSeen:  map[string]string{"api": "Bearer " + secret, "other": ""},
			wantAsked: []string{"gh@" + apiHP, "gh@" + otherHP},
		},
		{
			name: "query parameter redacted from body and URL", granted: []string{"key"},
			req:      Request{URL: u("/echo?a=1"), Credential: "key"},
			wantBody: "auth= query=a=1&key=[REDACTED]", wantURL: u("/echo?a=1"),
			wantSeen: map[string]string{"api": ""}, wantAsked: []string{"key@" + apiHP},
		},
		{
			name: "redacted before the body is cut", granted: []string{"gh"}, maxResp: 21,
			req:      Request{URL: u("/echo"), Credential: "gh"},
			wantBody: "auth=Bearer [REDACTED", wantHeader: "Bearer [REDACTED]", wantURL: u("/echo"),
			wantSeen: map[string]string{"api": "Bearer " + secret}, wantAsked: []string{"gh@" + apiHP},
		},
		{
			name: "checker redacts encodings", granted: []string{"gh"}, checker: fakeChecker{},
			req:      Request{URL: u("/b64"), Credential: "gh"},
			wantBody: "[B64-REDACTED]", wantURL: u("/b64"),
			wantSeen: map[string]string{"api": "Bearer " + secret}, wantAsked: []string{"gh@" + apiHP},
		},
		{
			name: "checker refuses outbound", granted: []string{"gh"}, checker: fakeChecker{},
			req:     Request{Method: "POST", URL: u("/echo"), Body: "a leak", Credential: "gh"},
			wantErr: &DeniedError{Host: "api.example.com", Reason: "refused by the outbound leak check"},
		},
		{
			name:    "not granted",
			req:     Request{URL: u("/echo"), Credential: "gh"},
			wantErr: &DeniedError{Host: "api.example.com", Reason: `credential "gh" is not granted to this tool`},
		},
		{
			name: "source refuses", granted: []string{"gh", "other"},
			req:       Request{URL: u("/echo"), Credential: "other"},
			wantErr:   &DeniedError{Host: "api.example.com", Reason: `credential "other" is not available for this host`},
			wantAsked: []string{"other@" + apiHP},
		},
		{
			name: "not over http", granted: []string{"gh"},
			req:     Request{URL: urlFor("plain.example.com", plain, "/"), Credential: "gh"},
			wantErr: &DeniedError{Host: "plain.example.com", Reason: `credential "gh" may only be sent over https`},
		},
		{
			name: "no source", granted: []string{"gh"}, noSource: true,
			req:     Request{URL: u("/echo"), Credential: "gh"},
			wantErr: &DeniedError{Host: "api.example.com", Reason: "no credential source is configured"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			clear(seen)
			mu.Unlock()
			res := testResolver()
			res.names["plain.example.com"] = []string{"127.0.0.1"}
			b := newBroker(t, res)
			v := vault()
			if !tt.noSource {
				b.Credentials = v
			}
			b.Checker = tt.checker
			pol := &Policy{Allow: rules, Credentials: tt.granted, MaxResponseBytes: tt.maxResp}
			resp, err := b.Do(context.Background(), caller(pol), tt.req)
			if tt.wantErr != nil {
				if diff := cmp.Diff(tt.wantErr, denied(t, err)); diff != "" {
					t.Errorf("refusal (-want +got):\n%s", diff)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error names the secret: %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				got := []string{resp.Body, resp.Headers["X-Echo"], resp.URL}
				if diff := cmp.Diff([]string{tt.wantBody, tt.wantHeader, tt.wantURL}, got); diff != "" {
					t.Errorf("body, X-Echo, URL (-want +got):\n%s", diff)
				}
				for k, v := range resp.Headers {
					if strings.Contains(v, secret) {
						t.Errorf("header %s leaks the secret", k)
					}
				}
			}
			mu.Lock()
			gotSeen := map[string]string{}
			for k, v := range seen {
				gotSeen[k] = v
			}
			mu.Unlock()
			if tt.wantSeen == nil {
				tt.wantSeen = map[string]string{}
			}
			if diff := cmp.Diff(tt.wantSeen, gotSeen); diff != "" {
				t.Errorf("servers saw Authorization (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAsked, v.askedFor()); diff != "" {
				t.Errorf("vault asked (-want +got):\n%s", diff)
			}
		})
	}
}
