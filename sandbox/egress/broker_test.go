package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// fakeResolver answers from a fixed table and counts lookups.
type fakeResolver struct {
	mu    sync.Mutex
	names map[string][]string
	calls map[string]int // guarded by mu
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[host]++
	ss, ok := f.names[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

func (f *fakeResolver) lookups(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

func testResolver() *fakeResolver {
	return &fakeResolver{names: map[string][]string{
		"api.example.com":      {"127.0.0.1"},
		"other.example.com":    {"127.0.0.1"},
		"internal.example.com": {"10.0.0.9"},
		"private.example.com":  {"10.0.0.5"},
		"mixed.example.com":    {"93.184.215.14", "10.0.0.6"},
		"localhost":            {"127.0.0.1"},
		"public.example.com":   {"93.184.215.14"},
	}}
}

// newBroker returns a broker that trusts the httptest CA, resolves through
// the fake, and may reach 127.0.0.1 only.
func newBroker(t *testing.T, res *fakeResolver) *Broker {
	t.Helper()
	pool := x509.NewCertPool()
	srv := httptest.NewUnstartedServer(nil) // only for its certificate
	srv.StartTLS()
	pool.AddCert(srv.Certificate())
	srv.Close()
	b := &Broker{
		AllowPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Resolver:     res,
		TLSConfig:    &tls.Config{RootCAs: pool},
	}
	t.Cleanup(b.CloseIdleConnections)
	return b
}

// noDial makes any connection attempt fail the test: for cases that must be
// refused before a connection.
func noDial(t *testing.T, b *Broker) {
	b.dialAddr = func(_ context.Context, addr string) (net.Conn, error) {
		t.Errorf("dialled %s; want refusal before any connection", addr)
		return nil, errors.New("test: dial forbidden")
	}
}

// hostRule allows name on the test server's port.
func hostRule(name string, srv *httptest.Server, methods ...string) Rule {
	u, _ := url.Parse(srv.URL)
	r := Rule{Host: name + ":" + u.Port(), Methods: methods}
	if u.Scheme == "http" {
		r.Scheme = "http"
	}
	return r
}

func urlFor(name string, srv *httptest.Server, path string) string {
	u, _ := url.Parse(srv.URL)
	return u.Scheme + "://" + name + ":" + u.Port() + path
}

func caller(p *Policy) Caller {
	return Caller{Tool: "test", Principal: agent.Principal{Platform: "terminal", User: "local"}, Policy: p}
}

func denied(t *testing.T, err error) *DeniedError {
	t.Helper()
	var de *DeniedError
	if !errors.As(err, &de) {
		t.Fatalf("error = %v, want *DeniedError", err)
	}
	return de
}

func TestDoAllowedGET(t *testing.T) {
	var gotHost, gotSNI string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotSNI = r.Host, r.TLS.ServerName
		w.Header().Set("X-Test", "yes")
		w.Header().Set("Set-Cookie", "session=abc")
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()
	res := testResolver()
	b := newBroker(t, res)
	pol := &Policy{Allow: []Rule{hostRule("API.Example.com.", srv)}}

	resp, err := b.Do(context.Background(), caller(pol), Request{URL: urlFor("api.example.com", srv, "/x?q=1#frag")})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	want := &Response{Status: 200, Body: "hello", URL: urlFor("api.example.com", srv, "/x?q=1")}
	if diff := cmp.Diff(want, resp, cmpIgnoreHeaders); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if resp.Headers["X-Test"] != "yes" {
		t.Errorf("X-Test = %q, want yes", resp.Headers["X-Test"])
	}
	if _, ok := resp.Headers["Set-Cookie"]; ok {
		t.Errorf("Set-Cookie passed to the guest")
	}
	if gotSNI != "api.example.com" {
		t.Errorf("SNI = %q, want api.example.com", gotSNI)
	}
	if !strings.HasPrefix(gotHost, "api.example.com:") {
		t.Errorf("Host = %q, want api.example.com:port", gotHost)
	}
	if n := res.lookups("api.example.com"); n != 1 {
		t.Errorf("lookups = %d, want exactly 1", n)
	}
}

var cmpIgnoreHeaders = cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Headers" }, cmp.Ignore())

func TestSSRFRefused(t *testing.T) {
	tests := []struct {
		url, host, reason string
	}{
		{"https://127.0.0.1/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://[::1]/", "::1", "address ::1 is loopback"},
		{"https://169.254.169.254/latest/meta-data/", "169.254.169.254", "address 169.254.169.254 is the cloud metadata address"},
		{"https://10.0.0.1/", "10.0.0.1", "address 10.0.0.1 is private"},
		{"https://172.16.3.4/", "172.16.3.4", "address 172.16.3.4 is private"},
		{"https://192.168.1.1/", "192.168.1.1", "address 192.168.1.1 is private"},
		{"https://100.64.0.1/", "100.64.0.1", "address 100.64.0.1 is shared (CGNAT)"},
		{"https://198.18.0.1/", "198.18.0.1", "address 198.18.0.1 is benchmarking"},
		{"https://0.0.0.0/", "0.0.0.0", "address 0.0.0.0 is unspecified"},
		{"https://255.255.255.255/", "255.255.255.255", "address 255.255.255.255 is broadcast"},
		{"https://240.0.0.1/", "240.0.0.1", "address 240.0.0.1 is reserved"},
		{"https://224.0.0.1/", "224.0.0.1", "address 224.0.0.1 is multicast"},
		{"https://192.0.2.1/", "192.0.2.1", "address 192.0.2.1 is documentation"},
		{"https://2130706433/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://0177.0.0.1/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://0x7f.1/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://0x7f000001/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://127.1/", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://10.1/", "10.0.0.1", "address 10.0.0.1 is private"},
		{"https://0251.0376.0251.0376/", "169.254.169.254", "address 169.254.169.254 is the cloud metadata address"},
		{"https://127.0.0.1./", "127.0.0.1", "address 127.0.0.1 is loopback"},
		{"https://%31%32%37.0.0.1/", "", "malformed URL"},
		{"https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "address ::ffff:127.0.0.1 is loopback"},
		{"https://[::ffff:7f00:1]/", "::ffff:127.0.0.1", "address ::ffff:127.0.0.1 is loopback"},
		{"https://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254", "address ::ffff:169.254.169.254 is the cloud metadata address"},
		{"https://[64:ff9b::a00:1]/", "64:ff9b::a00:1", "address 64:ff9b::a00:1 is private"},
		{"https://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1", "address 64:ff9b::7f00:1 is loopback"},
		{"https://[64:ff9b:1::808:808]/", "64:ff9b:1::808:808", "address 64:ff9b:1::808:808 is local-use NAT64"},
		{"https://[2002:a00:1::1]/", "2002:a00:1::1", "address 2002:a00:1::1 is private"},
		{"https://[2001:0:a00:1::1]/", "2001:0:a00:1::1", "address 2001:0:a00:1::1 is private"},
		{"https://[2001:0:808:808::f5ff:fffe]/", "2001:0:808:808::f5ff:fffe", "address 2001:0:808:808::f5ff:fffe is private"},
		{"https://[fe80::1%25eth0]/", "fe80::1%eth0", "IPv6 zone identifiers are not allowed"},
		{"https://[fe80::1]/", "fe80::1", "address fe80::1 is link-local"},
		{"https://[fd00:ec2::254]/", "fd00:ec2::254", "address fd00:ec2::254 is the cloud metadata address"},
		{"https://[fc00::1]/", "fc00::1", "address fc00::1 is private (unique local)"},
		{"https://[::]/", "::", "address :: is unspecified"},
		{"https://[ff02::1]/", "ff02::1", "address ff02::1 is multicast"},
		{"https://[2001:db8::1]/", "2001:db8::1", "address 2001:db8::1 is documentation"},
		{"https://[::127.0.0.1]/", "::7f00:1", "address ::7f00:1 is not global unicast"},
		{"https://1.2.3.999/", "1.2.3.999", "malformed IPv4 literal"},
		{"https://1.2.3.4.5/", "1.2.3.4.5", "malformed IPv4 literal"},
		{"https://private.example.com/", "private.example.com", "address 10.0.0.5 is private"},
		{"https://mixed.example.com/", "mixed.example.com", "address 10.0.0.6 is private"},
		{"https://localhost/", "localhost", "address 127.0.0.1 is loopback"},
		// "*" never gets the operator's allowlist.
		{"https://api.example.com/", "api.example.com", "address 127.0.0.1 is loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			b := newBroker(t, testResolver())
			noDial(t, b)
			pol := &Policy{Allow: []Rule{{Host: "*"}}}
			_, err := b.Do(context.Background(), caller(pol), Request{URL: tt.url})
			got := denied(t, err)
			if diff := cmp.Diff(&DeniedError{Host: tt.host, Reason: tt.reason}, got); diff != "" {
				t.Errorf("refusal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyRefused(t *testing.T) {
	var hits int
	var mu sync.Mutex
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
	}))
	defer srv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	api := hostRule("api.example.com", srv)
	apiV1 := api
	apiV1.PathPrefixes = []string{"/v1/"}
	apiNoSlash := api
	apiNoSlash.PathPrefixes = []string{"/v1"}
	u := func(p string) string { return urlFor("api.example.com", srv, p) }

	tests := []struct {
		name   string
		allow  []Rule
		req    Request
		max    int64
		reason string
		host   string
	}{
		{name: "host not allowed", allow: []Rule{api}, req: Request{URL: urlFor("other.example.com", srv, "/")}, host: "other.example.com", reason: "host not in the tool's allowlist"},
		{name: "suffix does not match apex", allow: []Rule{{Host: "*.api.example.com"}}, req: Request{URL: "https://api.example.com/"}, host: "api.example.com", reason: "host not in the tool's allowlist"},
		{name: "other port", allow: []Rule{{Host: "api.example.com"}}, req: Request{URL: u("/")}, host: "api.example.com", reason: "host not in the tool's allowlist"},
		{name: "userinfo", allow: []Rule{api}, req: Request{URL: "https://user:pw@api.example.com/"}, reason: "URL may not carry user info"},
		{name: "ftp scheme", allow: []Rule{api}, req: Request{URL: "ftp://api.example.com/"}, reason: `scheme "ftp" is not http or https`},
		{name: "no host", allow: []Rule{api}, req: Request{URL: "https:///x"}, reason: "URL has no host"},
		{name: "relative", allow: []Rule{api}, req: Request{URL: "/x"}, reason: "URL must be absolute"},
		{name: "unicode host", allow: []Rule{api}, req: Request{URL: "https://ex\u00e4mple.com/"}, host: "ex\u00e4mple.com", reason: errNotASCII.Error()},
		{name: "http when rule says https", allow: []Rule{{Host: "api.example.com:" + portOf(plain)}}, req: Request{URL: urlFor("api.example.com", plain, "/")}, host: "api.example.com", reason: "scheme http not allowed for this host"},
		{name: "method not allowed", allow: []Rule{api}, req: Request{Method: "POST", URL: u("/"), Body: "x"}, host: "api.example.com", reason: "method POST not allowed for this host"},
		{name: "delete not listed", allow: []Rule{hostRule("api.example.com", srv, "GET", "POST")}, req: Request{Method: "delete", URL: u("/")}, host: "api.example.com", reason: "method DELETE not allowed for this host"},
		{name: "connect", allow: []Rule{hostRule("api.example.com", srv, "CONNECT")}, req: Request{Method: "CONNECT", URL: u("/")}, host: "api.example.com", reason: "invalid method"},
		{name: "bad method token", allow: []Rule{api}, req: Request{Method: "GET /x", URL: u("/")}, host: "api.example.com", reason: "invalid method"},
		{name: "path outside prefix", allow: []Rule{apiV1}, req: Request{URL: u("/admin")}, host: "api.example.com", reason: "path not in the tool's allowed prefixes"},
		{name: "dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1/../admin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "encoded dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1/%2e%2e/admin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "upper encoded dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1/%2E%2E/admin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "mixed dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1/.%2e/admin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "encoded slash dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1%2f..%2fadmin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "backslash dotdot", allow: []Rule{apiV1}, req: Request{URL: u("/v1/..%5cadmin")}, host: "api.example.com", reason: "path contains a dot segment"},
		{name: "encoded NUL", allow: []Rule{apiV1}, req: Request{URL: u("/v1/a%00b")}, host: "api.example.com", reason: "path contains a control character"},
		{name: "prefix is segment bound", allow: []Rule{apiNoSlash}, req: Request{URL: u("/v1admin")}, host: "api.example.com", reason: "path not in the tool's allowed prefixes"},
		{name: "CRLF in value", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X-A": "a\r\nHost: evil"}}, host: "api.example.com", reason: "header X-A has an invalid value"},
		{name: "LF in value", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X-A": "a\nb"}}, host: "api.example.com", reason: "header X-A has an invalid value"},
		{name: "NUL in value", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X-A": "a\x00b"}}, host: "api.example.com", reason: "header X-A has an invalid value"},
		{name: "CRLF in name", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X-A\r\nHost": "x"}}, host: "api.example.com", reason: "invalid header name"},
		{name: "space in name", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X A": "x"}}, host: "api.example.com", reason: "invalid header name"},
		{name: "colon in name", allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{"X:A": "x"}}, host: "api.example.com", reason: "invalid header name"},
		{name: "body over cap", allow: []Rule{hostRule("api.example.com", srv, "POST")}, max: 8, req: Request{Method: "POST", URL: u("/"), Body: "123456789"}, host: "api.example.com", reason: "request body over the 8-byte cap"},
	}
	for _, h := range []string{"Host", "authorization", "Proxy-Authorization", "Proxy-Connection", "Cookie", "Connection",
		"Transfer-Encoding", "Content-Length", "TE", "Upgrade", "Keep-Alive", "Forwarded", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Real-IP", "X-HTTP-Method-Override", "Expect"} {
		tests = append(tests, struct {
			name   string
			allow  []Rule
			req    Request
			max    int64
			reason string
			host   string
		}{name: "forbidden " + h, allow: []Rule{api}, req: Request{URL: u("/"), Headers: map[string]string{h: "x"}},
			host: "api.example.com", reason: "header " + http.CanonicalHeaderKey(h) + " may not be set by a tool"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, testResolver())
			noDial(t, b)
			pol := &Policy{Allow: tt.allow, MaxRequestBytes: tt.max}
			_, err := b.Do(context.Background(), caller(pol), tt.req)
			got := denied(t, err)
			if diff := cmp.Diff(&DeniedError{Host: tt.host, Reason: tt.reason}, got); diff != "" {
				t.Errorf("refusal (-want +got):\n%s", diff)
			}
		})
	}
	if hits != 0 {
		t.Errorf("server hit %d times, want 0", hits)
	}
}

func portOf(srv *httptest.Server) string {
	u, _ := url.Parse(srv.URL)
	return u.Port()
}

func TestAllowedVariants(t *testing.T) {
	var gotPath, gotMethod, gotBody string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotPath, gotMethod, gotBody = r.URL.EscapedPath(), r.Method, string(b)
	}))
	defer srv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotMethod, gotBody = r.URL.EscapedPath(), r.Method, ""
	}))
	defer plain.Close()
	api := hostRule("api.example.com", srv, "GET", "POST")
	api.PathPrefixes = []string{"/v1/"}
	tests := []struct {
		name                  string
		allow                 []Rule
		req                   Request
		path, method, reqBody string
	}{
		{"prefix", []Rule{api}, Request{URL: urlFor("api.example.com", srv, "/v1/items")}, "/v1/items", "GET", ""},
		{"encoded slash kept", []Rule{api}, Request{URL: urlFor("api.example.com", srv, "/v1/a%2Fb")}, "/v1/a%2Fb", "GET", ""},
		{"post body", []Rule{api}, Request{Method: "post", URL: urlFor("api.example.com", srv, "/v1/x"), Body: "payload"}, "/v1/x", "POST", "payload"},
		{"suffix rule", []Rule{{Host: "*.example.com:" + portOf(srv)}}, Request{URL: urlFor("api.example.com", srv, "/")}, "/", "GET", ""},
		{"http when rule says http", []Rule{hostRule("api.example.com", plain)}, Request{URL: urlFor("api.example.com", plain, "/p")}, "/p", "GET", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, testResolver())
			resp, err := b.Do(context.Background(), caller(&Policy{Allow: tt.allow}), tt.req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.Status != 200 {
				t.Errorf("status = %d, want 200", resp.Status)
			}
			got := []string{gotPath, gotMethod, gotBody}
			if diff := cmp.Diff([]string{tt.path, tt.method, tt.reqBody}, got); diff != "" {
				t.Errorf("server saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResponseCap(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("a", 10)+strings.Repeat("b", 90))
	}))
	defer srv.Close()
	tests := []struct {
		max       int64
		body      string
		truncated bool
	}{
		{10, strings.Repeat("a", 10), true},
		{100, strings.Repeat("a", 10) + strings.Repeat("b", 90), false},
		{101, strings.Repeat("a", 10) + strings.Repeat("b", 90), false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.max), func(t *testing.T) {
			b := newBroker(t, testResolver())
			pol := &Policy{Allow: []Rule{hostRule("api.example.com", srv)}, MaxResponseBytes: tt.max}
			resp, err := b.Do(context.Background(), caller(pol), Request{URL: urlFor("api.example.com", srv, "/")})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.Body != tt.body || resp.Truncated != tt.truncated {
				t.Errorf("got body %d bytes truncated=%v, want %d bytes truncated=%v", len(resp.Body), resp.Truncated, len(tt.body), tt.truncated)
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	var mu sync.Mutex
	var log []string // method path body, guarded by mu
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		log = append(log, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
		switch r.URL.Path {
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "https://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/to-internal":
			http.Redirect(w, r, "https://internal.example.com/", http.StatusMovedPermanently)
		case "/to-127":
			http.Redirect(w, r, "https://2130706433:"+r.Host[strings.LastIndex(r.Host, ":")+1:]+"/done", http.StatusFound)
		case "/to-disallowed-path":
			http.Redirect(w, r, "/admin", http.StatusFound)
		case "/see-other":
			http.Redirect(w, r, "/done", http.StatusSeeOther)
		case "/found":
			http.Redirect(w, r, "/done", http.StatusFound)
		case "/temporary":
			http.Redirect(w, r, "/done", http.StatusTemporaryRedirect)
		case "/done":
			fmt.Fprint(w, "done")
		}
	}))
	defer srv.Close()
	api := hostRule("api.example.com", srv, "GET", "POST")
	api.PathPrefixes = []string{"/loop", "/to-metadata", "/to-internal", "/to-127", "/to-disallowed-path", "/see-other", "/found", "/temporary", "/done"}
	pol := &Policy{Allow: []Rule{api, {Host: "internal.example.com"}, {Host: "*"}}}
	u := func(p string) string { return urlFor("api.example.com", srv, p) }

	t.Run("refused", func(t *testing.T) {
		tests := []struct {
			path string
			want *DeniedError
			hits int
		}{
			{"/to-metadata", &DeniedError{Host: "169.254.169.254", Reason: "address 169.254.169.254 is the cloud metadata address"}, 1},
			{"/to-internal", &DeniedError{Host: "internal.example.com", Reason: "address 10.0.0.9 is private"}, 1},
			{"/to-127", &DeniedError{Host: "127.0.0.1", Reason: "host not in the tool's allowlist"}, 1},
			{"/to-disallowed-path", &DeniedError{Host: "api.example.com", Reason: "path not in the tool's allowed prefixes"}, 1},
			{"/loop", &DeniedError{Host: "api.example.com", Reason: "more than 3 redirects"}, 4},
		}
		for _, tt := range tests {
			t.Run(tt.path, func(t *testing.T) {
				mu.Lock()
				log = nil
				mu.Unlock()
				b := newBroker(t, testResolver())
				_, err := b.Do(context.Background(), caller(pol), Request{URL: u(tt.path)})
				if diff := cmp.Diff(tt.want, denied(t, err)); diff != "" {
					t.Errorf("refusal (-want +got):\n%s", diff)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(log) != tt.hits {
					t.Errorf("server hits = %q, want %d", log, tt.hits)
				}
			})
		}
	})

	t.Run("followed", func(t *testing.T) {
		tests := []struct {
			name string
			req  Request
			want []string
		}{
			{"303 POST becomes GET", Request{Method: "POST", URL: u("/see-other"), Body: "b"}, []string{"POST /see-other b", "GET /done "}},
			{"302 POST becomes GET", Request{Method: "POST", URL: u("/found"), Body: "b"}, []string{"POST /found b", "GET /done "}},
			{"307 keeps POST and body", Request{Method: "POST", URL: u("/temporary"), Body: "b"}, []string{"POST /temporary b", "POST /done b"}},
			{"302 GET", Request{URL: u("/found")}, []string{"GET /found ", "GET /done "}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				mu.Lock()
				log = nil
				mu.Unlock()
				b := newBroker(t, testResolver())
				resp, err := b.Do(context.Background(), caller(pol), tt.req)
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if resp.Body != "done" || resp.URL != u("/done") {
					t.Errorf("got body %q url %q, want done at %s", resp.Body, resp.URL, u("/done"))
				}
				mu.Lock()
				defer mu.Unlock()
				if diff := cmp.Diff(tt.want, log); diff != "" {
					t.Errorf("server saw (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("not followed when disabled", func(t *testing.T) {
		b := newBroker(t, testResolver())
		b.MaxRedirects = -1
		resp, err := b.Do(context.Background(), caller(pol), Request{URL: u("/found")})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		if resp.Status != http.StatusFound || resp.Headers["Location"] != "/done" {
			t.Errorf("got %d Location %q, want 302 to /done", resp.Status, resp.Headers["Location"])
		}
	})
}

func TestPolicyTimeout(t *testing.T) {
	// The handler never answers before the test ends. Had it answered when
	// the client went away, a TLS close_notify could reach it before the
	// client's socket closed, and the client would read that late answer
	// as a success (net/http prefers a response racing the cancellation).
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	tests := []struct {
		name    string
		timeout time.Duration
		now     func() time.Time
		ctx     func() (context.Context, context.CancelFunc)
	}{
		{name: "policy timeout on a hanging server", timeout: 50 * time.Millisecond},
		{name: "clock past the deadline", now: func() time.Time { return time.Now().Add(-time.Hour) }},
		{name: "caller deadline is shorter", timeout: time.Hour, ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, testResolver())
			b.Now = tt.now
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			pol := &Policy{Allow: []Rule{hostRule("api.example.com", srv)}, Timeout: tt.timeout}
			_, err := b.Do(ctx, caller(pol), Request{URL: urlFor("api.example.com", srv, "/")})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error = %v, want deadline exceeded", err)
			}
		})
	}
}
