package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resolver looks up the addresses of a name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Broker makes HTTP requests on behalf of tools. It checks each request (and
// each redirect hop) against the tool's Policy and the SSRF rules, resolves
// the host once, connects only to an address it checked, verifies TLS
// against the original host name, and injects credentials through the
// CredentialSource seam.
//
// The zero value is ready to use. Fields must not change after the first
// call to Do; a Broker is safe for concurrent use.
type Broker struct {
	// AllowPrivate lists ranges the operator lets tools reach although the
	// SSRF rules would refuse them (an internal API, a test server). It
	// applies only to rules naming a host or suffix, never to a "*" rule.
	// Empty (the default) allows nothing private.
	AllowPrivate []netip.Prefix
	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver Resolver
	// TLSConfig is the base client TLS configuration; nil means the system
	// roots. The broker always sets ServerName to the request's host and
	// never skips verification, whatever this says.
	TLSConfig *tls.Config
	// MaxRedirects is how many redirects one request may follow; 0 means
	// DefaultMaxRedirects and a negative value follows none (the 3xx
	// response is returned to the tool).
	MaxRedirects int
	// Credentials provides credentials to inject; nil means a request
	// naming a credential is refused.
	Credentials CredentialSource
	// Checker scans outbound requests and redacts responses; nil means
	// no outbound scan, and only the broker's own raw-value redaction.
	Checker LeakChecker
	// Now is the clock for per-request deadlines; nil means time.Now.
	Now func() time.Time
	// Taint guards the requests of tainted callers (Caller.Tainted); nil
	// trusts no host and bounds the URL's data by DefaultTaintedURLData.
	Taint *Taint

	// dialAddr replaces the TCP dial in tests, so a test can prove no
	// connection was attempted; nil means a net.Dialer.
	dialAddr func(ctx context.Context, addr string) (net.Conn, error)

	once   sync.Once
	client *http.Client
}

// Redacted replaces a credential value echoed back in a response.
const Redacted = "[REDACTED]"

// dialPlan carries the checked addresses of one hop to the transport's
// dialers through the request context.
type dialPlan struct {
	name  string // host name for SNI and certificate verification
	port  int
	addrs []netip.Addr
}

type dialPlanKey struct{}

func (b *Broker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Broker) maxRedirects() int {
	switch {
	case b.MaxRedirects < 0:
		return 0
	case b.MaxRedirects == 0:
		return DefaultMaxRedirects
	}
	return b.MaxRedirects
}

func (b *Broker) httpClient() *http.Client {
	b.once.Do(func() {
		tr := &http.Transport{
			Proxy:                  nil, // never a proxy from the environment
			DialContext:            b.dial,
			DialTLSContext:         b.dialTLS,
			MaxResponseHeaderBytes: 64 << 10,
			MaxIdleConnsPerHost:    4,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    10 * time.Second,
		}
		b.client = &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	})
	return b.client
}

// CloseIdleConnections closes pooled connections.
func (b *Broker) CloseIdleConnections() {
	b.httpClient().CloseIdleConnections()
}

// dial connects to one of the addresses checked for this hop; it never
// resolves addr itself.
func (b *Broker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p, ok := ctx.Value(dialPlanKey{}).(dialPlan)
	if !ok {
		return nil, errors.New("egress: dial without a checked address")
	}
	want := net.JoinHostPort(p.name, strconv.Itoa(p.port))
	if h, port, err := net.SplitHostPort(addr); err != nil || net.JoinHostPort(h, port) != want {
		return nil, fmt.Errorf("egress: dial %q does not match the checked host %q", addr, want)
	}
	var d net.Dialer
	var errs []error
	for _, a := range p.addrs {
		ap := netip.AddrPortFrom(a, uint16(p.port)).String()
		var (
			c   net.Conn
			err error
		)
		if b.dialAddr != nil {
			c, err = b.dialAddr(ctx, ap)
		} else {
			c, err = d.DialContext(ctx, "tcp", ap)
		}
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("egress: connect: %w", errors.Join(errs...))
}

// dialTLS connects like dial and verifies the server's certificate against
// the original host name.
func (b *Broker) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := b.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p := ctx.Value(dialPlanKey{}).(dialPlan)
	var cfg *tls.Config
	if b.TLSConfig != nil {
		cfg = b.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = p.name
	cfg.InsecureSkipVerify = false
	cfg.NextProtos = []string{"http/1.1"}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("egress: tls: %w", err)
	}
	return tc, nil
}

// hop is one request of a redirect chain.
type hop struct {
	method  string
	url     string
	body    string
	headers http.Header
}

// Do performs r for caller c. Refusals are *DeniedError; transport failures
// are wrapped errors that name the host but never the URL's query, headers
// or body. The whole call, redirects included, is bounded by
// c.Policy.Timeout inside ctx's deadline.
func (b *Broker) Do(ctx context.Context, c Caller, r Request) (*Response, error) {
	pol := c.Policy
	if pol == nil {
		return nil, &DeniedError{Reason: "tool has no network policy"}
	}
	ctx, cancel := context.WithDeadline(ctx, b.now().Add(pol.timeout()))
	defer cancel()

	_, first, _ := parseTarget(r.URL) // for naming the host in early refusals
	method := strings.ToUpper(r.Method)
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) || method == http.MethodConnect {
		return nil, &DeniedError{Host: first, Reason: "invalid method"}
	}
	hdr, reason := checkHeaders(r.Headers)
	if reason != "" {
		return nil, &DeniedError{Host: first, Reason: reason}
	}
	if max := pol.maxRequestBytes(); int64(len(r.Body)) > max {
		return nil, &DeniedError{Host: first, Reason: fmt.Sprintf("request body over the %d-byte cap", max)}
	}
	if r.Credential != "" && !pol.grants(r.Credential) {
		return nil, &DeniedError{Host: first, Reason: fmt.Sprintf("credential %q is not granted to this tool", r.Credential)}
	}

	var (
		cur      = hop{method: method, url: r.URL, body: r.Body, headers: hdr}
		cred     Credential
		credFor  string // authority the credential was issued for
		secrets  [][]byte
		maxHops  = b.maxRedirects()
		redirect = 0
	)
	for {
		t, hostName, err := parseTarget(cur.url)
		if err != nil {
			return nil, &DeniedError{Host: hostName, Reason: err.Error()}
		}
		host := t.host.Name
		rule, reason := pol.match(cur.method, t)
		if reason != "" {
			return nil, &DeniedError{Host: host, Reason: reason}
		}
		if c.Tainted != "" && !c.Approved {
			if why := b.Taint.check(pol, cur.method, t, cur.body); why != "" {
				reason := "the request needs the user's approval in a conversation that read untrusted content, because " + why
				if redirect > 0 {
					// The model may ask for the target itself, which asks
					// the user; the URL is its own request's doing.
					reason = "a redirect needs the user's approval in a conversation that read untrusted content, because " + why +
						"; request " + clipURL(t.u.String(), 500) + " directly so that the user is asked"
				}
				return nil, &DeniedError{Host: host, Reason: reason}
			}
		}
		out := Request{Method: cur.method, URL: t.u.String(), Headers: headerMap(cur.headers), Body: cur.body, Credential: r.Credential}
		addrs, err := b.vet(ctx, c, out, rule, t)
		if err != nil {
			return nil, err
		}

		// Credential: granted name (checked above), https, and the source
		// agrees for this host. Re-asked whenever the origin changes.
		if r.Credential != "" && (cred == nil || credFor != t.u.Scheme+"://"+t.u.Host) {
			cred = nil
			first := redirect == 0
			switch {
			case t.u.Scheme != "https":
				if first {
					return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("credential %q may only be sent over https", r.Credential)}
				}
			case b.Credentials == nil:
				return nil, &DeniedError{Host: host, Reason: "no credential source is configured"}
			default:
				hostPort := net.JoinHostPort(host, strconv.Itoa(t.port))
				got, err := b.Credentials.Credential(ctx, c, r.Credential, hostPort)
				switch {
				case errors.Is(err, ErrNoCredential):
					if first {
						return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("credential %q is not available for this host", r.Credential)}
					}
				case err != nil:
					return nil, fmt.Errorf("egress: credential %q for %q: %w", r.Credential, host, err)
				case got != nil:
					cred, credFor = got, t.u.Scheme+"://"+t.u.Host
					secrets = append(secrets, got.Secrets()...)
				}
			}
		}

		sendURL := *t.u
		h := cur.headers.Clone()
		if cred != nil {
			cred.Apply(h, &sendURL)
		}
		var body io.Reader
		if cur.body != "" {
			body = strings.NewReader(cur.body)
		}
		plan := dialPlan{name: host, port: t.port, addrs: addrs}
		req, err := http.NewRequestWithContext(context.WithValue(ctx, dialPlanKey{}, plan), cur.method, sendURL.String(), body)
		if err != nil {
			return nil, fmt.Errorf("egress: build request to %q: %w", host, err)
		}
		req.Header = h
		resp, err := b.httpClient().Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // its text holds the URL, which may hold a credential
			}
			return nil, fmt.Errorf("egress: %s %q: %w", cur.method, host, err)
		}

		loc := resp.Header.Get("Location")
		if isRedirect(resp.StatusCode) && loc != "" && maxHops > 0 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if redirect >= maxHops {
				return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("more than %d redirects", maxHops)}
			}
			next, err := t.u.Parse(loc)
			if err != nil {
				return nil, &DeniedError{Host: host, Reason: "malformed redirect location"}
			}
			next.Fragment, next.RawFragment = "", ""
			cur.url = next.String()
			if resp.StatusCode == http.StatusSeeOther && cur.method != http.MethodHead ||
				(resp.StatusCode == http.StatusMovedPermanently || resp.StatusCode == http.StatusFound) && cur.method == http.MethodPost {
				cur.method = http.MethodGet
				cur.body = ""
				cur.headers = cur.headers.Clone()
				cur.headers.Del("Content-Type")
			}
			redirect++
			continue
		}
		return b.readResponse(c, pol, resp, t.u.String(), secrets)
	}
}

