package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// chunked returns data in reads of the given sizes (cycled), so that a
// secret can straddle any boundary.
type chunked struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%64 + 1
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunked) Close() error { return nil }

// FuzzStreamRedact: whatever the body and however it arrives in pieces, no
// injected value leaves the streamed body, and a body within the cap comes
// out as the whole-body replacement would make it.
func FuzzStreamRedact(f *testing.F) {
	f.Add([]byte("auth=Bearer s3cret-token-value end"), []byte("s3cret-token-value"), []byte{1, 7, 3})
	f.Add([]byte("s3cret-s3cret-token-valuetoken-value"), []byte("s3cret-token-value"), []byte{5})
	f.Add([]byte("aaaaaaaaab"), []byte("aab"), []byte{0, 1})
	// A value that begins as the marker ends: the marker and the text after
	// it spell the value again, within a read and across two.
	f.Add([]byte("]"+strings.Repeat("0", 28)), []byte("]0000000"), []byte{48})
	f.Add([]byte("]"+strings.Repeat("0", 200)), []byte("]0000000"), []byte{9, 3})
	f.Add([]byte("xxD]abcdefg-abcdefg-"), []byte("D]abcdefg"), []byte{1})
	f.Fuzz(func(t *testing.T, body, secret, sizes []byte) {
		if len(secret) < 8 || bytes.Contains([]byte(Redacted), secret) || len(body) > 1<<16 {
			return // the vault refuses values under 8 bytes
		}
		_, cancel := context.WithCancel(context.Background())
		sb := &streamBody{rc: &chunked{data: body, sizes: sizes}, cancel: cancel, secrets: [][]byte{secret}, limit: 1 << 20}
		got, err := io.ReadAll(sb)
		if err != nil {
			var de *DeniedError
			if !errors.As(err, &de) {
				t.Fatalf("read: %v", err)
			}
		}
		if bytes.Contains(got, secret) {
			t.Fatalf("secret %q left in %q", secret, got)
		}
		// Replacing as it streams must not differ from replacing the whole
		// body once it is safe (no overlap of the value with its marker).
		want := bytes.ReplaceAll(body, secret, []byte(Redacted))
		if !bytes.Contains(want, secret) && !bytes.Equal(got, want) {
			t.Fatalf("streamed %q, whole-body replacement %q", got, want)
		}
	})
}
