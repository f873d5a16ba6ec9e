package vault

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strings"

	"github.com/talonhq/talon/vault/leak"
)

// Limits on entries. They bound what a caller can make the vault seal.
const (
	MaxNameLen  = 64
	MaxValueLen = 16 << 10
	MaxHosts    = 32
	maxFieldLen = 256
)

// MinValueLen is the shortest value Vault.Set accepts: the shortest value
// the leak detector looks for (leak.MinSecretLen). A shorter one could not
// be told apart from ordinary text, so it would never be redacted from
// what the model, a reply or a log sees; it is refused rather than stored
// unprotected. Entries stored before this limit are kept and still work;
// `talon vault list` marks them.
const MinValueLen = leak.MinSecretLen

// ErrInvalidEntry is matched by errors about malformed entries (every
// *EntryError).
var ErrInvalidEntry = errors.New("vault: invalid entry")

// EntryError says why an entry was refused. It names the field at fault and
// never holds the value, so its Reason may be shown to the person who
// entered the secret. errors.Is matches it with ErrInvalidEntry, and with
// ErrInvalidHost when a host was refused.
type EntryError struct {
	// Name is the entry's name; empty when the name itself was refused.
	Name string
	// Field is "user", "name", "value", "hosts" or "injection".
	Field string
	// Reason says what is wrong and what is accepted, in plain words.
	Reason string
	// Err is the underlying error, if any (ErrInvalidHost for hosts).
	Err error
}

func (e *EntryError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("vault: invalid entry %q: %s: %s", e.Name, e.Field, e.Reason)
	}
	return fmt.Sprintf("vault: invalid entry: %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidEntry.
func (e *EntryError) Is(target error) bool { return target == ErrInvalidEntry }

// Unwrap returns the underlying error.
func (e *EntryError) Unwrap() error { return e.Err }

// InjectionKind says how a credential is added to an outbound request.
type InjectionKind string

// Injection kinds.
const (
	// InjectBearer sets "Authorization: Bearer <value>".
	InjectBearer InjectionKind = "bearer"
	// InjectHeader sets header Name to Prefix + value.
	InjectHeader InjectionKind = "header"
	// InjectQuery sets query parameter Name to the value.
	InjectQuery InjectionKind = "query"
	// InjectBasic sets HTTP basic authentication with Username and the
	// value as password.
	InjectBasic InjectionKind = "basic"
)

// Injection is the rule for adding a credential to a request. Only the
// fields of its Kind may be set: Name and Prefix for header, Name for
// query, Username for basic, none for bearer.
type Injection struct {
	Kind     InjectionKind `json:"kind"`
	Name     string        `json:"name,omitempty"`
	Prefix   string        `json:"prefix,omitempty"`
	Username string        `json:"username,omitempty"`
}

// forbiddenHeaders may not carry an injected credential: they control
// framing or routing, or are set by the broker.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Proxy-Authorization": true,
}

// Normalize validates the rule and returns its canonical form (header names
// in canonical MIME case).
func (in Injection) Normalize() (Injection, error) {
	bad := func(format string, a ...any) (Injection, error) {
		return Injection{}, &EntryError{Field: "injection", Reason: fmt.Sprintf(format, a...)}
	}
	switch in.Kind {
	case InjectBearer:
		if in.Name != "" || in.Prefix != "" || in.Username != "" {
			return bad("bearer takes no name, prefix or username")
		}
	case InjectHeader:
		if in.Username != "" {
			return bad("header takes no username")
		}
		if !isToken(in.Name) || len(in.Name) > maxFieldLen {
			return bad("header name %q is not a valid header field name", in.Name)
		}
		in.Name = textproto.CanonicalMIMEHeaderKey(in.Name)
		if forbiddenHeaders[in.Name] {
			return bad("header %q may not carry a credential", in.Name)
		}
		if !isPrintable(in.Prefix) || len(in.Prefix) > maxFieldLen {
			return bad("header prefix has control characters or is too long")
		}
	case InjectQuery:
		if in.Prefix != "" || in.Username != "" {
			return bad("query takes no prefix or username")
		}
		if in.Name == "" || !isPrintable(in.Name) || strings.ContainsAny(in.Name, "&=#? ") || len(in.Name) > maxFieldLen {
			return bad("query parameter name %q is empty or has reserved characters", in.Name)
		}
	case InjectBasic:
		if in.Name != "" || in.Prefix != "" {
			return bad("basic takes no name or prefix")
		}
		if in.Username == "" || !isPrintable(in.Username) || strings.Contains(in.Username, ":") || len(in.Username) > maxFieldLen {
			return bad("basic username is empty, has a colon or control characters")
		}
	default:
		return bad("unknown kind %q (want bearer, header, query or basic)", in.Kind)
	}
	return in, nil
}

