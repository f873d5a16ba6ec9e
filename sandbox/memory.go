package sandbox

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// limitedMemory backs one instance's linear memory and refuses to grow it
// past limit bytes, less what the instance's tables hold, so each tool
// gets its own memory limit under the runtime-wide page limit. memory.grow
// past the limit returns -1 to the guest; refused records that it
// happened, so a guest that then crashes is reported as out of memory.
type limitedMemory struct {
	limit uint64
	// refs is the instance's count of table references (see
	// interrupt.ReferencesExport), set once the instance exists.
	refs    api.Global
	buf     []byte
	started bool
	refused atomic.Bool
}

// tableBytes is the memory the instance's tables and element segments
// hold.
func (m *limitedMemory) tableBytes() uint64 {
	if m.refs == nil {
		return 0
	}
	return m.refs.Get() * interrupt.ReferenceBytes
}

var (
	_ experimental.MemoryAllocator = (*limitedMemory)(nil)
	_ experimental.LinearMemory    = (*limitedMemory)(nil)
)

// Allocate implements experimental.MemoryAllocator. One limitedMemory is
// made per instance, so it is its own LinearMemory. It reserves twice the
// module's initial memory: a Go-built guest grows its memory during
// _initialize, and growing past the reserve costs a new zeroed buffer and
// a copy, which took half of an instantiation.
func (m *limitedMemory) Allocate(capacity, maximum uint64) experimental.LinearMemory {
	m.buf = make([]byte, 0, min(2*capacity, maximum, m.limit))
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	// The module's declared minimum (with its tables) is checked against
	// the limit at load, so the first call (size = minimum) always
	// succeeds.
	first := !m.started
	m.started = true
	if !first && (size > m.limit || m.tableBytes() > m.limit-size) {
		m.refused.Store(true)
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		// Bytes between len and cap were never reachable by the guest
		// and are still zero.
		m.buf = m.buf[:size]
		return m.buf
	}
	c := min(max(size, 2*uint64(cap(m.buf))), m.limit)
	c = max(c, size)
	nb := make([]byte, size, c)
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *limitedMemory) Free() { m.buf = nil }
