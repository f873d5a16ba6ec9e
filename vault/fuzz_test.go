package vault

import (
	"errors"
	"testing"
)

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"api.github.com", "API.GitHub.com.:443", "[2001:db8::1]:8080", "1.2.3.4", "0x7f.1", "*.example.com", "bücher.example", "a..b", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n, err := NormalizeHost(h)
		if err != nil {
			if !errors.Is(err, ErrInvalidHost) {
				t.Fatalf("error does not wrap ErrInvalidHost: %v", err)
			}
			if (Entry{Hosts: []string{h}}).AllowsHost(h) {
				t.Fatalf("an invalid host is allowed")
			}
			return
		}
		n2, err := NormalizeHost(n)
		if err != nil || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", h, n, n2, err)
		}
		if !(Entry{Hosts: []string{h}}).AllowsHost(n) || !(Entry{Hosts: []string{n}}).AllowsHost(h) {
			t.Fatalf("match not symmetric with normalisation for %q / %q", h, n)
		}
		if p, err := NormalizeHostPattern("*." + n); err == nil {
			if (Entry{Hosts: []string{p}}).AllowsHost(h) {
				t.Fatalf("pattern %q matches its own suffix %q", p, h)
			}
			if !(Entry{Hosts: []string{p}}).AllowsHost("sub." + n) {
				t.Fatalf("pattern %q does not match sub.%s", p, n)
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	k, err := NewKey([]byte("fuzz-key-0123456789abcdef-012345"))
	if err != nil {
		f.Fatal(err)
	}
	orig, err := Seal(k, testEntry())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(0), uint16(0), uint8(1), "")
	f.Add(uint8(1), uint16(3), uint8(0x80), "evil.example")
	f.Add(uint8(4), uint16(0), uint8(0), "slack:T1:U2")
	f.Add(uint8(7), uint16(20), uint8(2), "")
	f.Fuzz(func(t *testing.T, field uint8, pos uint16, xor uint8, str string) {
		s := orig
		s.Hosts = append([]string(nil), orig.Hosts...)
		flip := func(b []byte) []byte {
			b = append([]byte(nil), b...)
			if len(b) == 0 {
				return []byte{xor}
			}
			if xor == 0 {
				return b[:int(pos)%len(b)] // truncate
			}
			b[int(pos)%len(b)] ^= xor
			return b
		}
		switch field % 9 {
		case 0:
			s.Ciphertext = flip(s.Ciphertext)
		case 1:
			s.Salt = flip(s.Salt)
		case 2:
			s.Nonce = flip(s.Nonce)
		case 3:
			s.KeyID = flip(s.KeyID)
		case 4:
			if str == s.User {
				return
			}
			s.User = str
		case 5:
			if str == s.Name {
				return
			}
			s.Name = str
		case 6:
			s.Hosts = append(s.Hosts, str)
		case 7:
			s.Injection.Prefix += str + "x"
		case 8:
			s.Version += int(xor) + 1
		}
		e, err := Open(k, s)
		if err == nil {
			t.Fatalf("a mutated entry opened (field %d)", field%9)
		}
		if !e.Value.IsZero() {
			t.Fatal("failed Open returned a value")
		}
	})
}
