package tools

import (
	"compress/gzip"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

//go:generate go run ./internal/build

// files holds what the build commits: <name>.wasm.gz, each module gzipped,
// and <name>.yaml, its default manifest.
//
//go:embed *.wasm.gz *.yaml
var files embed.FS

// FS holds the built-in tools: <name>.wasm, the compiled module, and
// <name>.yaml, its default operator manifest (format in sandbox/ABI.md).
// An operator may override a manifest, or disable a tool, with a file of
// the same name in the configured tools directory.
//
// The modules are stored gzipped in the binary (a Go-built module shrinks
// to about a quarter) and decompressed as they are read, so only the first
// compilation of a tool in a process pays for it. Listing the directory or
// asking a module's size decompresses nothing. FS implements fs.ReadDirFS,
// fs.ReadFileFS and fs.StatFS.
var FS fs.FS = gzipFS{files}

// gzSuffix is the suffix of a stored module; the name FS gives it lacks it.
const gzSuffix = ".gz"

// gzipFS serves fsys with every <name>.wasm.gz file in its root as
// <name>.wasm, decompressed. The files of fsys must implement io.ReaderAt.
type gzipFS struct{ fsys fs.FS }

var (
	_ fs.ReadDirFS  = gzipFS{}
	_ fs.ReadFileFS = gzipFS{}
	_ fs.StatFS     = gzipFS{}
)

// stored returns the name of the file in g.fsys that holds name.
func stored(name string) string {
	if path.Ext(name) == ".wasm" && !strings.Contains(name, "/") {
		return name + gzSuffix
	}
	return name
}

// Open implements fs.FS.
func (g gzipFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		entries, err := g.ReadDir(".")
		if err != nil {
			return nil, err
		}
		return &dir{entries: entries}, nil
	}
	s := stored(name)
	if s == name {
		if strings.HasSuffix(name, ".wasm"+gzSuffix) {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return g.fsys.Open(name)
	}
	f, err := g.fsys.Open(s)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	info, err := moduleInfo(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &module{f: f, info: info}, nil
}

// ReadFile implements fs.ReadFileFS: a module is decompressed into a slice
// of exactly its size, and gzip's checksum and length are verified.
func (g gzipFS) ReadFile(name string) ([]byte, error) {
	f, err := g.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, ok := f.(*module)
	if !ok {
		return fs.ReadFile(g.fsys, name)
	}
	b := make([]byte, m.info.size)
	if _, err := io.ReadFull(m, b); err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	// Reading on to the end makes gzip check the CRC-32 and the length.
	if n, err := m.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("longer than its recorded size")
		}
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return b, nil
}

// Stat implements fs.StatFS. A module's size is read from its gzip trailer.
func (g gzipFS) Stat(name string) (fs.FileInfo, error) {
	f, err := g.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// ReadDir implements fs.ReadDirFS.
func (g gzipFS) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(g.fsys, name)
	if err != nil || name != "." {
		return entries, err
	}
	out := make([]fs.DirEntry, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".wasm"+gzSuffix) {
			out = append(out, e)
			continue
		}
		info, err := g.Stat(strings.TrimSuffix(n, gzSuffix))
		if err != nil {
			return nil, err
		}
		out = append(out, fs.FileInfoToDirEntry(info))
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// module is an open <name>.wasm: its gzip stream, decompressed on the
// first Read.
type module struct {
	f    fs.File
	info fileInfo
	zr   *gzip.Reader
}

func (m *module) Stat() (fs.FileInfo, error) { return m.info, nil }

func (m *module) Read(p []byte) (int, error) {
	if m.zr == nil {
		zr, err := gzip.NewReader(m.f)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", m.info.name, err)
		}
		m.zr = zr
	}
	return m.zr.Read(p)
}

func (m *module) Close() error { return m.f.Close() }

// moduleInfo describes the module gzipped in f from the last four bytes of
// its gzip stream, which hold the uncompressed length (modulo 2^32; the
// sandbox refuses modules anywhere near that size).
func moduleInfo(f fs.File, name string) (fileInfo, error) {
	st, err := f.Stat()
	if err != nil {
		return fileInfo{}, err
	}
	ra, ok := f.(io.ReaderAt)
	if !ok || st.Size() < 18+8 { // gzip header and trailer
		return fileInfo{}, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a gzip stream")}
	}
	var trailer [4]byte
	if _, err := ra.ReadAt(trailer[:], st.Size()-4); err != nil {
		return fileInfo{}, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return fileInfo{name: name, size: int64(binary.LittleEndian.Uint32(trailer[:]))}, nil
}

// fileInfo describes a module as FS serves it.
type fileInfo struct {
	name string
	size int64
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

// dir is FS's root directory opened for reading.
type dir struct {
	entries []fs.DirEntry
	off     int
}

func (d *dir) Stat() (fs.FileInfo, error) { return dirInfo{}, nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: ".", Err: errors.New("is a directory")}
}
func (d *dir) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.off += len(rest)
	return rest, nil
}

// dirInfo describes FS's root directory.
type dirInfo struct{}

func (dirInfo) Name() string       { return "." }
func (dirInfo) Size() int64        { return 0 }
func (dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (dirInfo) ModTime() time.Time { return time.Time{} }
func (dirInfo) IsDir() bool        { return true }
func (dirInfo) Sys() any           { return nil }