// clipURL is u cut to at most n bytes, marked "…" when cut.
func clipURL(u string, n int) string {
	if len(u) <= n {
		return u
	}
	return u[:n] + "…"
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// readResponse reads at most the policy's cap of body, redacts injected
// values and filters headers.
func (b *Broker) readResponse(c Caller, pol *Policy, resp *http.Response, finalURL string, secrets [][]byte) (*Response, error) {
	defer resp.Body.Close()
	limit := pol.maxResponseBytes()
	// Read a little past the cap so a secret straddling it is redacted
	// whole before the body is cut.
	var extra int64
	for _, s := range secrets {
		extra = max(extra, int64(len(s)))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+extra+1))
	if err != nil {
		return nil, fmt.Errorf("egress: read response from %q: %w", resp.Request.URL.Hostname(), err)
	}
	truncated := int64(len(data)) > limit
	body := b.redact(c, secrets, string(data))
	if int64(len(body)) > limit {
		body = body[:limit]
		truncated = true
	}
	out := &Response{
		Status:    resp.StatusCode,
		Body:      body,
		Truncated: truncated,
		URL:       b.redact(c, secrets, finalURL),
	}
	for k, vs := range resp.Header {
		switch k {
		case "Set-Cookie", "Set-Cookie2":
			continue
		}
		if out.Headers == nil {
			out.Headers = make(map[string]string, len(resp.Header))
		}
		out.Headers[k] = b.redact(c, secrets, strings.Join(vs, ", "))
	}
	return out, nil
}

