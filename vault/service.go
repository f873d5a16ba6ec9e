package vault

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/talonhq/talon/vault/leak"
)

// DetectorTTL is how long a Service reuses a user's leak detector. Entries
// added or removed through the Service invalidate it at once; entries
// changed by another process (`talon vault set|rm` beside a running
// gateway) are seen after at most this long.
const DetectorTTL = 30 * time.Second

// maxCachedDetectors bounds the per-user and per-injection detector caches.
const maxCachedDetectors = 4096

// Service is the vault as a running gateway uses it: it redacts each
// user's secrets (their values in every encoding the leak detector knows,
// and well-known token formats) from text, stores and removes entries for
// chat users, gives the egress broker credentials for the hosts they are
// bound to, and checks tools' outbound requests for secrets. Users are
// named by their principal's "platform:workspace:user" form.
//
// It is safe for concurrent use. It never logs: errors it cannot return
// (an entry that does not open while redacting) go to OnError.
type Service struct {
	v        *Vault
	patterns *leak.Detector
	// Now is the clock of the detector cache; nil means time.Now. Set it
	// before first use.
	Now func() time.Time
	// OnError, when set, is told about a failure the caller of Redact
	// cannot see: some of user's entries do not open (tampered, or sealed
	// under another key), so they are neither redacted nor injected. The
	// error names entries, never values. Set it before first use.
	OnError func(user string, err error)

	mu      sync.Mutex
	users   map[string]cachedDetector   // guarded by mu; user → detector of their values
	inbound map[[32]byte]*leak.Detector // guarded by mu; injected values → detector
}

type cachedDetector struct {
	d  *leak.Detector
	at time.Time
}

// NewService returns the Service of v.
func NewService(v *Vault) *Service {
	return &Service{
		v: v, patterns: leak.NewPatterns(),
		users: map[string]cachedDetector{}, inbound: map[[32]byte]*leak.Detector{},
	}
}

// Vault returns the vault the Service uses.
func (s *Service) Vault() *Vault { return s.v }

// detector returns user's leak detector: their vault values and every
// encoding of them, plus the well-known token formats.
func (s *Service) detector(ctx context.Context, user string) *leak.Detector {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	s.mu.Lock()
	c, ok := s.users[user]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < DetectorTTL {
		return c.d
	}
	s.v.Forget(user)
	vals, err := s.v.Values(ctx, user)
	if err != nil && s.OnError != nil {
		// Redact what does open; the rest cannot be injected either.
		s.OnError(user, err)
	}
	d := s.patterns
	if len(vals) > 0 {
		d = leak.New(vals)
	}
	s.mu.Lock()
	if len(s.users) >= maxCachedDetectors {
		clear(s.users)
	}
	s.users[user] = cachedDetector{d: d, at: now}
	s.mu.Unlock()
	return d
}

// invalidate drops user's cached detector after their entries changed.
func (s *Service) invalidate(user string) {
	s.mu.Lock()
	delete(s.users, user)
	s.mu.Unlock()
	s.v.Forget(user)
}

// Redact returns text with user's secret values (in every encoding the
// detector knows) and well-known token formats replaced by markers, and
// the number of findings.
func (s *Service) Redact(ctx context.Context, user, text string) (string, int) {
	out, fs := s.detector(ctx, user).Redact(text)
	return out, len(fs)
}

// List returns user's sealed entries: names, hosts, injection rules and
// times, never values.
func (s *Service) List(ctx context.Context, user string) ([]SealedEntry, error) {
	return s.v.List(ctx, user)
}

// Add seals and stores e (see Vault.Set), replacing an entry of the same
// user and name. Its errors name fields, never the value: an *EntryError
// when e itself is refused.
func (s *Service) Add(ctx context.Context, e Entry) error {
	if err := s.v.Set(ctx, e); err != nil {
		return err
	}
	s.invalidate(e.User)
	return nil
}

// AddAll seals and stores es in one transaction (see Vault.SetAll).
func (s *Service) AddAll(ctx context.Context, es ...Entry) error {
	if err := s.v.SetAll(ctx, es...); err != nil {
		return err
	}
	for _, e := range es {
		s.invalidate(e.User)
	}
	return nil
}

