package sandbox

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// diskCache keeps, under Config.CacheDir, what a tool's first use makes so
// that the next process skips it: the instrumented module (instrumented/,
// keyed by the raw module's SHA-256, the instrumenter's version and its
// limits) and wazero's compiled code (wazero-<version>-<arch>-<os>/, keyed
// by wazero from the instrumented module's hash and the CPU's features).
//
// Nothing read back is trusted as it is. An instrumented module carries the
// SHA-256 of its content and is decoded and validated again by wazero.
// wazero checks only a CRC-32 of a compiled file's code (not its function
// table), so every compiled file is recorded with its SHA-256 in
// compiledSums when this process sees it appear, with the instrumented
// modules being compiled then (its owners). Before a process's first
// compilation, every compiled file that nobody recorded is removed; before
// a module's compilation, the files it owns are checked against their
// digests, and removed (the module is compiled again) if they do not
// match. Only those: a call of one tool does not wait for the digests of
// every tool's code.
//
// This guards against corruption (a torn write, a full disk, a bad
// sector, a file left by another build) and against writers other than
// Talon's user. Someone who can write the data directory as Talon's user
// can change the digests too: the data directory must be as private as
// the binary (SECURITY.md).
type diskCache struct {
	dir string
	log zerolog.Logger

	mu     sync.Mutex
	listed bool                  // unrecorded files were removed; guarded by mu
	sums   map[string]*fileEntry // compiled file name -> its record; guarded by mu
	// checked holds the compiled files whose digest this process checked
	// (or computed); guarded by mu.
	checked map[string]bool
	// compiling counts the compilations in progress per module key: a
	// file that appears meanwhile may be any of theirs. Guarded by mu.
	compiling map[string]int
}

// fileEntry is what compiledSums records of a compiled file.
type fileEntry struct {
	sum    string          // hex SHA-256
	owners map[string]bool // keys of the instrumented modules it may hold
}

const (
	// compiledSums lists the compiled files' digests, as sha256sum does,
	// each followed by its owners: "<sum>  <file>  <key>[,<key>…]".
	compiledSums = "compiled.sums"
	// oldSums is where an earlier Talon kept digests without owners: its
	// files are removed as unrecorded, and compiled again once.
	oldSums = "compiled.sha256"
	// instrumentedDir holds instrumented modules.
	instrumentedDir = "instrumented"
	// usedTools names the tools loaded by earlier processes, one a line:
	// those WarmAfter loads first.
	usedTools = "used-tools"
	// instrumentedMagic starts an instrumented module's file; the SHA-256
	// of the rest follows, then References, Cost and State (little
	// endian) and Snapshot (see instrumentedHead), then the module.
	instrumentedMagic = "TALONIM\x02"
)

// instrumentedHead is the length of what precedes an instrumented module
// in its file, after the digest: its references and cost (8 bytes each),
// its state globals (4 bytes), whether it can be snapshotted (1 byte) and
// 3 bytes of padding.
const instrumentedHead = 24

// instrumenterVersion is interrupt.Version; tests change it.
var instrumenterVersion = interrupt.Version

// openDiskCache returns the cache in dir, or nil (and a warning in the
// log) when dir cannot be written: then every start compiles.
func openDiskCache(dir string, log zerolog.Logger) *diskCache {
	err := os.MkdirAll(filepath.Join(dir, instrumentedDir), 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".probe-*"); err == nil {
			f.Close()
			err = os.Remove(f.Name())
		}
	}
	if err != nil {
		log.Warn().Err(err).Str("dir", dir).
			Msg("compilation cache unusable: tools are compiled again at every start; make the directory writable by Talon")
		return nil
	}
	return &diskCache{dir: dir, log: log, checked: map[string]bool{}, compiling: map[string]int{}}
}

// instrumentedPath is where the instrumented form of raw is kept.
func (c *diskCache) instrumentedPath(raw []byte) string {
	h := sha256.New()
	sum := sha256.Sum256(raw)
	h.Write(sum[:])
	fmt.Fprintf(h, "interrupt %d %+v", instrumenterVersion, interrupt.DefaultLimits())
	return filepath.Join(c.dir, instrumentedDir, hex.EncodeToString(h.Sum(nil))+".wasm")
}

