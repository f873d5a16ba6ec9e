package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RoundTripper returns an http.RoundTripper that sends each request for
// caller c through the broker's checks, as Do does for a tool's request:
// the caller's Policy (allowlist, methods, paths, request size), the SSRF
// rules, the taint guard, the outbound leak check, and the credential
// named credential ("" for none) injected at the edge from the
// CredentialSource. It is for clients that speak a protocol over HTTP
// themselves (MCP): the response body is streamed, not buffered, so a
// long-lived event stream works.
//
// Unlike Do it follows no redirect: a 3xx answer is refused with a
// *DeniedError naming where it pointed. The response body is cut with an
// error after Policy.MaxResponseBytes, and every injected value in it (and
// in its headers) is replaced by Redacted as it streams. Policy.Timeout
// bounds the wait for the response's headers; the request's context
// bounds the rest. The client never sees the credential: an Authorization
// or Cookie header it sets is refused.
func (b *Broker) RoundTripper(c Caller, credential string) http.RoundTripper {
	return &roundTripper{b: b, c: c, credential: credential}
}

type roundTripper struct {
	b          *Broker
	c          Caller
	credential string
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	b, c := rt.b, rt.c
	pol := c.Policy
	closeBody := func() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
	}
	if pol == nil {
		closeBody()
		return nil, &DeniedError{Reason: "tool has no network policy"}
	}
	host := req.URL.Hostname()
	var body []byte
	if req.Body != nil {
		data, err := io.ReadAll(io.LimitReader(req.Body, pol.maxRequestBytes()+1))
		closeBody()
		if err != nil {
			return nil, fmt.Errorf("egress: read request body for %q: %w", host, err)
		}
		if int64(len(data)) > pol.maxRequestBytes() {
			return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("request body over the %d-byte cap", pol.maxRequestBytes())}
		}
		body = data
	}
	method := strings.ToUpper(req.Method)
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) || method == http.MethodConnect {
		return nil, &DeniedError{Host: host, Reason: "invalid method"}
	}
	in := make(map[string]string, len(req.Header))
	for k, vs := range req.Header {
		in[k] = strings.Join(vs, ", ")
	}
	hdr, reason := checkHeaders(in)
	if reason != "" {
		return nil, &DeniedError{Host: host, Reason: reason}
	}
	if rt.credential != "" && !pol.grants(rt.credential) {
		return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("credential %q is not granted to this tool", rt.credential)}
	}
	t, hostName, err := parseTarget(req.URL.String())
	if err != nil {
		return nil, &DeniedError{Host: hostName, Reason: err.Error()}
	}
	host = t.host.Name
	rule, reason := pol.match(method, t)
	if reason != "" {
		return nil, &DeniedError{Host: host, Reason: reason}
	}
	if c.Tainted != "" && !c.Approved {
		if why := b.Taint.check(pol, method, t, string(body)); why != "" {
			return nil, &DeniedError{Host: host, Reason: "the request needs the user's approval in a conversation that read untrusted content, because " + why}
		}
	}
	ctx := req.Context()
	addrs, err := b.vet(ctx, c, Request{Method: method, URL: t.u.String(), Headers: headerMap(hdr), Body: string(body), Credential: rt.credential}, rule, t)
	if err != nil {
		return nil, err
	}
	var (
		cred    Credential
		secrets [][]byte
	)
	if rt.credential != "" {
		switch {
		case t.u.Scheme != "https":
			return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("credential %q may only be sent over https", rt.credential)}
		case b.Credentials == nil:
			return nil, &DeniedError{Host: host, Reason: "no credential source is configured"}
		}
		got, err := b.Credentials.Credential(ctx, c, rt.credential, net.JoinHostPort(host, strconv.Itoa(t.port)))
		switch {
		case errors.Is(err, ErrNoCredential):
			return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("credential %q is not available for this host", rt.credential)}
		case err != nil:
			return nil, fmt.Errorf("egress: credential %q for %q: %w", rt.credential, host, err)
		case got != nil:
			cred = got
			secrets = got.Secrets()
		}
	}

	sendURL := *t.u
	h := hdr.Clone()
	if cred != nil {
		cred.Apply(h, &sendURL)
	}
	// The response's headers must come within the policy's timeout; the
	// body then streams as long as the request's context lasts.
	sctx, cancel := context.WithCancel(context.WithValue(ctx, dialPlanKey{}, dialPlan{name: host, port: t.port, addrs: addrs}))
	timer := time.AfterFunc(pol.timeout(), cancel)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(sctx, method, sendURL.String(), rd)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, fmt.Errorf("egress: build request to %q: %w", host, err)
	}
	out.Header = h
	resp, err := b.httpClient().Do(out)
	if !timer.Stop() && err == nil {
		// The timer fired as the headers came: the context is cancelled.
		_ = resp.Body.Close()
		err = context.Canceled
	}
	if err != nil {
		cancel()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text holds the URL, which may hold a credential
		}
		if ctx.Err() == nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("no response within %s", pol.timeout())
		}
		return nil, fmt.Errorf("egress: %s %q: %w", method, host, err)
	}
	if isRedirect(resp.StatusCode) {
		_ = resp.Body.Close()
		cancel()
		where := "elsewhere"
		if loc, err := t.u.Parse(resp.Header.Get("Location")); err == nil && loc.Host != "" {
			where = loc.Scheme + "://" + loc.Host
		}
		return nil, &DeniedError{Host: host, Reason: fmt.Sprintf("the server redirected to %s; redirects are not followed for this client", clipURL(where, 300))}
	}
	for k, vs := range resp.Header {
		switch k {
		case "Set-Cookie", "Set-Cookie2":
			resp.Header.Del(k)
			continue
		}
		for i := range vs {
			vs[i] = b.redact(c, secrets, vs[i])
		}
	}
	resp.Body = &streamBody{rc: resp.Body, cancel: cancel, secrets: secrets, limit: pol.maxResponseBytes(), host: host}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return resp, nil
}

