package tools

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io/fs"
	"os"
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
		if info, err := fs.Stat(FS, name); err != nil || info.Size() != int64(len(b)) {
			t.Errorf("%s: Stat says %v (err %v), read %d bytes", name, info.Size(), err, len(b))
		}
	}
}

func TestFSIsAValidFS(t *testing.T) {
	// fstest reads every file several times: on the real modules that is
	// seconds, so it checks the same code over small ones.
	g := gzipFS{fstest.MapFS{
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

// gz gzips b.
func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
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
			g := gzipFS{fstest.MapFS{"m.wasm.gz": {Data: stored}, "m.yaml": {Data: []byte("name: m\n")}}}
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
	g := gzipFS{fstest.MapFS{"m.wasm.gz": {Data: good}}}
	if b, err := fs.ReadFile(g, "m.wasm"); err != nil || !bytes.Equal(b, module) {
		t.Errorf("intact module: %d bytes, err %v", len(b), err)
	}
}
