package attach_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/talonhq/talon/agent/attach"
	"github.com/talonhq/talon/agent/attach/attachtest"
)

// FuzzFile feeds hostile bytes to everything that reads an attached file:
// sniffing, text excerpts, image headers and scaling, PDF extraction. None
// may panic; text is valid UTF-8 within its budget (plus its marks); an
// image is decoded only when its header is within the pixel bound.
func FuzzFile(f *testing.F) {
	f.Add("a.csv", []byte("a,b\n1,2\n"))
	f.Add("x.png", attachtest.PNG(3, 2))
	f.Add("bomb.png", attachtest.BombHeader(50000, 50000))
	f.Add("r.pdf", attachtest.PDF("hello"))
	f.Add("r.pdf", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"))
	f.Add("g.gif", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
	f.Add("w.webp", []byte("RIFF\x1a\x00\x00\x00WEBPVP8 \x0e\x00\x00\x00"))
	f.Add("t.txt", []byte("caf\xc3\xa9 \xff\xfe\x00 end"))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		r := bytes.NewReader(b)
		size := int64(len(b))
		kind, _ := attach.Sniff(name, b[:min(len(b), attach.SniffLen)])
		ex, err := attach.ReadText(r, size, 256)
		if err != nil {
			t.Fatalf("ReadText: %v", err)
		}
		if !utf8.ValidString(ex.Text) || strings.ContainsRune(ex.Text, 0) {
			t.Fatalf("ReadText gave invalid text %q", ex.Text)
		}
		if len(ex.Text) > 256*3+200 {
			t.Fatalf("ReadText gave %d bytes for a budget of 256", len(ex.Text))
		}
		switch kind {
		case attach.Image:
			c, err := attach.ReadConfig(bytes.NewReader(b))
			if err == nil && int64(c.Width)*int64(c.Height) > attach.MaxPixels {
				t.Fatalf("ReadConfig passed %d×%d", c.Width, c.Height)
			}
			if err == nil && int64(c.Width)*int64(c.Height) <= 1<<20 {
				s, err := attach.Scale(r, size, 64)
				if err == nil && (s.Width > 64 || s.Height > 64) {
					t.Fatalf("Scale gave %d×%d, want within 64", s.Width, s.Height)
				}
			}
		case attach.PDF:
			ex, err := attach.ReadPDF(r, size, 256)
			if err != nil && !errors.Is(err, attach.ErrPDF) {
				t.Fatalf("ReadPDF: %v", err)
			}
			if err == nil && !utf8.ValidString(ex.Text) {
				t.Fatalf("ReadPDF gave invalid UTF-8")
			}
		}
	})
}
