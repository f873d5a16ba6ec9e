package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Defaults applied when a Policy or Broker field is zero.
const (
	DefaultMaxRequestBytes  = 1 << 20
	DefaultMaxResponseBytes = 5 << 20
	DefaultTimeout          = 30 * time.Second
	DefaultMaxRedirects     = 3

	maxURLBytes    = 8 << 10
	maxHeaders     = 64
	maxHeaderBytes = 32 << 10
)

func (p *Policy) maxRequestBytes() int64 {
	if p.MaxRequestBytes > 0 {
		return p.MaxRequestBytes
	}
	return DefaultMaxRequestBytes
}

func (p *Policy) maxResponseBytes() int64 {
	if p.MaxResponseBytes > 0 {
		return p.MaxResponseBytes
	}
	return DefaultMaxResponseBytes
}

func (p *Policy) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}

func (p *Policy) grants(name string) bool {
	for _, n := range p.Credentials {
		if n == name {
			return true
		}
	}
	return false
}

// target is a request URL that passed URL parsing: the URL the broker will
// send (before any credential), its normalised host and port.
type target struct {
	u    *url.URL
	host host
	port int
	// path is the decoded, cleaned path the rules are checked against.
	path string
}

// hostPort is the host and port as they appear in the target's URL.
func (t target) authority() string {
	h := t.host.Name
	if t.host.IsIP() && t.host.Addr.Is6() {
		h = "[" + h + "]"
	}
	if t.port == defaultPort(t.u.Scheme) {
		return h
	}
	return h + ":" + strconv.Itoa(t.port)
}

func defaultPort(scheme string) int {
	if scheme == "http" {
		return 80
	}
	return 443
}

// parseTarget parses and normalises a request URL. The returned error's
// text is a refusal reason.
func parseTarget(raw string) (target, string, error) {
	if len(raw) > maxURLBytes {
		return target{}, "", errors.New("URL too long")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, "", errors.New("malformed URL")
	}
	if u.Opaque != "" || !u.IsAbs() {
		return target{}, "", errors.New("URL must be absolute")
	}
	if u.User != nil {
		return target{}, "", errors.New("URL may not carry user info")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return target{}, "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	hostname := u.Hostname()
	if hostname == "" {
		return target{}, "", errors.New("URL has no host")
	}
	h, err := parseHost(hostname)
	if err != nil {
		return target{}, hostname, err
	}
	port := defaultPort(u.Scheme)
	if ps := u.Port(); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return target{}, h.Name, errors.New("invalid port")
		}
		port = n
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	if !strings.HasPrefix(p, "/") {
		return target{}, h.Name, errors.New("path must start with /")
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return target{}, h.Name, errors.New("path contains a control character")
		}
	}
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return target{}, h.Name, errors.New("path contains a dot segment")
		}
	}
	out := &url.URL{Scheme: u.Scheme, Path: p, RawPath: u.RawPath, RawQuery: u.RawQuery}
	t := target{u: out, host: h, port: port, path: path.Clean(p)}
	out.Host = t.authority()
	return t, h.Name, nil
}

// hostPattern is a parsed Rule.Host.
type hostPattern struct {
	any    bool
	suffix string // "example.com" for "*.example.com"
	exact  string // normalised name or canonical IP
	port   int    // 0: the scheme's default port
}

func parseHostPattern(s string) (hostPattern, error) {
	var hp hostPattern
	s = strings.TrimSpace(s)
	if hp2, port, ok := splitPatternPort(s); ok {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return hostPattern{}, fmt.Errorf("rule host %q: invalid port", s)
		}
		s, hp.port = hp2, n
	}
	switch {
	case s == "*":
		hp.any = true
	case strings.HasPrefix(s, "*."):
		h, err := parseHost(s[2:])
		if err != nil || h.IsIP() || !strings.Contains(h.Name, ".") {
			return hostPattern{}, fmt.Errorf("rule host %q: want *.domain with at least two labels", s)
		}
		hp.suffix = h.Name
	default:
		if strings.Contains(s, "*") {
			return hostPattern{}, fmt.Errorf("rule host %q: only a leading *. or a lone * is allowed", s)
		}
		h, err := parseHost(s)
		if err != nil {
			return hostPattern{}, fmt.Errorf("rule host %q: %w", s, err)
		}
		hp.exact = h.Name
	}
	return hp, nil
}

// splitPatternPort splits "host:port" and "[v6]:port"; a bare IPv6 literal
// has no port.
func splitPatternPort(s string) (string, string, bool) {
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err == nil {
			return h, p, true
		}
	}
	return s, "", false
}

func (hp hostPattern) match(t target) bool {
	want := hp.port
	if want == 0 {
		want = defaultPort(t.u.Scheme)
	}
	if t.port != want {
		return false
	}
	switch {
	case hp.any:
		return true
	case hp.suffix != "":
		return !t.host.IsIP() && strings.HasSuffix(t.host.Name, "."+hp.suffix)
	default:
		return t.host.Name == hp.exact
	}
}

