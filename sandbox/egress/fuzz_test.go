package egress

import (
	"net/netip"
	"testing"
)

// stdlibForbidden is an oracle independent of checkAddr: whatever the
// standard library calls loopback, private, link-local, multicast or
// unspecified must never be judged public.
func stdlibForbidden(a netip.Addr) bool {
	for _, x := range []netip.Addr{a, a.Unmap()} {
		if x.IsLoopback() || x.IsPrivate() || x.IsLinkLocalUnicast() || x.IsLinkLocalMulticast() ||
			x.IsInterfaceLocalMulticast() || x.IsMulticast() || x.IsUnspecified() {
			return true
		}
	}
	return false
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "10.1",
		"::ffff:127.0.0.1", "[::ffff:7f00:1]", "64:ff9b::a00:1", "fe80::1%eth0", "Example.COM.", "1.2.3.999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHost(s)
		if err != nil {
			return
		}
		if strict, err := netip.ParseAddr(s); err == nil && strict.Zone() == "" && h.Addr != strict {
			t.Fatalf("parseHost(%q) = %v, want the literal %v", s, h.Addr, strict)
		}
		again, err := parseHost(h.Name)
		if err != nil || again != h {
			t.Fatalf("parseHost(%q) = %+v, reparsed %+v, %v: not idempotent", s, h, again, err)
		}
		if !h.IsIP() {
			if _, err := netip.ParseAddr(h.Name); err == nil {
				t.Fatalf("parseHost(%q) = name %q that is an IP literal", s, h.Name)
			}
			return
		}
		if stdlibForbidden(h.Addr) && checkAddr(h.Addr, nil) == "" {
			t.Fatalf("parseHost(%q) = %v judged public", s, h.Addr)
		}
	})
}

func FuzzCheckAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::",
		"2001:0:808:808::f5ff:fffe", "fd00:ec2::254", "8.8.8.8", "2606:4700::1111"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw [16]byte
		copy(raw[:], b)
		for _, a := range []netip.Addr{netip.AddrFrom16(raw), netip.AddrFrom4([4]byte(raw[:4]))} {
			r := checkAddr(a, nil)
			if stdlibForbidden(a) && r == "" {
				t.Fatalf("checkAddr(%v) judged public", a)
			}
			if a.Is4In6() && (r == "") != (checkAddr(a.Unmap(), nil) == "") {
				t.Fatalf("checkAddr(%v) = %q disagrees with its IPv4 form", a, r)
			}
		}
	})
}
