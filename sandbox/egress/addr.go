package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// host is a request host after normalisation: either a DNS name (lowercase,
// ASCII, no trailing dot) or an IP literal.
type host struct {
	// Name is the normalised name, or the canonical text of Addr.
	Name string
	// Addr is valid when the host was an IP literal in any form.
	Addr netip.Addr
}

// IsIP reports whether the host was an IP literal.
func (h host) IsIP() bool { return h.Addr.IsValid() }

// errNotASCII is returned for internationalised names. IDNA mapping is not
// wired yet (golang.org/x/net/idna is not a dependency), so such names are
// refused rather than guessed at; punycode ("xn--") names work.
var errNotASCII = errors.New("host must be ASCII (use its punycode form)")

// parseHost normalises the host part of a URL (without port, brackets
// removed) and recognises IP literals in every form a resolver or a browser
// would accept: dotted decimal, the inet_aton forms (decimal, octal, hex,
// fewer than four parts) and IPv6. It never resolves anything.
//
// A host whose last label is numeric must be a valid IPv4 literal, as in the
// WHATWG URL standard; "1.2.3.999" is an error, never a name.
func parseHost(s string) (host, error) {
	s = strings.ToLower(s)
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return host{}, errors.New("empty host")
	}
	if len(s) > 253 {
		return host{}, errors.New("host too long")
	}
	if strings.Contains(s, ":") || strings.HasPrefix(s, "[") {
		s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if strings.Contains(s, "%") {
			return host{}, errors.New("IPv6 zone identifiers are not allowed")
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() {
			return host{}, errors.New("malformed IPv6 literal")
		}
		return host{Name: a.String(), Addr: a}, nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80:
			return host{}, errNotASCII
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return host{}, fmt.Errorf("host contains %q", c)
		}
	}
	labels := strings.Split(s, ".")
	if isNumericLabel(labels[len(labels)-1]) {
		a, ok := parseIPv4(labels)
		if !ok {
			return host{}, errors.New("malformed IPv4 literal")
		}
		return host{Name: a.String(), Addr: a}, nil
	}
	for _, l := range labels {
		if l == "" {
			return host{}, errors.New("empty label in host")
		}
		if len(l) > 63 {
			return host{}, errors.New("host label too long")
		}
	}
	return host{Name: s}, nil
}