// Remove deletes user's entry name; the error wraps ErrNotFound when there
// is none.
func (s *Service) Remove(ctx context.Context, user, name string) error {
	ok, err := s.v.Remove(ctx, user, name)
	s.invalidate(user)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vault: %q: %w", name, ErrNotFound)
	}
	return nil
}

// Has reports whether user has an entry called name.
func (s *Service) Has(ctx context.Context, user, name string) bool {
	return s.v.Has(ctx, user, name)
}

// ErrUnavailable is wrapped by Credential when the user has no entry of the
// name, or the entry is not bound to the host and port, or the host is
// invalid: the request must go without the credential (or not at all).
var ErrUnavailable = errors.New("vault: credential not available for this host")

// Credential returns user's entry name for an https request by tool to
// hostPort ("host" for port 443, or "host:port"), if the entry exists and
// is bound to that host and port. Every call is audited. When the entry is
// not there for this host the error wraps ErrUnavailable (and ErrNotFound,
// ErrHostNotBound or ErrInvalidHost); other errors are failures of the
// storage or of an entry that does not open. No error names a value.
func (s *Service) Credential(ctx context.Context, user, tool, name, hostPort string) (*Entry, error) {
	e, err := s.v.Credential(ctx, user, name, hostPort, "https", tool)
	switch {
	case err == nil:
		return e, nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrHostNotBound), errors.Is(err, ErrInvalidHost):
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return nil, err
	}
}

// Request is an outbound HTTP request as a tool shaped it, for
// CheckOutbound.
type Request struct {
	URL     string
	Headers map[string]string
	Body    string
	// Credential is the entry name the tool asked the broker to inject,
	// if any (for the audit trail).
	Credential string
}

// LeakError refuses a request that carries a secret. It names the host
// and the kind of secret found, never the value.
type LeakError struct {
	Host string
	Kind leak.Kind
}

func (e *LeakError) Error() string {
	return fmt.Sprintf("the request carries a secret (%s); tools may not send secrets themselves, "+
		"only name a stored credential for the broker to inject", e.Kind)
}

// CheckOutbound refuses, with a *LeakError, a request by tool for user
// whose URL (raw and decoded), headers or body carry one of user's secret
// values (in any encoding the detector knows) or a well-known token format:
// tools name credentials, they never send them. A refusal is audited.
func (s *Service) CheckOutbound(ctx context.Context, user, tool string, r Request) error {
	d := s.detector(ctx, user)
	parts := []string{r.URL}
	if u, err := url.PathUnescape(r.URL); err == nil && u != r.URL {
		parts = append(parts, u)
	}
	if u, err := url.QueryUnescape(r.URL); err == nil && u != r.URL {
		parts = append(parts, u)
	}
	for k, v := range r.Headers {
		parts = append(parts, k+": "+v)
	}
	parts = append(parts, r.Body)
	for _, p := range parts {
		fs := d.Scan([]byte(p))
		if len(fs) == 0 {
			continue
		}
		host := ""
		if u, err := url.Parse(r.URL); err == nil {
			host = u.Hostname()
		}
		s.v.Audit(ctx, AuditEvent{User: user, Name: r.Credential, Host: host, Tool: tool, Reason: ReasonLeakDetected})
		return &LeakError{Host: host, Kind: fs[0].Kind}
	}
	return nil
}

// RedactInbound removes the injected values and all their encodings (and
// well-known token formats) from a response before the guest sees it.
func (s *Service) RedactInbound(secrets [][]byte, text string) string {
	if len(secrets) == 0 {
		return text
	}
	out, _ := s.inboundDetector(secrets).Redact(text)
	return out
}

// inboundDetector returns a detector for the values injected into one
// request, cached by a digest of the values.
func (s *Service) inboundDetector(secrets [][]byte) *leak.Detector {
	h := sha256.New()
	var n [8]byte
	for _, b := range secrets {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var key [32]byte
	h.Sum(key[:0])
	s.mu.Lock()
	d, ok := s.inbound[key]
	s.mu.Unlock()
	if ok {
		return d
	}
	d = leak.New(secrets)
	s.mu.Lock()
	if len(s.inbound) >= maxCachedDetectors {
		clear(s.inbound)
	}
	s.inbound[key] = d
	s.mu.Unlock()
	return d
}
