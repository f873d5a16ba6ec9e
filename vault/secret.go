package vault

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// redacted is what every printed, logged or marshalled Secret or Key shows.
const redacted = "[REDACTED]"

// Secret is a credential value held in memory. Its String, GoString, Format
// (every verb, including %x and %q), MarshalJSON, MarshalText and LogValue
// methods all produce "[REDACTED]", so printing, logging or encoding a value
// that contains a Secret never reveals it. Use Reveal only at the point of
// injection.
//
// The zero Secret is empty.
type Secret struct {
	b []byte
}

// NewSecret returns a Secret holding a copy of b.
func NewSecret(b []byte) Secret {
	return Secret{b: append([]byte(nil), b...)}
}

// SecretString returns a Secret holding the bytes of s.
func SecretString(s string) Secret {
	return Secret{b: []byte(s)}
}

// Reveal returns the secret bytes. The caller must not modify them and must
// not let them reach a log, an error or a model.
func (s Secret) Reveal() []byte { return s.b }

// Len returns the length of the value in bytes.
func (s Secret) Len() int { return len(s.b) }

// IsZero reports whether the Secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Equal reports whether s and o hold the same value, in time that does not
// depend on the contents.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare(s.b, o.b) == 1
}

// Wipe overwrites the value with zeros. It is best effort: copies made
// earlier (for example by Reveal callers or the garbage collector) remain.
func (s Secret) Wipe() { clear(s.b) }

// String returns "[REDACTED]".
func (Secret) String() string { return redacted }

// GoString returns "[REDACTED]".
func (Secret) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb and flag.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON returns the JSON string "[REDACTED]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[REDACTED]".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes log/slog print "[REDACTED]".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

var (
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ fmt.Formatter  = Secret{}
	_ slog.LogValuer = Secret{}
)