// AppendCanonical appends the unambiguous encoding of the rule bound into a
// sealed entry's additional data: each field length-prefixed, in a fixed
// order (kind, name, prefix, username).
func (in Injection) AppendCanonical(b []byte) []byte {
	b = appendField(b, string(in.Kind))
	b = appendField(b, in.Name)
	b = appendField(b, in.Prefix)
	return appendField(b, in.Username)
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// Entry is a credential in the clear: who owns it, its name, its value,
// the hosts it may be sent to and how it is injected.
type Entry struct {
	// User is the owner, "platform:workspace:user".
	User string
	// Name is what manifests and tools call the credential: 1 to 64 bytes
	// of letters, digits, '.', '_' and '-'.
	Name  string
	Value Secret
	// Hosts are exact hosts or "*.suffix" patterns (NormalizeHostPattern).
	Hosts     []string
	Injection Injection
}

// Normalize validates e and returns it with normalised, sorted,
// de-duplicated hosts and a canonical injection rule. Its errors name the
// field at fault and never the value.
func (e Entry) Normalize() (Entry, error) {
	if err := checkUser(e.User); err != nil {
		return Entry{}, err
	}
	if err := checkName(e.Name); err != nil {
		return Entry{}, err
	}
	bad := func(field, format string, a ...any) (Entry, error) {
		return Entry{}, &EntryError{Name: e.Name, Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	if e.Value.IsZero() {
		return bad("value", "empty")
	}
	if e.Value.Len() > MaxValueLen {
		return bad("value", "longer than %d bytes", MaxValueLen)
	}
	if bytes.ContainsAny(e.Value.Reveal(), "\r\n\x00") {
		return bad("value", "contains CR, LF or NUL")
	}
	if len(e.Hosts) == 0 || len(e.Hosts) > MaxHosts {
		return bad("hosts", "name 1 to %d hosts", MaxHosts)
	}
	hosts := make([]string, 0, len(e.Hosts))
	for _, h := range e.Hosts {
		n, err := NormalizeHostPattern(h)
		if err != nil {
			return Entry{}, &EntryError{Name: e.Name, Field: "hosts", Reason: strings.TrimPrefix(err.Error(), "vault: "), Err: err}
		}
		hosts = append(hosts, n)
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	in, err := e.Injection.Normalize()
	if err != nil {
		var ee *EntryError
		if errors.As(err, &ee) {
			ee.Name = e.Name
		}
		return Entry{}, err
	}
	e.Hosts, e.Injection = hosts, in
	return e, nil
}

func checkUser(u string) error {
	parts := strings.Split(u, ":")
	if len(parts) != 3 || len(u) > maxFieldLen || !isPrintable(u) {
		return &EntryError{Field: "user", Reason: "must be platform:workspace:user"}
	}
	for i, p := range parts {
		if p == "" && i != 1 { // the workspace is empty for DMs and the terminal: discord::1234
			return &EntryError{Field: "user", Reason: "must be platform:workspace:user with a platform and a user"}
		}
	}
	return nil
}

func checkName(n string) error {
	if n == "" || len(n) > MaxNameLen {
		return &EntryError{Field: "name", Reason: fmt.Sprintf("must be 1 to %d bytes", MaxNameLen)}
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return &EntryError{Field: "name", Reason: fmt.Sprintf("%q: use only letters, digits, '.', '_' and '-'", n)}
		}
	}
	return nil
}