// isNumericLabel reports whether a label reads as a number: decimal digits,
// or "0x" followed by hex digits (possibly none).
func isNumericLabel(l string) bool {
	if l == "" {
		return false
	}
	if strings.HasPrefix(l, "0x") {
		for _, c := range l[2:] {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseIPv4 parses the inet_aton forms: one to four parts, each decimal,
// octal (leading 0) or hex (0x); the last part fills the remaining bytes.
func parseIPv4(labels []string) (netip.Addr, bool) {
	if len(labels) > 4 {
		return netip.Addr{}, false
	}
	nums := make([]uint64, len(labels))
	for i, l := range labels {
		var (
			v   uint64
			err error
		)
		switch {
		case l == "":
			return netip.Addr{}, false
		case l == "0x":
			v = 0
		case strings.HasPrefix(l, "0x"):
			v, err = strconv.ParseUint(l[2:], 16, 64)
		case len(l) > 1 && l[0] == '0':
			v, err = strconv.ParseUint(l[1:], 8, 64)
		default:
			v, err = strconv.ParseUint(l, 10, 64)
		}
		if err != nil {
			return netip.Addr{}, false
		}
		nums[i] = v
	}
	last := len(nums) - 1
	for _, n := range nums[:last] {
		if n > 0xff {
			return netip.Addr{}, false
		}
	}
	if nums[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	var v uint32
	for i, n := range nums[:last] {
		v |= uint32(n) << (8 * (3 - i))
	}
	v |= uint32(nums[last])
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

var (
	metadataV4 = netip.MustParseAddr("169.254.169.254")
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
)

// namedPrefix is a special-purpose range and why it is refused.
type namedPrefix struct {
	p    netip.Prefix
	kind string
}

func mustPrefixes(kind string, ss ...string) []namedPrefix {
	out := make([]namedPrefix, len(ss))
	for i, s := range ss {
		out[i] = namedPrefix{netip.MustParsePrefix(s), kind}
	}
	return out
}

// deniedV4 lists the IPv4 special-purpose ranges (IANA registry) that are
// not public. Built per call: no package-level mutable state.
func deniedV4() []namedPrefix {
	var l []namedPrefix
	l = append(l, mustPrefixes("loopback", "127.0.0.0/8")...)
	l = append(l, mustPrefixes("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")...)
	l = append(l, mustPrefixes("link-local", "169.254.0.0/16")...)
	l = append(l, mustPrefixes("unspecified", "0.0.0.0/8")...)
	l = append(l, mustPrefixes("shared (CGNAT)", "100.64.0.0/10")...)
	l = append(l, mustPrefixes("benchmarking", "198.18.0.0/15")...)
	l = append(l, mustPrefixes("documentation", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")...)
	l = append(l, mustPrefixes("special-purpose", "192.0.0.0/24", "192.88.99.0/24")...)
	l = append(l, mustPrefixes("multicast", "224.0.0.0/4")...)
	l = append(l, mustPrefixes("broadcast", "255.255.255.255/32")...)
	l = append(l, mustPrefixes("reserved", "240.0.0.0/4")...)
	return l
}

// deniedV6 lists IPv6 ranges inside 2000::/3 that are not public. Anything
// outside 2000::/3 is refused anyway, except the embedding forms handled in
// checkAddr.
func deniedV6() []namedPrefix {
	var l []namedPrefix
	l = append(l, mustPrefixes("documentation", "2001:db8::/32", "3fff::/20")...)
	l = append(l, mustPrefixes("special-purpose", "2001::/23", "5f00::/16")...)
	return l
}

// checkAddr returns a short reason when a is not a public address the
// broker may connect to, or "" when it may. allow is the operator's
// allowlist of otherwise refused ranges.
//
// IPv4-mapped, NAT64 (64:ff9b::/96), 6to4 and Teredo addresses are judged by
// the IPv4 addresses they embed; an IPv6 address outside 2000::/3 is refused.
func checkAddr(a netip.Addr, allow []netip.Prefix) string {
	if !a.IsValid() {
		return "invalid address"
	}
	a = a.WithZone("")
	for _, p := range allow {
		if p.Contains(a) || (a.Is4In6() && p.Contains(a.Unmap())) {
			return ""
		}
	}
	if a.Is4In6() {
		return checkAddr4(a, a.Unmap())
	}
	if a.Is4() {
		return checkAddr4(a, a)
	}
	if a == metadataV6 {
		return fmt.Sprintf("address %s is the cloud metadata address", a)
	}
	b := a.As16()
	switch {
	case a.IsUnspecified():
		return fmt.Sprintf("address %s is unspecified", a)
	case a.IsLoopback():
		return fmt.Sprintf("address %s is loopback", a)
	case prefixContains("64:ff9b::/96", a):
		return checkAddr4(a, netip.AddrFrom4([4]byte(b[12:16])))
	case prefixContains("64:ff9b:1::/48", a):
		return fmt.Sprintf("address %s is local-use NAT64", a)
	case prefixContains("2002::/16", a):
		return checkAddr4(a, netip.AddrFrom4([4]byte(b[2:6])))
	case prefixContains("2001::/32", a):
		if r := checkAddr4(a, netip.AddrFrom4([4]byte(b[4:8]))); r != "" {
			return r
		}
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return checkAddr4(a, netip.AddrFrom4(client))
	case prefixContains("fc00::/7", a):
		return fmt.Sprintf("address %s is private (unique local)", a)
	case prefixContains("fe80::/10", a), prefixContains("fec0::/10", a):
		return fmt.Sprintf("address %s is link-local", a)
	case a.IsMulticast():
		return fmt.Sprintf("address %s is multicast", a)
	case !prefixContains("2000::/3", a):
		return fmt.Sprintf("address %s is not global unicast", a)
	}
	for _, np := range deniedV6() {
		if np.p.Contains(a) {
			return fmt.Sprintf("address %s is %s", a, np.kind)
		}
	}
	return ""
}

// checkAddr4 judges the IPv4 address v4, naming outer (the address as
// written, which may embed v4) in the reason.
func checkAddr4(outer, v4 netip.Addr) string {
	if v4 == metadataV4 {
		return fmt.Sprintf("address %s is the cloud metadata address", outer)
	}
	for _, np := range deniedV4() {
		if np.p.Contains(v4) {
			return fmt.Sprintf("address %s is %s", outer, np.kind)
		}
	}
	return ""
}

func prefixContains(p string, a netip.Addr) bool {
	return netip.MustParsePrefix(p).Contains(a)
}
