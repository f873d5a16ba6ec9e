package vault

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testValue = "ghp_TestValueDoNotLeak0123456789abcdef"

func mustKey(t testing.TB) Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

func testEntry() Entry {
	return Entry{
		User:      "slack:T1:U1",
		Name:      "github",
		Value:     SecretString(testValue),
		Hosts:     []string{"API.GitHub.com.", "*.githubusercontent.com", "api.github.com:443"},
		Injection: Injection{Kind: InjectHeader, Name: "x-api-key", Prefix: "token "},
	}
}

// checkNoSecret fails when err's message contains the test value or its
// distinctive part.
func checkNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if msg := err.Error(); strings.Contains(msg, testValue) || strings.Contains(msg, "DoNotLeak") {
		t.Errorf("error message contains the secret value")
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKey(t)
	s, err := Seal(k, testEntry())
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Contains(s.Ciphertext, []byte(testValue)) {
		t.Fatal("ciphertext contains the value")
	}
	got, err := Open(k, s)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if string(got.Value.Reveal()) != testValue {
		t.Error("opened value differs from sealed value")
	}
	want := Entry{
		User:      "slack:T1:U1",
		Name:      "github",
		Hosts:     []string{"*.githubusercontent.com", "api.github.com"},
		Injection: Injection{Kind: InjectHeader, Name: "X-Api-Key", Prefix: "token "},
	}
	got.Value = Secret{}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Secret{})); diff != "" {
		t.Errorf("Open (-want +got):\n%s", diff)
	}
}

func TestOpenFailsClosed(t *testing.T) {
	k := mustKey(t)
	other := mustKey(t)
	orig, err := Seal(k, testEntry())
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	clone := func() SealedEntry {
		s := orig
		s.Hosts = append([]string(nil), orig.Hosts...)
		s.KeyID = bytes.Clone(orig.KeyID)
		s.Salt = bytes.Clone(orig.Salt)
		s.Nonce = bytes.Clone(orig.Nonce)
		s.Ciphertext = bytes.Clone(orig.Ciphertext)
		return s
	}
	tests := []struct {
		name   string
		key    Key
		mutate func(*SealedEntry)
		want   error
	}{
		{"ciphertext byte", k, func(s *SealedEntry) { s.Ciphertext[0] ^= 1 }, ErrTampered},
		{"tag byte", k, func(s *SealedEntry) { s.Ciphertext[len(s.Ciphertext)-1] ^= 0x80 }, ErrTampered},
		{"truncated ciphertext", k, func(s *SealedEntry) { s.Ciphertext = s.Ciphertext[:3] }, ErrTampered},
		{"host added", k, func(s *SealedEntry) { s.Hosts = append(s.Hosts, "evil.example") }, ErrTampered},
		{"host replaced", k, func(s *SealedEntry) { s.Hosts[1] = "evil.example" }, ErrTampered},
		{"hosts reordered", k, func(s *SealedEntry) { s.Hosts[0], s.Hosts[1] = s.Hosts[1], s.Hosts[0] }, ErrTampered},
		{"hosts joined", k, func(s *SealedEntry) { s.Hosts = []string{s.Hosts[0] + s.Hosts[1]} }, ErrTampered},
		{"injection kind", k, func(s *SealedEntry) { s.Injection = Injection{Kind: InjectQuery, Name: "X-Api-Key"} }, ErrTampered},
		{"injection header name", k, func(s *SealedEntry) { s.Injection.Name = "X-Other" }, ErrTampered},
		{"injection prefix", k, func(s *SealedEntry) { s.Injection.Prefix = "" }, ErrTampered},
		{"name", k, func(s *SealedEntry) { s.Name = "github2" }, ErrTampered},
		{"moved to another user", k, func(s *SealedEntry) { s.User = "slack:T1:U2" }, ErrTampered},
		{"salt", k, func(s *SealedEntry) { s.Salt[5] ^= 1 }, ErrTampered},
		{"nonce", k, func(s *SealedEntry) { s.Nonce[0] ^= 1 }, ErrTampered},
		{"short nonce", k, func(s *SealedEntry) { s.Nonce = s.Nonce[:8] }, ErrTampered},
		{"wrong master key", other, func(*SealedEntry) {}, ErrWrongKey},
		{"key id edited to match other key", other, func(s *SealedEntry) { s.KeyID = KeyCheck(other)[:keyIDSize] }, ErrTampered},
		{"version", k, func(s *SealedEntry) { s.Version = 2 }, ErrUnsupportedVersion},
		{"zero key", Key{}, func(*SealedEntry) {}, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clone()
			tt.mutate(&s)
			got, err := Open(tt.key, s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open error = %v, want %v", err, tt.want)
			}
			if !got.Value.IsZero() {
				t.Error("Open returned a value despite failing")
			}
			checkNoSecret(t, err)
		})
	}
	// The original still opens: the mutations above worked on copies.
	if _, err := Open(k, orig); err != nil {
		t.Fatalf("Open(original): %v", err)
	}
}

