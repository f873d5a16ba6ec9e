//go:build unix && !linux

package sandbox

// mapNoReserve is Linux's MAP_NORESERVE; elsewhere mappings reserve no
// swap up front anyway.
const mapNoReserve = 0

// recycleMemory: elsewhere, MADV_DONTNEED may leave a page's content in
// place, so linear memories are not recycled (see slots).
const recycleMemory = false

func discardMemory(b []byte) {}
