package sandbox

import "syscall"

const mapNoReserve = syscall.MAP_NORESERVE

// recycleMemory: Linux's MADV_DONTNEED gives private anonymous pages back
// and makes them read as zeros, which slots relies on (see discardMemory).
const recycleMemory = true

// discardMemory gives the pages of b, part of a mapping of mapMemory, back
// to the system: they read as zeros again, and are backed only when next
// touched.
func discardMemory(b []byte) {
	if len(b) > 0 {
		_ = syscall.Madvise(b, syscall.MADV_DONTNEED)
	}
}
