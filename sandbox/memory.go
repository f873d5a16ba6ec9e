package sandbox

import (
	"context"
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
// idle pooled instances, the grow waits for room (ahead of the calls
// waiting to start) until the guest's context ends; then it fails, and
// full records it.
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
	mapped  bool        // buf is a mapping of limit bytes (see Allocate)
	// slots keeps the memory for the next instance when the Runtime
	// closes this one (recycle); nil never keeps it.
	slots *slots
	// slot is a kept memory that Allocate uses instead of a new mapping;
	// nil once used, or when there was none.
	slot *slot
	// floor is the number of bytes from the start that a kept memory held
	// resident when this instance took it: charged from the start, like
	// the memory's size.
	floor uint64
	// recycle is set by the Runtime when it closes the instance after its
	// call: Free then gives the memory to slots.
	recycle bool
	// ctx is the context of the guest code running in the instance
	// (_initialize, then the call): memory.grow waits for the quota
	// until it ends. Set before the guest runs.
	ctx context.Context
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
// made per instance, so it is its own LinearMemory.
//
// It maps the whole of the instance's limit as anonymous memory outside
// the Go heap (see mapMemory): the kernel backs a page only when the
// guest first touches it, with zeros, so reserving costs nothing,
// growing never copies, and Free gives the pages back to the system at
// once instead of after the next garbage collections (freed instance
// buffers on the Go heap kept the process's RSS at several times the
// memory in use). What is charged to the quota is the memory's size,
// every byte the guest can touch.
//
// A memory kept by slots from a closed instance (m.slot), already zeroed,
// is used instead of a new mapping: its pages are resident already, so
// the guest's first touches cost no page faults. What it holds resident
// (m.floor) is charged from the start, like the memory's size.
//
// Where mapping fails (or on systems without mmap), the memory is a Go
// slice reserving what the tool's instances needed at the end of
// _initialize (m.reserve): a Go-built guest grows its memory during
// _initialize, and growing past the reserve costs a new zeroed buffer and
// a copy. Such a slice is charged at its capacity.
func (m *limitedMemory) Allocate(capacity, maximum uint64) experimental.LinearMemory {
	if s := m.slot; s != nil {
		m.slot = nil
		m.mapped, m.buf, m.floor = true, s.region[:0], s.resident
		return m
	}
	// The whole limit, whatever the module's maximum (wazero keeps the
	// memory under it): so the mapping can serve, recycled, any instance
	// with this limit.
	if region, ok := mapMemory(m.limit); ok {
		m.mapped = true
		m.buf = region[:0]
		return m
	}
	m.buf = make([]byte, 0, min(max(capacity, m.reserve), maximum, m.limit))
	return m
}

// charge makes sure memBytes of linear memory and the tables are charged
// to the quota, and reports whether they are.
func (m *limitedMemory) charge(memBytes uint64) bool {
	need := max(memBytes, m.floor) + m.tableBytes()
	c := m.charged.Load()
	if need <= c {
		return true
	}
	ctx := m.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if !m.quota.grow(ctx, need-c) {
		return false
	}
	m.charged.Add(need - c)
	return true
}

// Reallocate implements experimental.LinearMemory.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	// The module's declared minimum (with its tables) is checked against
	// the limit at load, and charged before the instance is made, so the
	// first call (size = minimum) always succeeds.
	first := !m.started
	m.started = true
	if !first && (size > m.limit || m.tableBytes() > m.limit-size) {
		m.refused.Store(true)
		return nil
	}
	if m.mapped {
		// cap(m.buf) is the limit, rounded up to whole pages.
		if !m.charge(size) {
			m.full.Store(true)
			return nil
		}
		m.buf = m.buf[:size]
		return m.buf
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

// reserved is the memory charged for the buffer as it is now: its size
// when mapped, its capacity when on the Go heap.
func (m *limitedMemory) reserved() uint64 {
	if m.mapped {
		return max(uint64(len(m.buf)), m.floor)
	}
	return uint64(cap(m.buf))
}

// Free implements experimental.LinearMemory. It unmaps the memory and
// gives the instance's charge back to the quota; release makes that
// happen once. Nothing may touch the memory afterwards: the Runtime
// closes an instance only when no call runs in it (Close waits for the
// calls).
//
// When the Runtime closes the instance after its call (recycle), the
// memory goes to slots instead, with the charge of what it holds
// resident.
func (m *limitedMemory) Free() {
	if s := m.slot; s != nil { // taken for this instance, never used
		m.slot = nil
		unmapMemory(s.region)
	}
	if m.mapped && cap(m.buf) > 0 {
		size := uint64(len(m.buf))
		s := &slot{region: m.buf[:cap(m.buf)], limit: m.limit, dirty: size, resident: max(size, m.floor)}
		m.buf = nil
		if m.recycle && m.slots != nil {
			charged := m.charged.Swap(0)
			if m.slots.put(s, charged) {
				return
			}
			m.charged.Add(charged)
		}
		unmapMemory(s.region)
	}
	m.buf = nil
	m.release()
}

// release gives the instance's charge back to the quota, once.
func (m *limitedMemory) release() { m.quota.release(m.charged.Swap(0)) }
