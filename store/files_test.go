package store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

func TestFileDir(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	d := &store.FileDir{Dir: filepath.Join(t.TempDir(), "files"), Now: func() time.Time { return now }}
	h1, n, err := d.PutFile(ctx, strings.NewReader("hello"))
	if err != nil || n != 5 || h1 != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("PutFile = %s, %d, %v", h1, n, err)
	}
	h2, _, err := d.PutFile(ctx, strings.NewReader("hello"))
	if err != nil || h2 != h1 {
		t.Fatalf("the same bytes again: %s, %v", h2, err)
	}
	// A failed read keeps nothing, and leaves no temporary file behind.
	if _, _, err := d.PutFile(ctx, iotest.ErrReader(io.ErrUnexpectedEOF)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("PutFile of a failing reader = %v", err)
	}
	entries, _ := os.ReadDir(d.Dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the one hash folder", len(entries))
	}
	f, err := d.OpenFile(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, f.Size())
	_, _ = f.ReadAt(b, 0)
	f.Close()
	if !bytes.Equal(b, []byte("hello")) {
		t.Errorf("read back %q", b)
	}
	for _, bad := range []string{"../../etc/passwd", strings.Repeat("A", 64), ""} {
		if _, err := d.OpenFile(ctx, bad); !errors.Is(err, agent.ErrFileGone) {
			t.Errorf("OpenFile(%q) = %v, want ErrFileGone", bad, err)
		}
	}

	// Used 29 days ago: kept; then not used for 31 days: removed.
	now = now.Add(29 * 24 * time.Hour)
	if n, err := d.Sweep(ctx, 30*24*time.Hour); err != nil || n != 0 {
		t.Fatalf("Sweep at 29 days = %d, %v; want nothing removed", n, err)
	}
	if f, err := d.OpenFile(ctx, h1); err == nil { // a turn uses it
		f.Close()
	}
	now = now.Add(29 * 24 * time.Hour)
	if n, _ := d.Sweep(ctx, 30*24*time.Hour); n != 0 {
		t.Fatalf("Sweep 29 days after its last use removed %d", n)
	}
	now = now.Add(2 * 24 * time.Hour)
	if n, err := d.Sweep(ctx, 30*24*time.Hour); err != nil || n != 1 {
		t.Fatalf("Sweep 31 days after its last use = %d, %v; want 1", n, err)
	}
	if _, err := d.OpenFile(ctx, h1); !errors.Is(err, agent.ErrFileGone) {
		t.Errorf("OpenFile after the sweep = %v, want ErrFileGone", err)
	}
}