// instrumented returns the instrumented form of raw kept by an earlier
// process, and its key (see keepInstrumented); or nil. A file whose
// content does not match its digest is removed.
func (c *diskCache) instrumented(raw []byte) (*interrupt.Module, string) {
	p := c.instrumentedPath(raw)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, ""
	}
	const head = len(instrumentedMagic) + sha256.Size
	if len(b) < head+instrumentedHead || string(b[:len(instrumentedMagic)]) != instrumentedMagic {
		c.discard(p, "not an instrumented module")
		return nil, ""
	}
	sum := sha256.Sum256(b[head:])
	if !bytes.Equal(sum[:], b[len(instrumentedMagic):head]) {
		c.discard(p, "content does not match its digest")
		return nil, ""
	}
	body := b[head:]
	return &interrupt.Module{References: binary.LittleEndian.Uint64(body), Cost: binary.LittleEndian.Uint64(body[8:]),
			State: int(binary.LittleEndian.Uint32(body[16:])), Snapshot: body[20] == 1, Wasm: body[instrumentedHead:]},
		hex.EncodeToString(sum[:])
}

// keepInstrumented stores im as the instrumented form of raw, and returns
// its key: the SHA-256 of what is stored (the module and its counts),
// which names the compiled files it owns. Failing to store is not an
// error: the next process instruments again.
func (c *diskCache) keepInstrumented(raw []byte, im *interrupt.Module) string {
	body := make([]byte, instrumentedHead, instrumentedHead+len(im.Wasm))
	binary.LittleEndian.PutUint64(body, im.References)
	binary.LittleEndian.PutUint64(body[8:], im.Cost)
	binary.LittleEndian.PutUint32(body[16:], uint32(im.State))
	if im.Snapshot {
		body[20] = 1
	}
	body = append(body, im.Wasm...)
	sum := sha256.Sum256(body)
	var buf bytes.Buffer
	buf.WriteString(instrumentedMagic)
	buf.Write(sum[:])
	buf.Write(body)
	if err := writeAtomic(c.instrumentedPath(raw), buf.Bytes()); err != nil {
		c.log.Warn().Err(err).Msg("compilation cache: cannot keep an instrumented module; the next start instruments it again")
	}
	return hex.EncodeToString(sum[:])
}

// discard removes a cache file that cannot be used, saying why.
func (c *diskCache) discard(path, why string) {
	c.log.Warn().Str("file", path).Str("reason", why).Msg("compilation cache: file removed, its module is compiled again")
	_ = os.Remove(path)
}

// isHexName reports whether name is 64 hex digits, as wazero names its
// compiled files.
func isHexName(name string) bool {
	if len(name) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil
}

// isCompiledFile reports whether rel, a path relative to the cache
// directory, names one of wazero's compiled files: wazero-<version>/<hex>.
func isCompiledFile(rel string) bool {
	d, f, ok := strings.Cut(rel, "/")
	return ok && strings.HasPrefix(d, "wazero-") && isHexName(f)
}

// compiledFiles lists wazero's compiled files, relative to c.dir.
func (c *diskCache) compiledFiles() ([]string, error) {
	dirs, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		if !d.IsDir() || !strings.HasPrefix(d.Name(), "wazero-") {
			continue
		}
		fs, err := os.ReadDir(filepath.Join(c.dir, d.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if f.Type().IsRegular() && isHexName(f.Name()) {
				out = append(out, d.Name()+"/"+f.Name())
			}
		}
	}
	return out, nil
}

