package mcp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Auth says how Talon authenticates to a server.
type Auth string

const (
	// AuthNone sends no credential.
	AuthNone Auth = "none"
	// AuthBearer injects the user's vault entry named by Server.Credential
	// as "Authorization: Bearer …"; the entry must be bound to the
	// server's host and port.
	AuthBearer Auth = "bearer"
	// AuthOAuth is the MCP authorization flow: each user connects their
	// own account through a one-time link (see OAuth).
	AuthOAuth Auth = "oauth"
)

// Approval says which calls ask the session's owner first.
type Approval string

const (
	// ApproveNever asks for no call (a tainted turn still asks).
	ApproveNever Approval = "never"
	// ApproveWrites asks before each call of a tool the server does not
	// annotate readOnlyHint. The default.
	ApproveWrites Approval = "writes"
	// ApproveAlways asks before every call.
	ApproveAlways Approval = "always"
)

// Defaults and bounds of a server's configuration, and of what a server may
// send.
const (
	DefaultTimeout        = 60 * time.Second
	MaxTimeout            = 10 * time.Minute
	DefaultMaxResultBytes = 64 << 10
	MaxMaxResultBytes     = 1 << 20
	// MaxTools is how many tools of one server are offered; the rest are
	// left out (with a warning).
	MaxTools = 128
	// MaxDescriptionBytes caps a tool's description as the model and the
	// operator see it.
	MaxDescriptionBytes = 1024
	// MaxSchemaBytes caps a tool's input schema; a tool with a larger one
	// is disabled.
	MaxSchemaBytes = 32 << 10
	// MaxNameBytes bounds a tool's name as the model sees it (OpenAI's
	// limit).
	MaxNameBytes = 64
	// maxListBytes caps one tools/list response.
	maxListBytes = 8 << 20
)

// Server is one configured MCP server.
type Server struct {
	// Name is the prefix of its tools' names: [a-z0-9_-], 1–24 bytes.
	Name string
	// URL is the server's endpoint (https; http only for a loopback
	// address).
	URL string
	// Auth is none (default), bearer or oauth.
	Auth Auth
	// OAuth is the operator's client for auth: oauth, when the
	// authorization server offers no dynamic registration; nil registers
	// one.
	OAuth *OAuthClientConfig
	// Credential names the user's vault entry for Auth bearer.
	Credential string
	// Approval is writes (default), never or always.
	Approval Approval
	// Allow and Deny filter the server's tools by name (path.Match
	// patterns on the server's own names); empty Allow allows all.
	Allow, Deny []string
	// Timeout bounds one call, inside the turn's deadline; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxResultBytes caps the text of a result the model gets; 0 means
	// DefaultMaxResultBytes.
	MaxResultBytes int
	// SSE uses the older HTTP+SSE transport instead of streamable HTTP.
	SSE bool
}

var serverName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,23}$`)

// FieldError is a problem with one key of a server's configuration.
type FieldError struct {
	// Key is the configuration key: name, url, auth, credential,
	// approval, tools, timeout or max_result_bytes.
	Key     string
	Problem string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Problem }

// Validate reports every problem of s at once, each a *FieldError, joined
// with errors.Join.
func (s *Server) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	if !serverName.MatchString(s.Name) || strings.Contains(s.Name, "__") {
		bad("name", "%q must be 1 to 24 of a-z, 0-9, _ and -, starting with a letter or digit, without __", s.Name)
	}
	scheme, _, originErr := s.origin()
	if originErr != nil {
		bad("url", "%v", originErr)
	}
	switch s.Auth {
	case "", AuthNone:
		if s.Credential != "" {
			bad("credential", "only used with auth: bearer")
		}
	case AuthBearer:
		if s.Credential == "" {
			bad("credential", "auth: bearer needs the name of the user's vault entry")
		}
		if originErr == nil && scheme != "https" {
			bad("url", "auth: bearer needs an https URL")
		}
	case AuthOAuth:
		if s.Credential != "" {
			bad("credential", "not used with auth: oauth (each user's tokens are kept by Talon)")
		}
		if s.OAuth != nil && s.OAuth.ClientID == "" && s.OAuth.ClientSecret != "" {
			bad("oauth", "client_secret needs a client_id")
		}
	default:
		bad("auth", "%q must be none, bearer or oauth", s.Auth)
	}
	if s.OAuth != nil && s.Auth != AuthOAuth {
		bad("oauth", "only used with auth: oauth")
	}
	switch s.Approval {
	case "", ApproveNever, ApproveWrites, ApproveAlways:
	default:
		bad("approval", "%q must be never, writes or always", s.Approval)
	}
	for _, p := range append(append([]string(nil), s.Allow...), s.Deny...) {
		if _, err := path.Match(p, ""); err != nil {
			bad("tools", "pattern %q: %v", p, err)
		}
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeout {
		bad("timeout", "%s must be between 0 and %s", s.Timeout, MaxTimeout)
	}
	if s.MaxResultBytes < 0 || s.MaxResultBytes > MaxMaxResultBytes {
		bad("max_result_bytes", "%d must be between 0 and %d", s.MaxResultBytes, MaxMaxResultBytes)
	}
	return errors.Join(errs...)
}

// origin is the server's scheme and host:port (the port always present).
func (s *Server) origin() (scheme, hostPort string, err error) {
	u, err := url.Parse(s.URL)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return "", "", fmt.Errorf("%q is not an absolute URL", s.URL)
	}
	if u.User != nil || u.Fragment != "" {
		return "", "", errors.New("may not carry user info or a fragment")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	switch u.Scheme {
	case "https":
	case "http":
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", "", errors.New("must be https (http only for a loopback address)")
		}
	default:
		return "", "", fmt.Errorf("scheme %q must be https", u.Scheme)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", errors.New("invalid port")
	}
	return u.Scheme, net.JoinHostPort(host, port), nil
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) maxResult() int {
	if s.MaxResultBytes > 0 {
		return s.MaxResultBytes
	}
	return DefaultMaxResultBytes
}

func (s *Server) approval() Approval {
	if s.Approval == "" {
		return ApproveWrites
	}
	return s.Approval
}

// allows reports whether the server's tool name passes the allow and deny
// lists.
func (s *Server) allows(name string) bool {
	for _, p := range s.Deny {
		if ok, _ := path.Match(p, name); ok {
			return false
		}
	}
	if len(s.Allow) == 0 {
		return true
	}
	for _, p := range s.Allow {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