// redact removes injected values from s: the checker's redaction when one is
// configured, then a plain replacement of every raw value.
func (b *Broker) redact(c Caller, secrets [][]byte, s string) string {
	if len(secrets) == 0 {
		return s
	}
	if b.Checker != nil {
		s = b.Checker.RedactInbound(c.Principal, secrets, s)
	}
	for _, sec := range secrets {
		if len(sec) == 0 {
			continue
		}
		if strings.Contains(s, string(sec)) {
			b, ok := replaceSecret([]byte(s), sec)
			if !ok {
				return Redacted // the marker keeps spelling the value: nothing is shown
			}
			s = string(b)
		}
	}
	return s
}

func headerMap(h http.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]string, len(h))
	for k := range h {
		m[k] = h.Get(k)
	}
	return m
}

// vet is the last check of a request (or a redirect's hop) to t that its
// rule allows: the outbound leak check of out, then t's addresses, each
// checked against the SSRF rules unless the rule names the host exactly.
// It returns the addresses to dial. Do and the RoundTripper share it.
func (b *Broker) vet(ctx context.Context, c Caller, out Request, rule Rule, t target) ([]netip.Addr, error) {
	host := t.host.Name
	if b.Checker != nil {
		if err := b.Checker.CheckOutbound(ctx, c, out); err != nil {
			var de *DeniedError
			if errors.As(err, &de) {
				return nil, de
			}
			return nil, &DeniedError{Host: host, Reason: "refused by the outbound leak check"}
		}
	}
	hp, _ := parseHostPattern(rule.Host)
	addrs, reason, err := b.resolve(ctx, t, !hp.any)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		return nil, &DeniedError{Host: host, Reason: reason}
	}
	return addrs, nil
}