// begin readies the cache for compiling the instrumented module of key:
// once per process, it removes the compiled files nobody recorded; once
// per module, it checks the files that key owns against their digests
// and removes those that do not match. Call end when the compilation is
// over.
func (c *diskCache) begin(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.compiling[key]++
	if !c.listed {
		c.listed = true
		c.sums = c.readSums()
		_ = os.Remove(filepath.Join(c.dir, oldSums))
		names, err := c.compiledFiles()
		if err != nil {
			c.log.Warn().Err(err).Msg("compilation cache: cannot list it")
		}
		present := map[string]bool{}
		for _, name := range names {
			present[name] = true
			if _, ok := c.sums[name]; !ok {
				c.discard(filepath.Join(c.dir, name), "not recorded by Talon")
			}
		}
		n := len(c.sums)
		for name := range c.sums {
			if !present[name] {
				delete(c.sums, name)
			}
		}
		if len(c.sums) != n {
			c.writeSums()
		}
	}
	changed := false
	for name, e := range c.sums {
		if !e.owners[key] || c.checked[name] {
			continue
		}
		c.checked[name] = true
		p := filepath.Join(c.dir, name)
		if got, err := fileSum(p); err != nil || got != e.sum {
			c.discard(p, "content does not match its recorded digest")
			delete(c.sums, name)
			changed = true
		}
	}
	if changed {
		c.writeSums()
	}
}

// end records the compiled files that appeared since the last look, owned
// by key and by every other module being compiled meanwhile (either may
// have written them), and returns how many there were: the compilations
// that missed the cache.
func (c *diskCache) end(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() {
		if c.compiling[key]--; c.compiling[key] <= 0 {
			delete(c.compiling, key)
		}
	}()
	names, err := c.compiledFiles()
	if err != nil {
		return 0
	}
	n := 0
	for _, name := range names {
		if _, ok := c.sums[name]; ok {
			continue
		}
		sum, err := fileSum(filepath.Join(c.dir, name))
		if err != nil {
			continue
		}
		owners := map[string]bool{}
		for k := range c.compiling {
			owners[k] = true
		}
		c.sums[name] = &fileEntry{sum: sum, owners: owners}
		c.checked[name] = true
		n++
	}
	if n > 0 {
		c.writeSums()
	}
	return n
}

func (c *diskCache) readSums() map[string]*fileEntry {
	sums := map[string]*fileEntry{}
	f, err := os.Open(filepath.Join(c.dir, compiledSums))
	if err != nil {
		return sums
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "  ")
		if len(fields) != 3 || !isHexName(fields[0]) || !isCompiledFile(fields[1]) {
			continue
		}
		e := &fileEntry{sum: fields[0], owners: map[string]bool{}}
		for _, k := range strings.Split(fields[2], ",") {
			if isHexName(k) {
				e.owners[k] = true
			}
		}
		if len(e.owners) > 0 {
			sums[fields[1]] = e
		}
	}
	return sums
}

// writeSums replaces the digests file with c.sums and what another
// process recorded there meanwhile for files that still exist; the caller
// holds c.mu.
func (c *diskCache) writeSums() {
	for name, e := range c.readSums() {
		if _, ok := c.sums[name]; !ok {
			if _, err := os.Stat(filepath.Join(c.dir, name)); err == nil {
				c.sums[name] = e
			}
		}
	}
	names := make([]string, 0, len(c.sums))
	for n := range c.sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		e := c.sums[n]
		owners := make([]string, 0, len(e.owners))
		for k := range e.owners {
			owners = append(owners, k)
		}
		sort.Strings(owners)
		fmt.Fprintf(&b, "%s  %s  %s\n", e.sum, n, strings.Join(owners, ","))
	}
	if err := writeAtomic(filepath.Join(c.dir, compiledSums), b.Bytes()); err != nil {
		c.log.Warn().Err(err).Msg("compilation cache: cannot record digests; the next start compiles again")
	}
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeAtomic writes b to path through a temporary file, so that a reader
// sees the old content or the new one, whole.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// used returns the tools loaded by earlier processes.
func (c *diskCache) used() map[string]bool {
	b, err := os.ReadFile(filepath.Join(c.dir, usedTools))
	if err != nil || len(b) > 1<<20 {
		return nil
	}
	out := map[string]bool{}
	for _, n := range strings.Split(string(b), "\n") {
		if n != "" {
			out[n] = true
		}
	}
	return out
}

// markUsed adds name to the tools loaded by earlier processes.
func (c *diskCache) markUsed(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.used()
	if u[name] {
		return
	}
	if u == nil {
		u = map[string]bool{}
	}
	u[name] = true
	names := make([]string, 0, len(u))
	for n := range u {
		names = append(names, n)
	}
	sort.Strings(names)
	_ = writeAtomic(filepath.Join(c.dir, usedTools), []byte(strings.Join(names, "\n")+"\n"))
}
