package sandbox

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkMemorySource is what giving a new instance the memory
// html_text's instances hold after _initialize (3.4 MB) costs, four ways
// (see RATIONALE, "Why not make a tool's instance cheaper still?"):
// "fresh" touches each page of a new anonymous mapping (mapMemory), a
// page fault apiece; "cow-image" writes to each page of a private mapping
// of a file already in the page cache, as a copy-on-write memory image
// would, a fault and a copy apiece; "kept-clear" clears a kept memory
// that is resident already (slots); "kept-copy" copies the 1.6 MB data
// segment into it, as wazero does at every instantiation.
func BenchmarkMemorySource(b *testing.B) {
	const size, data = 3400 << 10, 1600 << 10
	page := syscall.Getpagesize()
	touch := func(m []byte) {
		for i := 0; i < size; i += page {
			m[i] = 1
		}
	}
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			m, ok := mapMemory(size)
			if !ok {
				b.Fatal("mapMemory failed")
			}
			touch(m)
			unmapMemory(m)
		}
	})
	b.Run("cow-image", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "image")
		image := make([]byte, size)
		for i := range image {
			image[i] = byte(i)
		}
		if err := os.WriteFile(path, image, 0o600); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for b.Loop() {
			m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE)
			if err != nil {
				b.Fatal(err)
			}
			touch(m)
			if err := syscall.Munmap(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	kept, ok := mapMemory(size)
	if !ok {
		b.Fatal("mapMemory failed")
	}
	defer unmapMemory(kept)
	touch(kept)
	b.Run("kept-clear", func(b *testing.B) {
		for b.Loop() {
			clear(kept)
		}
	})
	b.Run("kept-copy", func(b *testing.B) {
		segment := make([]byte, data)
		for i := range segment {
			segment[i] = byte(i)
		}
		for b.Loop() {
			copy(kept, segment)
		}
	})
}
