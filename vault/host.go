package vault

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalidHost is wrapped by errors about hosts and host patterns.
var ErrInvalidHost = errors.New("vault: invalid host")

// maxHostLen bounds a host name (RFC 1035), port excluded.
const maxHostLen = 253

// NormalizeHost returns the canonical form of a request host or an entry's
// exact host, as compared by AllowsHost:
//
//   - ASCII letters are lowercased and one trailing dot is removed;
//   - the default HTTPS port ":443" is removed; any other port is kept;
//   - IPv4 literals must be in strict dotted-decimal form and IPv6 literals
//     are written in their canonical bracketed form ("[2001:db8::1]"); zones
//     are refused;
//   - names must be LDH labels (letters, digits, hyphen, plus underscore) of
//     1 to 63 bytes, at most 253 bytes in all; a name whose last label is
//     numeric (such as "1.2.3" or "0x7f.1") is refused, since resolvers may
//     read it as an address.
//
// Internationalised names are refused for now: IDNA (UTS #46) mapping is not
// yet available to this package, so a host must be given in its ASCII
// ("xn--") form. Refusing is the fail-closed choice.
func NormalizeHost(h string) (string, error) {
	host, port, err := splitHostPort(h)
	if err != nil {
		return "", err
	}
	if port == "443" {
		port = ""
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", fmt.Errorf("%w: bad port in %q", ErrInvalidHost, h)
		}
	}
	var out string
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("%w: zoned address %q", ErrInvalidHost, h)
		}
		if a.Is4() {
			out = a.String()
		} else {
			out = "[" + a.String() + "]"
		}
	} else {
		if strings.ContainsRune(host, ':') {
			return "", fmt.Errorf("%w: %q", ErrInvalidHost, h)
		}
		name, err := normalizeName(host)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %s", ErrInvalidHost, h, err)
		}
		out = name
	}
	if port != "" {
		out += ":" + port
	}
	return out, nil
}

// splitHostPort splits h into host and optional port, accepting bare and
// bracketed IPv6 literals.
func splitHostPort(h string) (host, port string, err error) {
	if h == "" {
		return "", "", fmt.Errorf("%w: empty", ErrInvalidHost)
	}
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", "", fmt.Errorf("%w: unclosed bracket in %q", ErrInvalidHost, h)
		}
		host, rest := h[1:end], h[end+1:]
		if rest != "" {
			if rest[0] != ':' || len(rest) == 1 {
				return "", "", fmt.Errorf("%w: %q", ErrInvalidHost, h)
			}
			port = rest[1:]
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return "", "", fmt.Errorf("%w: bad IPv6 literal in %q", ErrInvalidHost, h)
		}
		return host, port, nil
	}
	switch strings.Count(h, ":") {
	case 0:
		return h, "", nil
	case 1:
		i := strings.IndexByte(h, ':')
		if i == len(h)-1 {
			return "", "", fmt.Errorf("%w: empty port in %q", ErrInvalidHost, h)
		}
		return h[:i], h[i+1:], nil
	default: // a bare IPv6 literal, without port
		return h, "", nil
	}
}

// normalizeName lowercases and checks a DNS name. The reason it returns
// is used inside a wrapped error.
func normalizeName(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", errors.New("empty name")
	}
	if len(s) > maxHostLen {
		return "", errors.New("name too long")
	}
	b := []byte(s)
	labelStart := 0
	for i := 0; i <= len(b); i++ {
		if i < len(b) && b[i] != '.' {
			c := b[i]
			switch {
			case 'A' <= c && c <= 'Z':
				b[i] = c + ('a' - 'A')
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				return "", errors.New("non-ASCII name: use its xn-- (punycode) form")
			default:
				return "", fmt.Errorf("invalid character %q", c)
			}
			continue
		}
		label := b[labelStart:i]
		if len(label) == 0 {
			return "", errors.New("empty label")
		}
		if len(label) > 63 {
			return "", errors.New("label longer than 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", errors.New("label starts or ends with a hyphen")
		}
		labelStart = i + 1
	}
	out := string(b)
	last := out[strings.LastIndexByte(out, '.')+1:]
	if looksNumeric(last) {
		return "", errors.New("numeric last label (not a strict IPv4 address)")
	}
	return out, nil
}

// looksNumeric reports whether a label could be read as a number by an
// address parser: all decimal digits, or 0x followed by hex digits.
func looksNumeric(l string) bool {
	if strings.HasPrefix(l, "0x") {
		l = l[2:]
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// NormalizeHostPattern normalises a host an entry is bound to: either an
// exact host (see NormalizeHost) or "*.suffix", which matches any host
// strictly below suffix (not suffix itself). The suffix must be a name (not
// an IP literal) of at least two labels; "*" alone is refused.
func NormalizeHostPattern(p string) (string, error) {
	rest, ok := strings.CutPrefix(p, "*.")
	if !ok {
		if strings.Contains(p, "*") {
			return "", fmt.Errorf("%w: %q: a wildcard must be a leading \"*.\"", ErrInvalidHost, p)
		}
		return NormalizeHost(p)
	}
	n, err := NormalizeHost(rest)
	if err != nil {
		return "", err
	}
	host, _, _ := splitHostPort(n)
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return "", fmt.Errorf("%w: %q: wildcard over an IP address", ErrInvalidHost, p)
	}
	if !strings.Contains(host, ".") {
		return "", fmt.Errorf("%w: %q: wildcard over a single label", ErrInvalidHost, p)
	}
	return "*." + n, nil
}

// matchHost reports whether normalised host h matches normalised pattern p.
func matchHost(p, h string) bool {
	suffix, ok := strings.CutPrefix(p, "*.")
	if !ok {
		return p == h
	}
	sh, sp, _ := splitHostPort(suffix)
	hh, hp, err := splitHostPort(h)
	if err != nil || sp != hp {
		return false
	}
	return len(hh) > len(sh)+1 && strings.HasSuffix(hh, sh) && hh[len(hh)-len(sh)-1] == '.'
}

// AllowsHost reports whether the entry may be sent to host, "name" or
// "name:port": host and the entry's hosts are normalised and compared
// exactly, ports included (no port means 443, so "example.com" and
// "example.com:443" are the same binding, and neither allows
// "example.com:8443"), and "*.suffix" patterns match subdomains of suffix
// only, on the pattern's port. An invalid host is never allowed.
func (e Entry) AllowsHost(host string) bool {
	h, err := NormalizeHost(host)
	if err != nil {
		return false
	}
	for _, p := range e.Hosts {
		np, err := NormalizeHostPattern(p)
		if err != nil {
			continue
		}
		if matchHost(np, h) {
			return true
		}
	}
	return false
}
