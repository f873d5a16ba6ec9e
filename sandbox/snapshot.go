package sandbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strconv"
	"sync"

	"github.com/tetratelabs/wazero/api"

	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// snapshot is the state of a tool's instance at the end of _initialize,
// before any call: what a fresh instance must be given so that it is as
// if it had run _initialize itself. An instrumented module exports its own
// mutable globals (interrupt.StatePrefix); when the instrumenter found no
// other state (interrupt.Module.Snapshot: no imported mutable global, no
// table changed, no passive segment used), that state is the linear memory
// and those globals. A snapshot is taken once per loaded tool (so per
// module hash), from an instance whose _initialize returned without error,
// and is never written afterwards: a restored instance gets a copy, so
// nothing a call does reaches the snapshot or the next instance.
type snapshot struct {
	size    uint64   // bytes of linear memory
	runs    []span   // where the memory differs from a fresh instance's
	data    []byte   // the bytes of runs, one after the other
	globals []uint64 // the values of the exported state globals, in order
	// spots are the Go runtime's random states in memory, given fresh
	// seeds in each restored instance.
	spots []randSpot
}

// span is a range of linear memory.
type span struct{ off, n uint32 }

// snapChunk is the granularity at which a snapshot compares memory.
const snapChunk = 256

// state returns the instance's exported state globals, or nil if any is
// missing or immutable.
func stateGlobals(mod api.Module, n int) []api.MutableGlobal {
	gs := make([]api.MutableGlobal, n)
	for i := range gs {
		g, ok := mod.ExportedGlobal(interrupt.StatePrefix + strconv.Itoa(i)).(api.MutableGlobal)
		if !ok {
			return nil
		}
		gs[i] = g
	}
	return gs
}

// takeSnapshot returns the snapshot of an instance whose _initialize has
// just returned (see capture), having read reads from its random source;
// nil when what it read cannot be accounted for: nothing, or the 32 bytes
// from which a Go runtime seeds itself, whose states are then found (see
// locateGoRand).
func takeSnapshot(fresh, after []byte, gs []api.MutableGlobal, reads [][]byte) *snapshot {
	defer func() {
		for _, r := range reads {
			clear(r)
		}
	}()
	var spots []randSpot
	switch {
	case len(reads) == 0:
	case len(reads) == 1 && len(reads[0]) == 32:
		var ok bool
		if spots, ok = locateGoRand(after, [32]byte(reads[0])); !ok {
			return nil
		}
	default:
		return nil
	}
	s := capture(fresh, after, gs)
	s.spots = spots
	return s
}

// capture takes the snapshot of an instance whose _initialize has just
// returned: fresh is its memory as instantiation left it (the data
// segments, zeros elsewhere), after its memory now.
func capture(fresh, after []byte, gs []api.MutableGlobal) *snapshot {
	s := &snapshot{size: uint64(len(after)), globals: make([]uint64, len(gs))}
	for i, g := range gs {
		s.globals[i] = g.Get()
	}
	var zero [snapChunk]byte
	for off := 0; off < len(after); off += snapChunk {
		end := min(off+snapChunk, len(after))
		var was []byte
		if off < len(fresh) {
			was = fresh[off:min(end, len(fresh))]
		}
		now := after[off:end]
		if bytes.Equal(now[:len(was)], was) && bytes.Equal(now[len(was):], zero[:len(now)-len(was)]) {
			continue
		}
		if k := len(s.runs) - 1; k >= 0 && int(s.runs[k].off+s.runs[k].n) == off {
			s.runs[k].n += uint32(end - off)
		} else {
			s.runs = append(s.runs, span{off: uint32(off), n: uint32(end - off)})
		}
		s.data = append(s.data, now...)
	}
	return s
}

var errSnapshot = errors.New("the instance does not match the tool's snapshot")

// restore gives a freshly instantiated instance, whose _initialize has not
// run, the snapshot's state.
func (s *snapshot) restore(inst *instance, gs []api.MutableGlobal, random io.Reader) error {
	if len(gs) != len(s.globals) {
		return errSnapshot
	}
	mem := inst.mod.Memory()
	size := uint64(mem.Size())
	if size > s.size || (s.size-size)%65536 != 0 {
		return errSnapshot
	}
	if size < s.size {
		if _, ok := mem.Grow(uint32((s.size - size) / 65536)); !ok {
			return errSnapshot
		}
	}
	buf := inst.mem.buf
	if uint64(len(buf)) != s.size {
		return errSnapshot
	}
	data := s.data
	for _, r := range s.runs {
		copy(buf[r.off:r.off+r.n], data[:r.n])
		data = data[r.n:]
	}
	if err := reseed(buf, s.spots, random); err != nil {
		return err
	}
	for i, g := range gs {
		g.Set(s.globals[i])
	}
	return nil
}

