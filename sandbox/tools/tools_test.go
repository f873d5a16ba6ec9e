package tools

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// Bounds on what the built-in modules cost the binary. A Go-built module
// gzips to about a quarter of its size; stored uncompressed, the four take
// 16 MB.
const (
	maxStoredModules = 6 << 20 // bytes of all *.wasm.gz together
	minRatio         = 3       // module size / stored size, at least
)

func TestModulesAreStoredCompressed(t *testing.T) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		t.Fatal(err)
	}
	total, modules := 0, 0
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".yaml"):
			continue
		case !strings.HasSuffix(name, ".wasm.gz"):
			t.Errorf("%s is embedded: modules are embedded only as <name>.wasm.gz", name)
			continue
		}
		modules++
		b, err := fs.ReadFile(files, name)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		if !bytes.HasPrefix(b, []byte{0x1f, 0x8b, 8}) {
			t.Errorf("%s is not a gzip (deflate) stream", name)
		}
		info, err := fs.Stat(FS, strings.TrimSuffix(name, ".gz"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() < int64(minRatio*len(b)) {
			t.Errorf("%s: %d bytes stored for a %d-byte module, want at most 1/%d", name, len(b), info.Size(), minRatio)
		}
	}
	if modules == 0 {
		t.Fatal("no module is embedded")
	}
	if total > maxStoredModules {
		t.Errorf("the built-in modules take %d bytes in the binary, want at most %d", total, maxStoredModules)
	}
}

