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
// compiledSums when this process sees it appear, and checked against it
// before the first compilation of a process: a file that does not match,
// or that nobody recorded, is removed and its module compiled again.
//
// This guards against corruption (a torn write, a full disk, a bad
// sector, a file left by another build) and against writers other than
// Talon's user. Someone who can write the data directory as Talon's user
// can change the digests too: the data directory must be as private as
// the binary (SECURITY.md).
type diskCache struct {
	dir string
	log zerolog.Logger

	mu       sync.Mutex
	verified bool              // the root was checked against sums; guarded by mu
	sums     map[string]string // compiled file name -> hex SHA-256; guarded by mu
}

const (
	// compiledSums lists the compiled files' digests, as sha256sum does.
	compiledSums = "compiled.sha256"
	// instrumentedDir holds instrumented modules.
	instrumentedDir = "instrumented"
	// usedTools names the tools loaded by earlier processes, one a line:
	// those WarmAfter loads.
	usedTools = "used-tools"
	// instrumentedMagic starts an instrumented module's file; the SHA-256
	// of the rest follows, then References and Cost (little endian), then
	// the module.
	instrumentedMagic = "TALONIM\x01"
)

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
	return &diskCache{dir: dir, log: log}
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
// process, or nil. A file whose content does not match its digest is
// removed.
func (c *diskCache) instrumented(raw []byte) *interrupt.Module {
	p := c.instrumentedPath(raw)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	const head = len(instrumentedMagic) + sha256.Size
	if len(b) < head+16 || string(b[:len(instrumentedMagic)]) != instrumentedMagic {
		c.discard(p, "not an instrumented module")
		return nil
	}
	if sum := sha256.Sum256(b[head:]); !bytes.Equal(sum[:], b[len(instrumentedMagic):head]) {
		c.discard(p, "content does not match its digest")
		return nil
	}
	body := b[head:]
	return &interrupt.Module{References: binary.LittleEndian.Uint64(body), Cost: binary.LittleEndian.Uint64(body[8:]), Wasm: body[16:]}
}

// keepInstrumented stores im as the instrumented form of raw. Failing is
// not an error: the next process instruments again.
func (c *diskCache) keepInstrumented(raw []byte, im *interrupt.Module) {
	body := make([]byte, 16, 16+len(im.Wasm))
	binary.LittleEndian.PutUint64(body, im.References)
	binary.LittleEndian.PutUint64(body[8:], im.Cost)
	body = append(body, im.Wasm...)
	sum := sha256.Sum256(body)
	var buf bytes.Buffer
	buf.WriteString(instrumentedMagic)
	buf.Write(sum[:])
	buf.Write(body)
	if err := writeAtomic(c.instrumentedPath(raw), buf.Bytes()); err != nil {
		c.log.Warn().Err(err).Msg("compilation cache: cannot keep an instrumented module; the next start instruments it again")
	}
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

// verify checks, once per process and before the first compilation, every
// compiled file against the recorded digests, and removes those that do
// not match or were never recorded.
func (c *diskCache) verify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verified {
		return
	}
	c.verified = true
	c.sums = c.readSums()
	names, err := c.compiledFiles()
	if err != nil {
		c.log.Warn().Err(err).Msg("compilation cache: cannot list it")
		return
	}
	keep := map[string]string{}
	for _, name := range names {
		p := filepath.Join(c.dir, name)
		want, ok := c.sums[name]
		if !ok {
			c.discard(p, "not recorded by Talon")
			continue
		}
		if got, err := fileSum(p); err != nil || got != want {
			c.discard(p, "content does not match its recorded digest")
			continue
		}
		keep[name] = want
	}
	if len(keep) != len(c.sums) {
		c.sums = keep
		c.writeSums()
	}
}

// record adds the compiled files that appeared since the last look to the
// digests, and returns how many there were: the compilations that missed
// the cache.
func (c *diskCache) record() int {
	c.mu.Lock()
	defer c.mu.Unlock()
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
		c.sums[name] = sum
		n++
	}
	if n > 0 {
		c.writeSums()
	}
	return n
}

func (c *diskCache) readSums() map[string]string {
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(c.dir, compiledSums))
	if err != nil {
		return sums
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if ok && isHexName(sum) && isCompiledFile(name) {
			sums[name] = sum
		}
	}
	return sums
}

// writeSums replaces the digests file with c.sums and what another
// process recorded there meanwhile for files that still exist; the caller
// holds c.mu.
func (c *diskCache) writeSums() {
	for name, sum := range c.readSums() {
		if _, ok := c.sums[name]; !ok {
			if _, err := os.Stat(filepath.Join(c.dir, name)); err == nil {
				c.sums[name] = sum
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
		fmt.Fprintf(&b, "%s  %s\n", c.sums[n], n)
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
