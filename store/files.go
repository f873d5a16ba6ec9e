package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// FileDir keeps the files people attach, each once under the hex SHA-256
// of its bytes: <Dir>/<first two hex digits>/<hash>. A file's modification
// time is when a turn last used it (stored or read it); Sweep removes the
// files no turn has used for the retention period, whichever sessions
// reference them. Nothing else deletes a file: /new retires a session and
// keeps what it referenced, for the sweeper to judge. It is safe for
// concurrent use, within one process (the data directory's lock).
type FileDir struct {
	// Dir is the directory; it is created when needed, with mode 0700.
	Dir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ agent.FileStore = (*FileDir)(nil)

func (d *FileDir) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// path is where hash is kept; ok is false for anything but 64 lowercase
// hex digits, so that a hash read from the history never names another
// path.
func (d *FileDir) path(hash string) (string, bool) {
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return "", false
	}
	return filepath.Join(d.Dir, hash[:2], hash), true
}

// PutFile stores what r yields, streaming it to a temporary file while it
// is hashed, and returns its hash and size. Bytes already stored are kept
// once (their time is refreshed). An error of r is returned as it is
// (wrapped), and nothing is kept.
func (d *FileDir) PutFile(ctx context.Context, r io.Reader) (string, int64, error) {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return "", 0, fmt.Errorf("store: files: %w", err)
	}
	tmp, err := os.CreateTemp(d.Dir, ".incoming-*")
	if err != nil {
		return "", 0, fmt.Errorf("store: files: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("store: files: %w", cerr)
	}
	if err != nil {
		return "", 0, err
	}
	hash := hex.EncodeToString(h.Sum(nil))
	p, _ := d.path(hash)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", 0, fmt.Errorf("store: files: %w", err)
	}
	if _, err := os.Stat(p); err == nil {
		now := d.now()
		_ = os.Chtimes(p, now, now)
		return hash, n, nil
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", 0, fmt.Errorf("store: files: %w", err)
	}
	now := d.now()
	_ = os.Chtimes(p, now, now)
	return hash, n, nil
}

// OpenFile opens the file stored under hash and refreshes its time. A
// file that is not stored (never, or swept) is an error wrapping
// agent.ErrFileGone.
func (d *FileDir) OpenFile(ctx context.Context, hash string) (agent.StoredFile, error) {
	p, ok := d.path(hash)
	if !ok {
		return nil, fmt.Errorf("store: file %.16q: %w", hash, agent.ErrFileGone)
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: file %.12s: %w", hash, agent.ErrFileGone)
	}
	if err != nil {
		return nil, fmt.Errorf("store: files: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: files: %w", err)
	}
	now := d.now()
	_ = os.Chtimes(p, now, now)
	return storedFile{f, st.Size()}, nil
}

type storedFile struct {
	*os.File
	size int64
}

func (s storedFile) Size() int64 { return s.size }

// Sweep removes the files no turn has used for retention, and temporary
// files left by a crash, and returns how many it removed.
func (d *FileDir) Sweep(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := d.now().Add(-retention)
	removed := 0
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		if info.ModTime().Before(cutoff) {
			if err := os.Remove(p); err == nil {
				removed++
			}
		}
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("store: sweep files: %w", err)
	}
	return removed, nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