// streamBody is a response body cut at a cap, with injected values replaced
// as it streams: it holds back the last len(longest secret)-1 bytes until
// it knows they do not start one.
type streamBody struct {
	rc      io.ReadCloser
	cancel  context.CancelFunc
	secrets [][]byte
	limit   int64
	host    string

	read    int64
	buf     []byte // one read from the server
	pending []byte // read, redacted, not yet returned
	out     []byte // ready to return
	tail    []byte // the end of what was returned, keep() bytes at most
	err     error  // sticky: io.EOF or the failure
}

func (s *streamBody) keep() int {
	n := 0
	for _, sec := range s.secrets {
		n = max(n, len(sec)-1)
	}
	return n
}

func (s *streamBody) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.buf == nil {
			s.buf = make([]byte, 8<<10)
		}
		n, err := s.rc.Read(s.buf)
		s.read += int64(n)
		s.pending = append(s.pending, s.buf[:n]...)
		clean := true
		for _, sec := range s.secrets {
			if len(sec) == 0 {
				continue
			}
			var ok bool
			if s.pending, ok = replaceSecret(s.pending, sec); !ok || straddles(s.tail, s.pending, sec) {
				clean = false
			}
		}
		switch {
		case !clean:
			// The marker and what follows it spell the value again (a value
			// that begins as the marker ends): the rest is withheld.
			s.pending = nil
			s.err = &DeniedError{Host: s.host, Reason: "the response repeats an injected credential around its redaction"}
		case s.read > s.limit:
			s.pending = nil
			s.err = &DeniedError{Host: s.host, Reason: fmt.Sprintf("response over the %d-byte cap", s.limit)}
		case err != nil:
			s.out, s.pending = s.pending, nil
			s.err = err
		default:
			if k := len(s.pending) - s.keep(); k > 0 {
				s.out = append(s.out[:0], s.pending[:k]...)
				s.pending = append(s.pending[:0], s.pending[k:]...)
			}
		}
	}
	n := copy(p, s.out)
	s.tail = append(s.tail, s.out[:n]...)
	if k := s.keep(); len(s.tail) > k {
		s.tail = append(s.tail[:0], s.tail[len(s.tail)-k:]...)
	}
	s.out = s.out[n:]
	return n, nil
}

// maxRedactPasses bounds how often a text is redacted again when the marker
// and the text after it form the value anew.
const maxRedactPasses = 8

// replaceSecret replaces sec in b by Redacted, again where a marker and the
// text around it spell sec anew (a value beginning "]" or "D]", say). ok is
// false when sec is still there after maxRedactPasses: the text must not
// be shown.
func replaceSecret(b, sec []byte) (_ []byte, ok bool) {
	for range maxRedactPasses {
		if !bytes.Contains(b, sec) {
			return b, true
		}
		b = bytes.ReplaceAll(b, sec, []byte(Redacted))
	}
	return b, !bytes.Contains(b, sec)
}

// straddles reports whether sec begins in tail, the end of what was
// already returned, and ends in pending.
func straddles(tail, pending, sec []byte) bool {
	if len(tail) == 0 {
		return false
	}
	n := min(len(pending), len(sec)-1)
	joined := append(append([]byte(nil), tail...), pending[:n]...)
	return bytes.Contains(joined, sec)
}

func (s *streamBody) Close() error {
	err := s.rc.Close()
	s.cancel()
	return err
}
