package egress

import (
	"fmt"
	"time"

	"github.com/talonhq/talon/agent"
)

// Request is an HTTP request a tool asks the broker to make. It is decoded
// from guest memory and is hostile input.
type Request struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// Credential names a vault entry of the calling user to inject. The
	// guest names it; it never sees the value.
	Credential string `json:"credential,omitempty"`
}

// Response is what the guest gets back.
type Response struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body"`
	// Truncated is set when the body was cut at the size cap.
	Truncated bool `json:"truncated,omitempty"`
	// URL is the final URL after redirects.
	URL string `json:"url"`
}

// Rule is one entry of a tool's HTTP allowlist, from its manifest.
type Rule struct {
	// Scheme is "https" (default) or "http".
	Scheme string `yaml:"scheme" json:"scheme,omitempty"`
	// Host is an exact host ("api.github.com"), a suffix pattern
	// ("*.example.com", which does not match example.com itself), or "*",
	// meaning any public host.
	Host string `yaml:"host" json:"host"`
	// Methods allowed; empty means GET and HEAD.
	Methods []string `yaml:"methods" json:"methods,omitempty"`
	// PathPrefixes allowed; empty means any path.
	PathPrefixes []string `yaml:"path_prefixes" json:"path_prefixes,omitempty"`
	// Trusted marks the hosts of this rule trusted (Taint): a turn that
	// read untrusted content may send them a little data unasked, and
	// what they answer does not taint a turn. Not allowed with Host "*".
	Trusted bool `yaml:"trusted" json:"trusted,omitempty"`
}

// Policy is what one tool may do on the network.
type Policy struct {
	Allow []Rule
	// Credentials are the vault entry names the tool may ask to inject.
	Credentials []string
	// MaxRequestBytes caps the request body; MaxResponseBytes the response
	// body the guest receives (the rest is cut and Truncated set).
	MaxRequestBytes  int64
	MaxResponseBytes int64
	// Timeout bounds one request, redirects included, inside the call's
	// own deadline.
	Timeout time.Duration
}

// Caller says who is asking: which tool, for which user.
type Caller struct {
	Tool      string
	Principal agent.Principal
	Policy    *Policy
	// Tainted is the source of the calling turn's taint (agent.Taint), ""
	// for a turn that read no untrusted content. The broker then refuses
	// every hop that Broker.Taint says needs approval, unless Approved.
	Tainted string
	// Approved says the owner approved this request, as the sandbox showed
	// it to them (its first hop): its redirects then go unchecked by the
	// taint guard (still by the policy and the SSRF rules).
	Approved bool
}

// DeniedError is returned when the broker refuses a request. Its message
// names the rule that refused and never a secret value.
type DeniedError struct {
	Host   string
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("egress: request to %q refused: %s", e.Host, e.Reason)
}
