package sandbox

import (
	"sync"
	"time"
)

// slots keeps the linear memories of closed instances, zeroed, for the
// next instances of the same memory limit: a few, charged to the quota
// while they wait, and given back to the system when the quota needs the
// room, when the pools go idle, and when the Runtime closes.
//
// Why: the first touch of each page of a fresh mapping is a page fault in
// which the kernel finds and zeroes a page, and an instance of a Go-built
// tool touches hundreds of pages (its data segment, the Go heap that
// _initialize builds, what the call allocates). Measured on a virtual
// machine, that was 700 faults and most of an instance's cost (10–30 µs
// each); clearing the same bytes of memory that is already resident costs
// a few hundred microseconds. wasmtime's pooling allocator does the same
// (its "keep resident" memories).
//
// A memory is recycled only when the Runtime closes an instance after its
// call has returned (see instance.close), never when wazero closes it
// during a call (proc_exit): nothing can touch it afterwards. Before reuse,
// every byte the last instance could reach (its memory's size) is zeroed,
// so a new instance starts exactly as on a fresh mapping: no instance ever
// sees another's data.
type slots struct {
	quota *quota
	// max is the most memories kept; zero keeps none.
	max int
	// keep bounds the bytes of a kept memory left resident: the pages
	// above it are given back to the system (and fault again on reuse),
	// so a tool that grew large neither holds its peak while idle nor
	// makes the next instance clear it all.
	keep uint64

	mu     sync.Mutex
	free   []*slot // most recently freed last; guarded by mu
	closed bool    // guarded by mu
	reused int64   // memories handed out again; guarded by mu
}

// slot is one kept linear memory.
type slot struct {
	region []byte // the whole mapping
	// limit is the memory limit of the instances it serves: the mapping
	// is at least that large.
	limit uint64
	// dirty is the number of bytes from the start that the last instance
	// could write: they are zeroed before reuse.
	dirty uint64
	// resident is the number of bytes from the start that may be backed
	// by memory (the rest was never touched, or given back): what the
	// slot is charged while free, and what the instance that takes it
	// holds from the start.
	resident uint64
	freed    time.Time
}

// defaultKeepResident is slots.keep: more than a Go-built tool's
// instance needs for an ordinary call, and clearing it costs well under a
// millisecond.
const defaultKeepResident = 16 * mib

// newSlots returns a cache of at most max memories; none where the system
// cannot recycle them (recycleMemory).
func newSlots(q *quota, max int) *slots {
	if !recycleMemory {
		max = 0
	}
	return &slots{quota: q, max: max, keep: defaultKeepResident}
}

// take returns a kept memory for an instance whose memory limit is limit,
// zeroed, with its charge (s.resident bytes) now the caller's; or nil.
func (c *slots) take(limit uint64) *slot {
	c.mu.Lock()
	var s *slot
	for i := len(c.free) - 1; i >= 0; i-- {
		if c.free[i].limit == limit {
			s = c.free[i]
			c.free = append(c.free[:i:i], c.free[i+1:]...)
			c.reused++
			break
		}
	}
	c.mu.Unlock()
	if s != nil {
		clear(s.region[:s.dirty])
		s.dirty = 0
	}
	return s
}

// put keeps s, whose instance was charged charged bytes, for reuse, and
// gives back to the quota the charge that s does not keep. It reports
// false, and does nothing, when s is not wanted (the cache is full or
// closed): the caller unmaps it and gives back the whole charge.
func (c *slots) put(s *slot, charged uint64) bool {
	if c.max <= 0 || charged < s.resident {
		return false
	}
	c.mu.Lock()
	if c.closed || len(c.free) >= c.max {
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	if s.resident > c.keep {
		discardMemory(s.region[c.keep:s.resident])
		s.resident = c.keep
		s.dirty = min(s.dirty, c.keep)
	}
	// charged covers the memory's size and what it held resident from
	// the start (limitedMemory.charge), so it covers s.resident.
	s.freed = time.Now()
	c.mu.Lock()
	if c.closed || len(c.free) >= c.max {
		c.mu.Unlock()
		return false
	}
	c.free = append(c.free, s)
	c.mu.Unlock()
	c.quota.release(charged - s.resident)
	return true
}

// drop unmaps kept memories, oldest first, until need bytes are given back
// to the quota or none is left (need 0: all of them), and returns the
// bytes given back. Only those freed before (when not zero) are dropped.
func (c *slots) drop(need uint64, before time.Time) uint64 {
	var gone []*slot
	var freed uint64
	c.mu.Lock()
	i := 0
	for ; i < len(c.free) && (need == 0 || freed < need); i++ {
		s := c.free[i]
		if !before.IsZero() && !s.freed.Before(before) {
			break
		}
		gone = append(gone, s)
		freed += s.resident
	}
	c.free = append(c.free[:0:0], c.free[i:]...)
	c.mu.Unlock()
	for _, s := range gone {
		unmapMemory(s.region)
	}
	c.quota.release(freed)
	return freed
}

// close unmaps every kept memory; nothing is kept afterwards.
func (c *slots) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.drop(0, time.Time{})
}

// count returns the number of kept memories, the bytes charged for them,
// and the number of memories reused so far.
func (c *slots) count() (kept int, bytes uint64, reused int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.free {
		bytes += s.resident
	}
	return len(c.free), bytes, c.reused
}
