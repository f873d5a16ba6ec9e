package attach_test

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/attach"
	"github.com/talonhq/talon/agent/attach/attachtest"
)

func TestSniff(t *testing.T) {
	var pngBuf bytes.Buffer
	_ = png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 2, 2)))
	tests := []struct {
		name string
		file string
		head []byte
		want attach.Kind
	}{
		{"csv", "data.csv", []byte("a,b\n1,2\n"), attach.Text},
		{"log without extension", "server", []byte("2024-01-01 ERROR boom\n"), attach.Text},
		{"go source", "main.go", []byte("package main\n\nfunc main() {}\n"), attach.Text},
		{"utf8 cut at the end", "notes.md", []byte("caf\xc3"), attach.Text},
		{"png named txt", "notes.txt", pngBuf.Bytes(), attach.Image},
		{"pdf", "x.bin", []byte("%PDF-1.4\n"), attach.PDF},
		{"binary named go", "main.go", []byte("\x7fELF\x02\x01\x01\x00\x00\x00"), attach.Other},
		{"zip", "a.zip", []byte("PK\x03\x04\x14\x00\x00\x00"), attach.Other},
		{"invalid utf8", "a.txt", []byte("\xff\xfe\xfd\xfc abc"), attach.Other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := attach.Sniff(tc.file, tc.head); got != tc.want {
				t.Errorf("Sniff(%q) = %v, want %v", tc.file, got, tc.want)
			}
		})
	}
}

func TestReadTextKeepsHeadAndTail(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&b, "line %05d\n", i)
	}
	s := b.String()
	ex, err := attach.ReadText(strings.NewReader(s), int64(len(s)), 3000)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.Cut || ex.Omitted <= 0 {
		t.Fatalf("Cut = %v, Omitted = %d; want a cut", ex.Cut, ex.Omitted)
	}
	if !strings.HasPrefix(ex.Text, "line 00000\n") || !strings.HasSuffix(ex.Text, "line 09999\n") {
		t.Errorf("excerpt does not keep the head and the tail:\n%.80s … %s", ex.Text, ex.Text[len(ex.Text)-40:])
	}
	if !strings.Contains(ex.Text, "bytes left out here") {
		t.Error("the cut is not marked")
	}
	if len(ex.Text) > 3200 {
		t.Errorf("excerpt is %d bytes, budget 3000", len(ex.Text))
	}
	for _, line := range strings.Split(strings.TrimSpace(ex.Text), "\n") {
		if !strings.HasPrefix(line, "line ") && !strings.HasPrefix(line, "[…") || strings.HasPrefix(line, "line ") && len(line) != 10 {
			t.Fatalf("half a line kept: %q", line)
		}
	}

	small, _ := attach.ReadText(strings.NewReader("héllo\x00\xff"), 9, 3000)
	if small.Cut || small.Text != "héllo\uFFFD" {
		t.Errorf("small text = %q (cut %v), want it whole, NUL removed, invalid byte replaced", small.Text, small.Cut)
	}
}

func TestBombRefusedBeforeDecoding(t *testing.T) {
	bomb := attachtest.BombHeader(50000, 50000)
	_, err := attach.ReadConfig(bytes.NewReader(bomb))
	if !errors.Is(err, attach.ErrTooLarge) {
		t.Fatalf("ReadConfig(50000×50000) = %v, want ErrTooLarge", err)
	}
	// Scale must refuse it on the header alone: there is no pixel data to
	// decode, so a decode attempt would fail with another error.
	_, err = attach.Scale(bytes.NewReader(bomb), int64(len(bomb)), 1568)
	if !errors.Is(err, attach.ErrTooLarge) {
		t.Fatalf("Scale(50000×50000) = %v, want ErrTooLarge", err)
	}
	if _, err := attach.ReadConfig(bytes.NewReader(attachtest.BombHeader(1, 25_000_001))); !errors.Is(err, attach.ErrTooLarge) {
		t.Errorf("a 1×25,000,001 strip: %v, want ErrTooLarge", err)
	}
	if _, err := attach.ReadConfig(strings.NewReader("not an image")); !errors.Is(err, attach.ErrNotImage) {
		t.Errorf("text: %v, want ErrNotImage", err)
	}
}

func photo(w, h int) *image.YCbCr {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Y[img.YOffset(x, y)] = uint8((x ^ y) + x/7)
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(i), uint8(i/3)
	}
	return img
}

func TestScale(t *testing.T) {
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, photo(4000, 3000), nil); err != nil {
		t.Fatal(err)
	}
	s, err := attach.Scale(bytes.NewReader(jpg.Bytes()), int64(jpg.Len()), 1568)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 1568 || s.Height != 1176 || s.MediaType != "image/jpeg" {
		t.Fatalf("scaled to %d×%d %s, want 1568×1176 image/jpeg", s.Width, s.Height, s.MediaType)
	}
	c, err := attach.ReadConfig(bytes.NewReader(s.Data))
	if err != nil || c.Width != 1568 || c.Height != 1176 {
		t.Fatalf("the scaled bytes read back as %+v, %v", c, err)
	}

	// A transparent PNG stays a PNG, portrait keeps its aspect.
	img := image.NewNRGBA(image.Rect(0, 0, 300, 900))
	img.Set(1, 1, color.NRGBA{R: 255, A: 128})
	var pb bytes.Buffer
	_ = png.Encode(&pb, img)
	s, err = attach.Scale(bytes.NewReader(pb.Bytes()), int64(pb.Len()), 300)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 100 || s.Height != 300 || s.MediaType != "image/png" {
		t.Errorf("scaled to %d×%d %s, want 100×300 image/png", s.Width, s.Height, s.MediaType)
	}
}

func TestReadPDF(t *testing.T) {
	doc := attachtest.PDF("Quarterly revenue grew 12 percent")
	ex, err := attach.ReadPDF(bytes.NewReader(doc), int64(len(doc)), 4000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ex.Text, "Quarterly revenue grew 12 percent") {
		t.Errorf("text = %q", ex.Text)
	}
	for _, bad := range [][]byte{[]byte("%PDF-1.4\ngarbage"), doc[:len(doc)/2], bytes.Repeat([]byte("%PDF"), 100)} {
		if _, err := attach.ReadPDF(bytes.NewReader(bad), int64(len(bad)), 4000); !errors.Is(err, attach.ErrPDF) {
			t.Errorf("malformed PDF: %v, want ErrPDF", err)
		}
	}
}