// Validate reports whether the rule is well formed. The broker treats an
// invalid rule as matching nothing; manifest loading should call Validate
// and refuse to start.
func (r Rule) Validate() error {
	var errs []error
	if s := strings.ToLower(r.Scheme); s != "" && s != "http" && s != "https" {
		errs = append(errs, fmt.Errorf("rule scheme %q: want http or https", r.Scheme))
	}
	if hp, err := parseHostPattern(r.Host); err != nil {
		errs = append(errs, err)
	} else if hp.any && r.Trusted {
		errs = append(errs, errors.New(`rule host "*" may not be trusted: name the hosts you trust`))
	}
	for _, m := range r.Methods {
		if !validToken(m) || strings.EqualFold(m, http.MethodConnect) {
			errs = append(errs, fmt.Errorf("rule method %q is not allowed", m))
		}
	}
	for _, p := range r.PathPrefixes {
		if c := path.Clean(p); !strings.HasPrefix(p, "/") || (c != p && c+"/" != p) {
			errs = append(errs, fmt.Errorf("rule path prefix %q: want a clean absolute path", p))
		}
	}
	return errors.Join(errs...)
}

func (r Rule) allowsMethod(m string) bool {
	if len(r.Methods) == 0 {
		return m == http.MethodGet || m == http.MethodHead
	}
	for _, am := range r.Methods {
		if strings.EqualFold(am, m) {
			return true
		}
	}
	return false
}

func (r Rule) allowsPath(p string) bool {
	if len(r.PathPrefixes) == 0 {
		return true
	}
	for _, pre := range r.PathPrefixes {
		if pre == "" {
			continue
		}
		if strings.HasSuffix(pre, "/") {
			if strings.HasPrefix(p+"/", pre) {
				return true
			}
			continue
		}
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

func (r Rule) scheme() string {
	if r.Scheme == "" {
		return "https"
	}
	return strings.ToLower(r.Scheme)
}

// match finds the rule allowing method on t. It prefers a rule naming the
// host over a lone "*", since only the former lets the operator's
// private-range allowlist apply. It returns the rule, or a refusal reason
// from the furthest stage any rule reached.
func (p *Policy) match(method string, t target) (Rule, string) {
	reason, stage := "host not in the tool's allowlist", 0
	var found *Rule
	for _, wantAny := range []bool{false, true} {
		for i := range p.Allow {
			r := &p.Allow[i]
			hp, err := parseHostPattern(r.Host)
			if err != nil || hp.any != wantAny || !hp.match(t) {
				continue
			}
			switch {
			case r.scheme() != t.u.Scheme:
				if stage < 1 {
					reason, stage = fmt.Sprintf("scheme %s not allowed for this host", t.u.Scheme), 1
				}
			case !r.allowsMethod(method):
				if stage < 2 {
					reason, stage = fmt.Sprintf("method %s not allowed for this host", method), 2
				}
			case !r.allowsPath(t.path):
				if stage < 3 {
					reason, stage = "path not in the tool's allowed prefixes", 3
				}
			default:
				found = r
			}
			if found != nil {
				return *found, ""
			}
		}
	}
	return Rule{}, reason
}

// forbiddenHeader reports whether a tool may not set the header: hop-by-hop
// and framing headers the transport owns, authentication and cookies (the
// broker injects credentials), and proxy/forwarding headers that let a
// caller impersonate a client address or override the method.
func forbiddenHeader(canonical string) bool {
	l := strings.ToLower(canonical)
	switch l {
	case "host", "authorization", "cookie", "cookie2", "set-cookie", "set-cookie2",
		"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
		"upgrade", "expect", "forwarded", "via", "x-real-ip", "x-client-ip",
		"true-client-ip", "cf-connecting-ip", "x-cluster-client-ip",
		"x-http-method-override", "x-http-method", "x-method-override",
		"x-original-url", "x-rewrite-url", "http2-settings":
		return true
	}
	return strings.HasPrefix(l, "proxy-") || strings.HasPrefix(l, "x-forwarded-")
}

// checkHeaders validates guest-supplied headers and returns them as an
// http.Header, or a refusal reason.
func checkHeaders(in map[string]string) (http.Header, string) {
	if len(in) > maxHeaders {
		return nil, fmt.Sprintf("more than %d headers", maxHeaders)
	}
	h := make(http.Header, len(in))
	total := 0
	for k, v := range in {
		total += len(k) + len(v)
		if !validToken(k) {
			return nil, "invalid header name"
		}
		ck := http.CanonicalHeaderKey(k)
		if !validHeaderValue(v) {
			return nil, fmt.Sprintf("header %s has an invalid value", ck)
		}
		if forbiddenHeader(ck) {
			return nil, fmt.Sprintf("header %s may not be set by a tool", ck)
		}
		h.Set(ck, v)
	}
	if total > maxHeaderBytes {
		return nil, "headers too large"
	}
	return h, ""
}

// validToken reports whether s is an RFC 9110 token (header names, methods).
func validToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters (CR, LF, NUL and the rest)
// except horizontal tab.
func validHeaderValue(s string) bool {
	if len(s) > 8<<10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// resolve returns the addresses for t, each checked; any forbidden address
// refuses the whole name.
func (b *Broker) resolve(ctx context.Context, t target, allowPrivate bool) ([]netip.Addr, string, error) {
	allow := b.AllowPrivate
	if !allowPrivate {
		allow = nil
	}
	if t.host.IsIP() {
		if r := checkAddr(t.host.Addr, allow); r != "" {
			return nil, r, nil
		}
		return []netip.Addr{t.host.Addr.Unmap()}, "", nil
	}
	res := b.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	addrs, err := res.LookupNetIP(ctx, "ip", t.host.Name)
	if err != nil {
		return nil, "", fmt.Errorf("egress: resolve %q: %w", t.host.Name, err)
	}
	if len(addrs) == 0 {
		return nil, "name has no addresses", nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if r := checkAddr(a, allow); r != "" {
			return nil, r, nil
		}
		out = append(out, a.WithZone("").Unmap())
	}
	return out, "", nil
}
