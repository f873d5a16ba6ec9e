//go:build unix

package sandbox

import "syscall"

// mapMemory maps n bytes (rounded up to whole pages) of private anonymous
// memory, readable and writable, which the kernel backs with zeroed pages
// only as they are first touched. MAP_NORESERVE: the mapping reserves
// address space, not swap; the quota bounds what is touched.
func mapMemory(n uint64) ([]byte, bool) {
	page := uint64(syscall.Getpagesize())
	n = (n + page - 1) / page * page
	if n == 0 || n > 1<<40 {
		return nil, false
	}
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|mapNoReserve)
	if err != nil {
		return nil, false
	}
	return b, true
}

// unmapMemory gives a mapping of mapMemory back to the system.
func unmapMemory(b []byte) { _ = syscall.Munmap(b) }
