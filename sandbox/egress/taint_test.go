package egress

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/talonhq/talon/agent"
)

func TestTaintCheck(t *testing.T) {
	trusted, err := agent.ParseTrustedHosts([]string{"api.example.com", "*.docs.example"})
	if err != nil {
		t.Fatal(err)
	}
	g := &Taint{Trusted: trusted, MaxURLData: 20}
	pol := &Policy{Allow: []Rule{{Host: "*"}, {Host: "wiki.example", Trusted: true}, {Host: "other.example", Methods: []string{"POST"}, Trusted: true}}}
	tests := []struct {
		method, url, body string
		want              string // a piece of the reason; "" for none
	}{
		{"GET", "https://api.example.com/x?q=1", "", ""},
		{"GET", "https://API.example.com./x", "", ""},
		{"GET", "https://a.docs.example/", "", ""},
		{"GET", "https://wiki.example/p", "", ""}, // trusted by the tool's rule
		{"GET", "https://evil.example/", "", "evil.example, which is not a trusted host"},
		{"GET", "https://docs.example/", "", "not a trusted host"},                 // *.suffix is not suffix itself
		{"GET", "https://other.example/", "", "not a trusted host"},                // its trusted rule allows POST only
		{"GET", "https://c2VjcmV0.evil.example/", "", "not a trusted host"},        // data in a subdomain
		{"GET", "https://api.example.com.evil.example/", "", "not a trusted host"}, // a trusted name as a label
		{"GET", "https://api.example.com/0123456789?q=0123456789", "", "carry 23 bytes (more than 20)"},
		{"GET", "https://api.example.com/0123456789012345678", "", ""}, // exactly the bound: "/" and 19
		{"POST", "https://api.example.com/x", "{}", "a 2-byte body"},
		{"GET", "ftp://api.example.com/", "", ""}, // the broker refuses it; nothing to ask
		{"GET", "https://аpple.com/?d=x", "", ""}, // a look-alike in Cyrillic: refused by the broker, never shown
		{"GET", "https://xn--pple-43d.com/", "", "xn--pple-43d.com, which is not a trusted host"},
	}
	for _, tt := range tests {
		got := g.Check(pol, tt.method, tt.url, tt.body)
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("Check(%s %s, %q) = %q, want %q", tt.method, tt.url, tt.body, got, tt.want)
		}
	}
	var zero *Taint
	if got := zero.Check(pol, "GET", "https://api.example.com/x", ""); !strings.Contains(got, "not a trusted host") {
		t.Errorf("nil Taint trusts %q", got)
	}
	if got := zero.Check(&Policy{Allow: []Rule{{Host: "api.example.com", Trusted: true}}}, "GET", "https://api.example.com/"+strings.Repeat("a", DefaultTaintedURLData), ""); !strings.Contains(got, "bytes") {
		t.Errorf("nil Taint does not bound the URL: %q", got)
	}
	none := &Taint{Trusted: trusted, MaxURLData: -1}
	if got := none.Check(pol, "GET", "https://api.example.com/", ""); !strings.Contains(got, "more than 0") {
		t.Errorf("MaxURLData -1 lets %q through", got)
	}
	if err := (Rule{Host: "*", Trusted: true}).Validate(); err == nil {
		t.Error(`a trusted "*" rule validates`)
	}
	if !g.Untrusted(pol, "GET", "https://evil.example/") || g.Untrusted(pol, "GET", "https://api.example.com/") {
		t.Error("Untrusted disagrees with the trusted list")
	}
}

// TestTaintedRedirects: a tainted caller's request that a trusted host
// redirects to an untrusted one stops at the redirect, unless the owner
// approved the request; an untainted caller's goes on as before, and a
// tainted caller's first hop that needs approval is refused before any
// connection when it was not approved.
func TestTaintedRedirects(t *testing.T) {
	var mu sync.Mutex
	hits := map[string][]string{} // host: paths, guarded by mu
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		hits[r.Host[:strings.LastIndex(r.Host, ":")]] = append(hits[r.Host[:strings.LastIndex(r.Host, ":")]], r.URL.RequestURI())
		mu.Unlock()
		if to := r.URL.Query().Get("to"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	res := testResolver()
	b := newBroker(t, res)
	trusted, _ := agent.ParseTrustedHosts([]string{"api.example.com"})
	b.Taint = &Taint{Trusted: trusted}
	pol := &Policy{Allow: []Rule{hostRule("api.example.com", srv, "GET", "POST"), hostRule("other.example.com", srv, "GET")}}
	leak := urlFor("other.example.com", srv, "/x?d=private")
	start := urlFor("api.example.com", srv, "/r?to="+leak)
	reset := func() map[string][]string {
		mu.Lock()
		defer mu.Unlock()
		h := hits
		hits = map[string][]string{}
		return h
	}

	c := caller(pol)
	c.Tainted = "tool http_fetch: page.example"
	_, err := b.Do(t.Context(), c, Request{Method: "GET", URL: start})
	if de := denied(t, err); !strings.Contains(de.Reason, "a redirect needs the user's approval") || de.Host != "other.example.com" {
		t.Errorf("tainted redirect: %+v", de)
	}
	if got := reset(); len(got["other.example.com"]) != 0 || len(got["api.example.com"]) != 1 {
		t.Errorf("tainted redirect reached %v, want api.example.com only", got)
	}

	c.Approved = true
	if resp, err := b.Do(t.Context(), c, Request{Method: "GET", URL: start}); err != nil || resp.Body != "ok" {
		t.Errorf("approved: %v, %+v", err, resp)
	}
	if got := reset(); len(got["other.example.com"]) != 1 {
		t.Errorf("approved redirect did not reach other.example.com: %v", got)
	}

	if resp, err := b.Do(t.Context(), caller(pol), Request{Method: "GET", URL: start}); err != nil || resp.Body != "ok" {
		t.Errorf("untainted: %v, %+v", err, resp)
	}
	reset()

	c.Approved = false
	noDial(t, b)
	for _, r := range []Request{
		{Method: "GET", URL: leak},
		{Method: "POST", URL: urlFor("api.example.com", srv, "/x"), Body: "private"},
	} {
		_, err := b.Do(t.Context(), c, r)
		if de := denied(t, err); !strings.Contains(de.Reason, "the request needs the user's approval") {
			t.Errorf("unapproved tainted %s %s: %+v", r.Method, r.URL, de)
		}
	}
}
