package tools

import (
	"compress/gzip"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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
// to about a quarter) and decompressed when they are read. Listing the
// directory or asking a module's size decompresses nothing. FS implements
// fs.ReadDirFS, fs.ReadFileFS and fs.StatFS.
var FS fs.FS = gzipFS{fsys: files}

// CachedFS is FS keeping every module it decompresses in dir (created when
// first needed), so that later processes read it from there instead of
// decompressing it again: a tool is read once per process, on its first
// use, and decompressing one costs about as much as the rest of that first
// use over a warm compilation cache. A file in dir is used only when its
// length and CRC-32 are the module's; dir holds one file per built-in tool
// (<name>-<sha256>.wasm). Failing to write dir is not an error: the module
// is served from memory.
func CachedFS(dir string) fs.FS { return gzipFS{fsys: files, cache: dir} }

// gzSuffix is the suffix of a stored module; the name FS gives it lacks it.
const gzSuffix = ".gz"

// sumPrefix starts the comment of a stored module's gzip header; the
// module's SHA-256 in hex follows.
const sumPrefix = "sha256:"

// gzipFS serves fsys with every <name>.wasm.gz file in its root as
// <name>.wasm, decompressed. The files of fsys must implement io.ReaderAt.
type gzipFS struct {
	fsys  fs.FS
	cache string // directory of decompressed modules; "" for none
}

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
	m := &module{f: f}
	if err := m.readTrailer(name); err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// ReadFile implements fs.ReadFileFS: a module is decompressed into a slice
// of exactly its size, and gzip's checksum and length are verified. With a
// cache directory, a module found there is read instead, and a module
// decompressed is written there.
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
	if err := m.readHeader(); err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	cached := ""
	if g.cache != "" && m.sum != "" {
		cached = filepath.Join(g.cache, strings.TrimSuffix(name, ".wasm")+"-"+m.sum+".wasm")
		if b, err := os.ReadFile(cached); err == nil && m.matches(b) {
			return b, nil
		}
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
	if cached != "" {
		writeCache(cached, b)
	}
	return b, nil
}

// writeCache writes b to path through a temporary file, so that a reader
// never sees part of it, and removes the other versions of the same module.
// It gives up silently: the cache only saves time.
func writeCache(path string, b []byte) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), path) != nil {
		os.Remove(f.Name())
		return
	}
	base := filepath.Base(path)
	tool := base[:strings.LastIndexByte(base, '-')+1]
	others, _ := filepath.Glob(filepath.Join(dir, tool+"*.wasm"))
	for _, o := range others {
		if filepath.Base(o) != base {
			os.Remove(o)
		}
	}
}

// Sum returns the SHA-256, in hex, of module name (<name>.wasm) as the
// build recorded it in the stored module's gzip header: reading it
// decompresses nothing. A replica's digest of its tools uses it rather
// than hashing the modules' 16 MB at every start.
func (g gzipFS) Sum(name string) (string, error) {
	f, err := g.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	m, ok := f.(*module)
	if !ok {
		return "", &fs.PathError{Op: "sum", Path: name, Err: errors.New("not a module")}
	}
	if err := m.readHeader(); err != nil {
		return "", err
	}
	if m.sum == "" {
		return "", &fs.PathError{Op: "sum", Path: name, Err: errors.New("no SHA-256 recorded in its header")}
	}
	return m.sum, nil
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

// module is an open <name>.wasm: its gzip stream, decompressed as it is
// read.
type module struct {
	f    fs.File
	info fileInfo
	crc  uint32 // of the module, from the gzip trailer
	zr   *gzip.Reader
	sum  string // the module's SHA-256 in hex, from the gzip header, or ""
}

func (m *module) Stat() (fs.FileInfo, error) { return m.info, nil }

func (m *module) Read(p []byte) (int, error) {
	if err := m.readHeader(); err != nil {
		return 0, err
	}
	return m.zr.Read(p)
}

func (m *module) Close() error { return m.f.Close() }

// readHeader reads the gzip header, which decompresses nothing.
func (m *module) readHeader() error {
	if m.zr != nil {
		return nil
	}
	zr, err := gzip.NewReader(m.f)
	if err != nil {
		return fmt.Errorf("%s: %w", m.info.name, err)
	}
	m.zr = zr
	if s, ok := strings.CutPrefix(zr.Comment, sumPrefix); ok && len(s) == 64 && strings.Trim(s, "0123456789abcdef") == "" {
		m.sum = s
	}
	return nil
}

// readTrailer reads the last eight bytes of the gzip stream: the CRC-32 of
// the module and its length (modulo 2^32; the sandbox refuses modules
// anywhere near that size).
func (m *module) readTrailer(name string) error {
	st, err := m.f.Stat()
	if err != nil {
		return err
	}
	ra, ok := m.f.(io.ReaderAt)
	if !ok || st.Size() < 18 { // the smallest gzip stream
		return &fs.PathError{Op: "open", Path: name, Err: errors.New("not a gzip stream")}
	}
	var trailer [8]byte
	if _, err := ra.ReadAt(trailer[:], st.Size()-8); err != nil {
		return &fs.PathError{Op: "open", Path: name, Err: err}
	}
	m.crc = binary.LittleEndian.Uint32(trailer[:4])
	m.info = fileInfo{name: name, size: int64(binary.LittleEndian.Uint32(trailer[4:]))}
	return nil
}

// matches reports whether b has the module's length and CRC-32.
func (m *module) matches(b []byte) bool {
	return int64(len(b)) == m.info.size && crc32.ChecksumIEEE(b) == m.crc
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