// sums reads modules.sha256: module name to the SHA-256 of what the build
// produced.
func sums(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("modules.sha256")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("modules.sha256: bad line %q", sc.Text())
		}
		out[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestModulesDecompressToWhatTheBuildProduced(t *testing.T) {
	want := sums(t)
	names, err := fs.Glob(FS, "*.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 || len(names) != len(want) {
		t.Fatalf("FS serves %v, modules.sha256 lists %d modules", names, len(want))
	}
	for _, name := range names {
		b, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want[name] {
			t.Errorf("%s decompresses to sha256 %s, the build produced %s", name, got, want[name])
		}
		f, err := FS.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		m := f.(*module)
		if err := m.readHeader(); err != nil || m.sum != want[name] {
			t.Errorf("%s: the gzip header names sha256 %q (err %v), the build produced %s", name, m.sum, err, want[name])
		}
		f.Close()
		if info, err := fs.Stat(FS, name); err != nil || info.Size() != int64(len(b)) {
			t.Errorf("%s: Stat says %v (err %v), read %d bytes", name, info.Size(), err, len(b))
		}
	}
}

func TestFSIsAValidFS(t *testing.T) {
	// fstest reads every file several times: on the real modules that is
	// seconds, so it checks the same code over small ones.
	g := gzipFS{fsys: fstest.MapFS{
		"a.wasm.gz": {Data: gz(t, []byte("\x00asm\x01\x00\x00\x00"))},
		"b.wasm.gz": {Data: gz(t, bytes.Repeat([]byte("module b "), 5000))},
		"a.yaml":    {Data: []byte("name: a\n")},
	}}
	if err := fstest.TestFS(g, "a.wasm", "b.wasm", "a.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, hidden := range []string{"html_text.wasm.gz", "nope.wasm", "sub/x.wasm", "../html_text.wasm"} {
		if _, err := fs.Stat(FS, hidden); err == nil {
			t.Errorf("Stat(%q): found, want an error", hidden)
		}
	}
	for _, name := range []string{"html_text.wasm", "html_text.yaml"} {
		if _, err := fs.Stat(FS, name); err != nil {
			t.Errorf("Stat(%q): %v", name, err)
		}
	}
}

// gz gzips b as the build does, with its SHA-256 in the header.
func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Comment = fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCorruptModuleFailsToRead(t *testing.T) {
	module := bytes.Repeat([]byte("\x00asm\x01\x00\x00\x00 some module bytes "), 1000)
	good := gz(t, module)
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	badCRC := slices.Clone(good)
	badCRC[len(badCRC)-8] ^= 1
	longer := slices.Clone(good)
	binary.LittleEndian.PutUint32(longer[len(longer)-4:], uint32(len(module)-1))
	cases := map[string][]byte{
		"flipped bit": flipped,
		"bad CRC":     badCRC,
		"length":      longer,
		"truncated":   append(good[:len(good)/2:len(good)/2], good[len(good)-8:]...),
	}
	for name, stored := range cases {
		t.Run(name, func(t *testing.T) {
			g := gzipFS{fsys: fstest.MapFS{"m.wasm.gz": {Data: stored}, "m.yaml": {Data: []byte("name: m\n")}}}
			// Listing and Stat read only the trailer: a damaged body does
			// not show until the module is read.
			if names, err := fs.Glob(g, "*.wasm"); err != nil || !slices.Equal(names, []string{"m.wasm"}) {
				t.Errorf("Glob: %v, %v", names, err)
			}
			if b, err := fs.ReadFile(g, "m.wasm"); err == nil {
				t.Errorf("read %d bytes without an error", len(b))
			}
		})
	}
	g := gzipFS{fsys: fstest.MapFS{"m.wasm.gz": {Data: good}}}
	if b, err := fs.ReadFile(g, "m.wasm"); err != nil || !bytes.Equal(b, module) {
		t.Errorf("intact module: %d bytes, err %v", len(b), err)
	}
}

func TestCachedFSDecompressesOncePerVersion(t *testing.T) {
	module := bytes.Repeat([]byte("\x00asm\x01\x00\x00\x00 cached module "), 2000)
	good := gz(t, module)
	// damaged has good's header and trailer around a broken body: only a
	// read that decompresses notices.
	damaged := slices.Clone(good)
	damaged[len(damaged)/2] ^= 0x40
	sum := fmt.Sprintf("%x", sha256.Sum256(module))
	cache := filepath.Join(t.TempDir(), "cache")
	cachedFile := filepath.Join(cache, "m-"+sum+".wasm")
	stale := filepath.Join(cache, "m-"+strings.Repeat("0", 64)+".wasm")
	other := filepath.Join(cache, "mm-"+strings.Repeat("0", 64)+".wasm")
	read := func(stored []byte) ([]byte, error) {
		return fs.ReadFile(gzipFS{fsys: fstest.MapFS{"m.wasm.gz": {Data: stored}}, cache: cache}, "m.wasm")
	}

	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("an older version"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := read(good); err != nil || !bytes.Equal(b, module) {
		t.Fatalf("first read: %d bytes, err %v", len(b), err)
	}
	if b, err := os.ReadFile(cachedFile); err != nil || !bytes.Equal(b, module) {
		t.Fatalf("cache file: %d bytes, err %v", len(b), err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the older version of the module is still cached (err %v)", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another tool's module was removed: %v", err)
	}

	// The second read comes from the cache: the damaged body is never
	// decompressed.
	if b, err := read(damaged); err != nil || !bytes.Equal(b, module) {
		t.Errorf("cached read: %d bytes, err %v", len(b), err)
	}

	// A damaged cache file is not used, and is replaced.
	bad := slices.Clone(module)
	bad[100] ^= 1
	if err := os.WriteFile(cachedFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(damaged); err == nil {
		t.Error("a cache file with the wrong CRC-32 was used")
	}
	if b, err := read(good); err != nil || !bytes.Equal(b, module) {
		t.Errorf("read past a damaged cache file: %d bytes, err %v", len(b), err)
	}
	if b, _ := os.ReadFile(cachedFile); !bytes.Equal(b, module) {
		t.Error("the damaged cache file was not replaced")
	}

	// A cache that cannot be written only costs time.
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	g := gzipFS{fsys: fstest.MapFS{"m.wasm.gz": {Data: good}}, cache: filepath.Join(blocked, "cache")}
	if b, err := fs.ReadFile(g, "m.wasm"); err != nil || !bytes.Equal(b, module) {
		t.Errorf("unwritable cache: %d bytes, err %v", len(b), err)
	}
}

func TestCachedFSServesTheBuiltModules(t *testing.T) {
	want := sums(t)
	cache := t.TempDir()
	for round := range 2 {
		g := CachedFS(cache)
		for name, sum := range want {
			b, err := fs.ReadFile(g, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != sum {
				t.Errorf("round %d: %s has sha256 %s, want %s", round, name, got, sum)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(cache, "*"))
	if len(files) != len(want) {
		t.Errorf("cache holds %v, want one file per module", files)
	}
}

// BenchmarkReadModule reads html_text's module as a tool's first use in a
// process does: decompressed from the binary (FS), or from the cache of
// decompressed modules that talon keeps (CachedFS, warm).
func BenchmarkReadModule(b *testing.B) {
	for _, tc := range []struct {
		name string
		fsys fs.FS
	}{
		{"decompress", FS},
		{"cached", CachedFS(b.TempDir())},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if _, err := fs.ReadFile(tc.fsys, "html_text.wasm"); err != nil { // warm the cache
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := fs.ReadFile(tc.fsys, "html_text.wasm"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Sum gives each module's SHA-256 as the build recorded it, the same as
// the module's bytes hash to, through the cached FS too; a name that is
// not a module has none.
func TestSumIsTheModulesSHA256(t *testing.T) {
	want := sums(t)
	if len(want) == 0 {
		t.Fatal("modules.sha256 lists no module")
	}
	for _, fsys := range []gzipFS{FS.(gzipFS), CachedFS(t.TempDir()).(gzipFS)} {
		for name, sum := range want {
			got, err := fsys.Sum(name)
			if err != nil || got != sum {
				t.Errorf("Sum(%s) = %q, %v; want %s", name, got, err, sum)
			}
			b, err := fs.ReadFile(fsys, name)
			if err != nil {
				t.Fatal(err)
			}
			if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
				t.Errorf("%s hashes to %x, not its recorded sum %s", name, h, sum)
			}
		}
		if _, err := fsys.Sum("http_fetch.yaml"); err == nil {
			t.Error("Sum of a manifest: nil error")
		}
	}
}
