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
//
// Every byte it reserves, with the tables, is charged to the Runtime's
// quota first: charged is what the instance holds of it, given back by
// Free. When the quota has no room for memory.grow even after evicting
// idle pooled instances, the grow fails too, and full records it.
type limitedMemory struct {
	limit uint64
	// reserve is the capacity to reserve at first: the size that the
	// tool's instances reached at the end of _initialize, so that they do
	// not grow (a new zeroed buffer and a copy) while they initialise.
	reserve uint64
	quota   *quota
	charged atomic.Uint64 // bytes charged to quota, given back by Free
	// refs is the instance's count of table references (see
	// interrupt.ReferencesExport), set once the instance exists.
	refs    api.Global
	buf     []byte
	started bool
	refused atomic.Bool // memory.grow past limit
	full    atomic.Bool // memory.grow refused by the quota
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
// made per instance, so it is its own LinearMemory. It reserves what the
// tool's instances needed at the end of _initialize (m.reserve), already
// charged to the quota: a Go-built guest grows its memory during
// _initialize, and growing past the reserve costs a new zeroed buffer and
// a copy, which took half of an instantiation. (It used to reserve twice
// the initial memory: 5.4 MiB for html_text, of which 3.3 are used.)
func (m *limitedMemory) Allocate(capacity, maximum uint64) experimental.LinearMemory {
	m.buf = make([]byte, 0, min(max(capacity, m.reserve), maximum, m.limit))
	return m
}

// charge makes sure memBytes of linear memory and the tables are charged
// to the quota, and reports whether they are.
func (m *limitedMemory) charge(memBytes uint64) bool {
	need := memBytes + m.tableBytes()
	c := m.charged.Load()
	if need <= c {
		return true
	}
	if !m.quota.grow(need - c) {
		return false
	}
	m.charged.Add(need - c)
	return true
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
	if !m.charge(c) {
		// No room to double: exactly what is asked, if that fits.
		if c = size; !m.charge(c) {
			m.full.Store(true)
			return nil
		}
	}
	nb := make([]byte, size, c)
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

// Free implements experimental.LinearMemory. It gives the instance's
// charge back to the quota; release makes that happen once.
func (m *limitedMemory) Free() {
	m.buf = nil
	m.release()
}

// release gives the instance's charge back to the quota, once.
func (m *limitedMemory) release() { m.quota.release(m.charged.Swap(0)) }