// A Go-built guest's runtime draws its random numbers (map seeds,
// math/rand's top-level functions, select's order) from a ChaCha8 state
// kept in the runtime's m, seeded during _initialize from 32 bytes of
// WASI random_get, and a xorshift state next to it (cheaprand). Restored
// as they are, every instance would draw the same numbers. So a snapshot
// records where they are, and each restored instance gets fresh ones.
//
// Where they are is found, not assumed: the snapshot's instance reads its
// random bytes through a recorder, and the host derives from them what the
// Go runtime makes of them (its global ChaCha8 state seeded with the
// bytes, and the m's state seeded with four of its outputs, in every epoch
// it may have reached), finds that state in memory and checks it whole.
// A module whose _initialize read random bytes that cannot be accounted
// for this way is never snapshotted.

// Layout of internal/chacha8rand.State (buf [32]uint64, seed [4]uint64,
// i, n, c uint32) in the runtime's m, followed by cheaprand uint64.
const (
	chachaBuf       = 0
	chachaSeed      = 256
	chachaI         = 288
	chachaN         = 292
	chachaC         = 296
	chachaCheaprand = 304 // after the state, padded to 8 bytes
	chachaEnd       = 312
)

// How far the search goes: outputs of the runtime's global state taken
// before an m's seed, and epochs (of 124 outputs) an m's state may have
// advanced during _initialize; xorshift steps of cheaprand.
const (
	chachaSkip     = 32
	chachaEpochs   = 64
	chachaEpochLen = 3*32 + 28
	cheaprandSteps = 1 << 20
)

// chachaCandidate is a seed an m's state may hold, with what checks the
// rest of the state.
type chachaCandidate struct {
	seed  [4]uint64
	first uint64 // the first output of the m's state: cheaprand's start
}

// randRecorder is the random source of the instance a snapshot is taken
// from: it records what _initialize read, until stop.
type randRecorder struct {
	src   io.Reader
	mu    sync.Mutex
	on    bool
	reads [][]byte
}

func (r *randRecorder) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	r.mu.Lock()
	if r.on {
		r.reads = append(r.reads, bytes.Clone(p[:n]))
	}
	r.mu.Unlock()
	return n, err
}

// stop ends the recording and returns what was read.
func (r *randRecorder) stop() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	reads := r.reads
	r.reads = nil
	return reads
}

