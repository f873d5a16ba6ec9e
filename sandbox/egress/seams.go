package egress

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/talonhq/talon/agent"
)

// ErrNoCredential is returned by a CredentialSource when the user has no
// entry of that name, or the entry is not bound to the host. The broker turns
// it into a *DeniedError on the first hop and drops the credential on a
// redirect.
var ErrNoCredential = errors.New("no credential for this user, name and host")

// CredentialSource provides a credential to inject. The broker asks only
// after the policy and SSRF checks pass, only for names the tool's
// Policy.Credentials grants, and only over https. hostPort is the
// request's host, normalised (lowercase, no trailing dot, IPv6 in
// brackets), and its port, always present ("api.github.com:443",
// "[2001:db8::1]:8443"). c names the calling tool and its user (for the
// audit trail).
//
// The source decides whether the entry is bound to that host and port; it
// returns an error wrapping ErrNoCredential when it is not, and must never
// put a secret value in an error.
type CredentialSource interface {
	Credential(ctx context.Context, c Caller, name, hostPort string) (Credential, error)
}

// Credential is one secret ready to inject.
type Credential interface {
	// Apply sets the credential on an outbound request: an Authorization
	// header, another header, or a query parameter.
	Apply(h http.Header, u *url.URL)
	// Secrets returns the raw values, for leak checks and redaction.
	Secrets() [][]byte
}

// LeakChecker scans outbound requests before injection and responses before
// the guest sees them.
type LeakChecker interface {
	// CheckOutbound is called for every hop, before a credential is
	// injected, with the request as the guest (or a redirect) shaped it. It
	// may read the user's secrets and record the refusal, under ctx. A
	// non-nil error refuses the request; a *DeniedError is returned as is,
	// any other error becomes a generic refusal.
	CheckOutbound(ctx context.Context, c Caller, r Request) error
	// RedactInbound returns s with secrets (and whatever encodings of them
	// the checker knows) removed. It is applied to the response body and to
	// each response header value. The broker additionally replaces the raw
	// injected values itself, with or without a checker.
	RedactInbound(user agent.Principal, secrets [][]byte, s string) string
}