func TestSealRejectsInvalidEntries(t *testing.T) {
	k := mustKey(t)
	tests := []struct {
		name   string
		mutate func(*Entry)
	}{
		{"empty user", func(e *Entry) { e.User = "" }},
		{"user with two parts", func(e *Entry) { e.User = "slack:U1" }},
		{"user with empty user part", func(e *Entry) { e.User = "slack:T1:" }},
		{"user with empty platform", func(e *Entry) { e.User = ":T1:U1" }},
		{"empty name", func(e *Entry) { e.Name = "" }},
		{"name with space", func(e *Entry) { e.Name = "git hub" }},
		{"empty value", func(e *Entry) { e.Value = Secret{} }},
		{"value with newline", func(e *Entry) { e.Value = SecretString(testValue + "\r\nX-Evil: 1") }},
		{"no hosts", func(e *Entry) { e.Hosts = nil }},
		{"bad host", func(e *Entry) { e.Hosts = []string{"exa mple.com"} }},
		{"wildcard tld", func(e *Entry) { e.Hosts = []string{"*.com"} }},
		{"wildcard alone", func(e *Entry) { e.Hosts = []string{"*"} }},
		{"unknown injection", func(e *Entry) { e.Injection = Injection{Kind: "cookie"} }},
		{"bearer with name", func(e *Entry) { e.Injection = Injection{Kind: InjectBearer, Name: "x"} }},
		{"header bad name", func(e *Entry) { e.Injection = Injection{Kind: InjectHeader, Name: "X Key"} }},
		{"header host", func(e *Entry) { e.Injection = Injection{Kind: InjectHeader, Name: "host"} }},
		{"header prefix CRLF", func(e *Entry) { e.Injection = Injection{Kind: InjectHeader, Name: "X-Key", Prefix: "a\r\n"} }},
		{"query empty", func(e *Entry) { e.Injection = Injection{Kind: InjectQuery} }},
		{"query reserved", func(e *Entry) { e.Injection = Injection{Kind: InjectQuery, Name: "a&b"} }},
		{"basic colon", func(e *Entry) { e.Injection = Injection{Kind: InjectBasic, Username: "a:b"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEntry()
			tt.mutate(&e)
			_, err := Seal(k, e)
			if !errors.Is(err, ErrInvalidEntry) && !errors.Is(err, ErrInvalidHost) {
				t.Fatalf("Seal error = %v, want ErrInvalidEntry", err)
			}
			checkNoSecret(t, err)
		})
	}
	if _, err := Seal(Key{}, testEntry()); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Seal with zero key: error = %v, want ErrInvalidKey", err)
	}
}

func TestRotate(t *testing.T) {
	oldKey, newKey := mustKey(t), mustKey(t)
	var sealed []SealedEntry
	values := map[string]string{}
	for i, kind := range []Injection{
		{Kind: InjectBearer},
		{Kind: InjectHeader, Name: "X-Key"},
		{Kind: InjectQuery, Name: "key"},
		{Kind: InjectBasic, Username: "bot"},
	} {
		e := testEntry()
		e.Name = "cred" + string(rune('a'+i))
		e.Value = SecretString(testValue + e.Name)
		e.Injection = kind
		s, err := Seal(oldKey, e)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		sealed = append(sealed, s)
		values[e.Name] = testValue + e.Name
	}
	rotated, err := Rotate(oldKey, newKey, sealed)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if len(rotated) != len(sealed) {
		t.Fatalf("Rotate returned %d entries, want %d", len(rotated), len(sealed))
	}
	for i, s := range rotated {
		e, err := Open(newKey, s)
		if err != nil {
			t.Errorf("Open(new, %q): %v", s.Name, err)
			continue
		}
		if string(e.Value.Reveal()) != values[s.Name] {
			t.Errorf("entry %q: value changed by rotation", s.Name)
		}
		if !s.CreatedAt.Equal(sealed[i].CreatedAt) {
			t.Errorf("entry %q: CreatedAt %v, want %v", s.Name, s.CreatedAt, sealed[i].CreatedAt)
		}
		if _, err := Open(oldKey, s); !errors.Is(err, ErrWrongKey) {
			t.Errorf("Open(old, rotated %q) error = %v, want ErrWrongKey", s.Name, err)
		}
		// Even with the key id forged, the old key opens nothing.
		forged := s
		forged.KeyID = KeyCheck(oldKey)[:keyIDSize]
		if _, err := Open(oldKey, forged); !errors.Is(err, ErrTampered) {
			t.Errorf("Open(old, forged key id %q) error = %v, want ErrTampered", s.Name, err)
		}
	}

	// All or nothing: one bad entry fails the whole rotation.
	bad := append([]SealedEntry(nil), sealed...)
	bad[2].User = "slack:T1:U9"
	if got, err := Rotate(oldKey, newKey, bad); !errors.Is(err, ErrTampered) || got != nil {
		t.Errorf("Rotate with tampered entry = %d entries, %v; want nil, ErrTampered", len(got), err)
	}
	if _, err := Rotate(oldKey, oldKey, sealed); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Rotate to the same key: error = %v, want ErrInvalidKey", err)
	}
}

func BenchmarkOpen(b *testing.B) {
	k := mustKey(b)
	s, err := Seal(k, testEntry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(k, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	k := mustKey(b)
	e := testEntry()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(k, e); err != nil {
			b.Fatal(err)
		}
	}
}