// chachaLE returns the 32 bytes of seed as State.Init reads them.
func chachaLE(seed [4]uint64) (b [32]byte) {
	for i, w := range seed {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

// chachaSeedOf returns c's current seed.
func chachaSeedOf(c *mrand.ChaCha8) (seed [4]uint64) {
	b, _ := c.MarshalBinary() // "chacha8:", 8 bytes used, 32 bytes seed
	for i := range seed {
		seed[i] = binary.LittleEndian.Uint64(b[16+8*i:])
	}
	return seed
}

// chachaCandidates returns, by their first word, the seeds a ChaCha8
// state may hold when the runtime's global state was seeded with seed:
// seeded with four consecutive outputs of the global state (an m's, or
// the global state's own once reseeded), in any of its first epochs.
func chachaCandidates(seed [32]byte) map[uint64][]chachaCandidate {
	global := mrand.NewChaCha8(seed)
	outs := make([]uint64, chachaSkip+4)
	for i := range outs {
		outs[i] = global.Uint64()
	}
	cands := map[uint64][]chachaCandidate{}
	add := func(c chachaCandidate) { cands[c.seed[0]] = append(cands[c.seed[0]], c) }
	for k := range chachaSkip + 1 {
		s := [4]uint64(outs[k : k+4])
		c := mrand.NewChaCha8(chachaLE(s))
		first := c.Uint64()
		add(chachaCandidate{seed: s, first: first})
		for range chachaEpochs - 1 {
			// After this, c has given the first output of the next
			// epoch, whose seed it now holds.
			for range chachaEpochLen {
				c.Uint64()
			}
			add(chachaCandidate{seed: chachaSeedOf(c), first: first})
		}
	}
	return cands
}

// randSpot is a ChaCha8 state in an instance's memory; cheap is set when
// an m's cheaprand follows it.
type randSpot struct {
	at    uint32
	cheap bool
}

// locateGoRand returns where mem holds ChaCha8 states derived from seed
// (see chachaCandidates). ok is false when none of them is an m's (no
// cheaprand checked out): the random state is then not accounted for.
func locateGoRand(mem []byte, seed [32]byte) (spots []randSpot, ok bool) {
	cands := chachaCandidates(seed)
	var ms int
	for off := chachaSeed; off+chachaEnd-chachaSeed <= len(mem); off += 8 {
		for _, cand := range cands[binary.LittleEndian.Uint64(mem[off:])] {
			at := off - chachaSeed
			st := mem[at : at+chachaEnd]
			if chachaSeedAt(st) != cand.seed {
				continue
			}
			if !checkChacha(st, cand) {
				continue // four outputs kept as they are: the hash key
			}
			sp := randSpot{at: uint32(at), cheap: checkCheaprand(st, cand)}
			if sp.cheap {
				ms++
			}
			spots = append(spots, sp)
			break
		}
	}
	return spots, ms > 0
}

// chachaSeedAt is the seed of the state st.
func chachaSeedAt(st []byte) (seed [4]uint64) {
	for i := range seed {
		seed[i] = binary.LittleEndian.Uint64(st[chachaSeed+8*i:])
	}
	return seed
}

// checkChacha reports whether st is a ChaCha8 state with cand's seed: its
// counter, i and n are in range and buf is the block its counter names.
func checkChacha(st []byte, cand chachaCandidate) bool {
	i := binary.LittleEndian.Uint32(st[chachaI:])
	n := binary.LittleEndian.Uint32(st[chachaN:])
	c := binary.LittleEndian.Uint32(st[chachaC:])
	if c%4 != 0 || c > 12 || i > n || (c < 12 && n != 32) || (c == 12 && n != 28) {
		return false
	}
	g := mrand.NewChaCha8(chachaLE(cand.seed))
	for range (c / 4) * 32 {
		g.Uint64()
	}
	for j := range n {
		if g.Uint64() != binary.LittleEndian.Uint64(st[chachaBuf+8*j:]) {
			return false
		}
	}
	return true
}

// checkCheaprand reports whether the word after st is an m's cheaprand:
// reached from cand.first by at most cheaprandSteps steps.
func checkCheaprand(st []byte, cand chachaCandidate) bool {
	want := binary.LittleEndian.Uint64(st[chachaCheaprand:])
	x := cand.first
	for range cheaprandSteps {
		if x == want {
			return true
		}
		x = xorshift(x)
	}
	return false
}

// xorshift is one step of the Go runtime's cheaprand on 32-bit and wasm
// targets (xorshift64+ on two 32-bit halves, little endian).
func xorshift(x uint64) uint64 {
	s1, s0 := uint32(x), uint32(x>>32)
	s1 ^= s1 << 17
	s1 = s1 ^ s0 ^ s1>>7 ^ s0>>16
	return uint64(s0) | uint64(s1)<<32
}

// reseed gives the random states at spots in buf fresh seeds, as the Go
// runtime's mrandinit would: a ChaCha8 state at the start of its first
// block, and a cheaprand that is not zero.
func reseed(buf []byte, spots []randSpot, src io.Reader) error {
	for _, sp := range spots {
		at := sp.at
		var fresh [40]byte
		if _, err := io.ReadFull(src, fresh[:]); err != nil {
			return err
		}
		st := buf[at : at+chachaEnd]
		seed := [32]byte(fresh[:32])
		g := mrand.NewChaCha8(seed)
		for j := range 32 {
			binary.LittleEndian.PutUint64(st[chachaBuf+8*j:], g.Uint64())
		}
		copy(st[chachaSeed:], seed[:])
		binary.LittleEndian.PutUint32(st[chachaI:], 0)
		binary.LittleEndian.PutUint32(st[chachaN:], 32)
		binary.LittleEndian.PutUint32(st[chachaC:], 0)
		if sp.cheap {
			cr := binary.LittleEndian.Uint64(fresh[32:])
			if uint32(cr) == 0 || cr>>32 == 0 {
				cr |= 1 | 1<<32 // xorshift stays at zero
			}
			binary.LittleEndian.PutUint64(st[chachaCheaprand:], cr)
		}
		clear(fresh[:])
	}
	return nil
}
