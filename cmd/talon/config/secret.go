package config

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// redacted is what a non-empty Secret prints as.
const redacted = "[redacted]"

// Secret is a credential such as an API key. It prints, formats and marshals
// (fmt with any verb, JSON, text, YAML) as "[redacted]", or as "" when it is
// empty so an unset credential stays visible; only Reveal returns the value.
type Secret string

// Reveal returns the secret value. Call it only where the value is sent to
// the service it authenticates to.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]", or "" for an empty Secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns the redacted form, quoted.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format implements fmt.Formatter so that every verb (%v, %+v, %#v, %s, %q,
// %x, ...) prints the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'), verb == 'q':
		_, _ = fmt.Fprint(f, s.GoString())
	default:
		_, _ = fmt.Fprint(f, s.String())
	}
}

// MarshalJSON returns the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText returns the redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML returns the redacted form.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }
