package leak

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzScan(f *testing.F) {
	f.Add([]byte("my key is s3cr3t-value-123 ok"), []byte("s3cr3t-value-123"))
	f.Add([]byte("czNjcjN0LXZhbHVlLTEyMw== and 73336372337420"), []byte("s3cr3t-value-123"))
	f.Add([]byte("Authorization: Bearer "+rnd(1, alnum, 40)), []byte("\xff\xfe\x00binary!"))
	f.Add([]byte(pemBlock("PRIVATE KEY", 2, "\n")), []byte("pass%20word&x"))
	f.Add([]byte(jwtToken(`{"alg":"HS256"}`)+" sk-"+rnd(2, alnum, 48)), []byte(`quote"back\slash`))
	f.Fuzz(func(t *testing.T, text, secret []byte) {
		d := New([][]byte{secret})
		fs := d.Scan(text)
		prev := 0
		for _, f := range fs {
			if f.Start < prev || f.End <= f.Start || f.End > len(text) {
				t.Fatalf("bad finding %+v after offset %d in %d bytes", f, prev, len(text))
			}
			prev = f.End
		}
		out, _ := d.Redact(string(text))
		// A user secret left after redaction may only be one made of marker
		// text: inside a marker, or spanning a marker's brackets.
		for _, f := range d.Scan([]byte(out)) {
			if f.Kind != KindUserSecret {
				continue
			}
			s := out[f.Start:f.End]
			if !strings.ContainsAny(s, "[]") && !insideMarker(out, f) {
				t.Fatalf("user secret survives redaction at %d..%d", f.Start, f.End)
			}
		}
		if len(secret) >= MinSecretLen && !bytes.ContainsAny(secret, "[]") && bytes.Contains(text, secret) &&
			!strings.Contains(Marker(KindUserSecret)+Marker(KindJWT), string(secret)) && strings.Contains(out, string(secret)) {
			t.Fatalf("raw secret survives redaction")
		}
	})
}

// insideMarker reports whether f lies inside one "[REDACTED:...]" marker.
func insideMarker(out string, f Finding) bool {
	open := strings.LastIndex(out[:min(len(out), f.Start+len("[REDACTED:"))], "[REDACTED:")
	if open < 0 {
		return false
	}
	close := strings.IndexByte(out[open:], ']')
	return close >= 0 && f.End <= open+close+1
}
