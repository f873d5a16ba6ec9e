//go:build !unix

package sandbox

// mapMemory is not available here: linear memory lives on the Go heap.
func mapMemory(n uint64) ([]byte, bool) { return nil, false }

func unmapMemory(b []byte) {}

// recycleMemory: without mappings there is nothing to recycle.
const recycleMemory = false

func discardMemory(b []byte) {}
