package interrupt

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Export is the name under which the stop global is exported. A module that
// exports this name itself is refused.
const Export = "talon.interrupt"

// Ticks is the number of function calls and loop iterations between two
// refuels: about a microsecond of guest work per exit to Go, so the exits
// cost well under one percent.
const Ticks = 1000

// ErrUnsupported matches every error of Instrument: the module is malformed,
// or uses something the instrumenter does not know.
var ErrUnsupported = errors.New("the module cannot be instrumented")

// Section ids (WebAssembly 2.0, section 5.5).
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
)

// order is the position of each non-custom section id in a module.
var order = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secGlobal: 6,
	secExport: 7, secStart: 8, secElement: 9, secDataCount: 10, secCode: 11, secData: 12,
}

// Instrument returns a copy of wasm with the stop and fuel globals, the
// refuel function and the ticks added (see the package comment). Errors
// match ErrUnsupported.
func Instrument(wasm []byte) ([]byte, error) {
	out, err := instrument(wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return out, nil
}

type section struct {
	id      byte
	payload []byte
}

// counts are the sizes of a module's index spaces, before instrumenting.
type counts struct {
	types, funcs, globals, memories uint32 // funcs and globals: imported and defined
}

func instrument(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return nil, errors.New("not a WebAssembly 1.0 binary")
	}
	secs, err := split(wasm[8:])
	if err != nil {
		return nil, err
	}
	var c counts
	for _, s := range secs {
		var n uint32
		switch s.id {
		case secStart:
			// It would run while the module is instantiated, before the
			// host can hold the stop global.
			return nil, errors.New("the module has a start function; a tool is a reactor (export _initialize instead)")
		case secImport:
			err = imports(s.payload, &c)
		case secFunction:
			n, err = functions(s.payload, c.types)
		case secType, secGlobal, secMemory:
			n, _, err = newReader(s.payload).vecLen()
		}
		if err != nil {
			return nil, err
		}
		var total *uint32
		switch s.id {
		case secType:
			total = &c.types
		case secFunction:
			total = &c.funcs
		case secGlobal:
			total = &c.globals
		case secMemory:
			total = &c.memories
		default:
			continue
		}
		if *total+n < *total || *total+n > 1<<31 {
			return nil, fmt.Errorf("section %d: too many entries", s.id)
		}
		*total += n
	}
	if c.memories == 0 {
		return nil, errors.New("the module has no memory")
	}
	stop, fuel, refuel, charge := c.globals, c.globals+1, c.funcs, c.funcs+1

	// What each section gets appended: its added entries' count and bytes.
	tick := binary.AppendUvarint([]byte{0x23}, uint64(fuel)) // global.get $fuel
	tick = append(tick, 0x41, 0x01, 0x6b, 0x24)              // i32.const 1, i32.sub, global.set
	tick = binary.AppendUvarint(tick, uint64(fuel))          // $fuel
	tick = append(tick, 0x23)                                // global.get
	tick = binary.AppendUvarint(tick, uint64(fuel))          // $fuel
	tick = append(tick, 0x45, 0x04, 0x40, 0x10)              // i32.eqz, if, call
	tick = binary.AppendUvarint(tick, uint64(refuel))        // $refuel
	tick = append(tick, 0x0b)                                // end

	refuelBody := []byte{0x00, 0x41, 0x00, 0x40, 0x00, 0x1a, 0x23} // no locals; i32.const 0, memory.grow 0, drop, global.get
	refuelBody = binary.AppendUvarint(refuelBody, uint64(stop))    // $stop
	refuelBody = append(refuelBody, 0x04, 0x40, 0x00, 0x0b, 0x41)  // if unreachable end, i32.const
	refuelBody = appendSleb(refuelBody, Ticks)                     // Ticks
	refuelBody = append(refuelBody, 0x24)                          // global.set
	refuelBody = binary.AppendUvarint(refuelBody, uint64(fuel))
	refuelBody = append(refuelBody, 0x0b)

	// charge (param $n i32) (result i32): fuel -= (n >> 10) + 1, a refuel
	// if that used it up, and n back, for the bulk instruction that follows.
	chargeBody := []byte{0x00, 0x23}                                    // no locals; global.get
	chargeBody = binary.AppendUvarint(chargeBody, uint64(fuel))         // $fuel
	chargeBody = append(chargeBody, 0x20, 0x00, 0x41, 0x0a, 0x76, 0x6b) // local.get $n, i32.const 10, i32.shr_u, i32.sub
	chargeBody = append(chargeBody, 0x41, 0x01, 0x6b, 0x24)             // i32.const 1, i32.sub, global.set
	chargeBody = binary.AppendUvarint(chargeBody, uint64(fuel))         // $fuel
	chargeBody = append(chargeBody, 0x23)                               // global.get
	chargeBody = binary.AppendUvarint(chargeBody, uint64(fuel))         // $fuel
	chargeBody = append(chargeBody, 0x41, 0x01, 0x48, 0x04, 0x40, 0x10) // i32.const 1, i32.lt_s, if, call
	chargeBody = binary.AppendUvarint(chargeBody, uint64(refuel))       // $refuel
	chargeBody = append(chargeBody, 0x0b, 0x20, 0x00, 0x0b)             // end, local.get $n, end
	ins := inserts{tick: tick, charge: binary.AppendUvarint([]byte{0x10}, uint64(charge))}

	exportEntry := binary.AppendUvarint(nil, uint64(len(Export)))
	exportEntry = append(exportEntry, Export...)
	exportEntry = append(exportEntry, 0x03) // a global
	exportEntry = binary.AppendUvarint(exportEntry, uint64(stop))

	globalEntries := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41} // stop: (mut i32) 0; fuel: (mut i32) Ticks
	globalEntries = appendSleb(globalEntries, Ticks)
	globalEntries = append(globalEntries, 0x0b)

	codeEntries := append(binary.AppendUvarint(nil, uint64(len(refuelBody))), refuelBody...)
	codeEntries = binary.AppendUvarint(codeEntries, uint64(len(chargeBody)))
	codeEntries = append(codeEntries, chargeBody...)
	added := map[byte][]byte{
		secType:     {0x60, 0x00, 0x00, 0x60, 0x01, 0x7f, 0x01, 0x7f}, // [] -> [], [i32] -> [i32]
		secFunction: binary.AppendUvarint(binary.AppendUvarint(nil, uint64(c.types)), uint64(c.types)+1),
		secGlobal:   globalEntries,
		secExport:   exportEntry,
		secCode:     codeEntries,
	}
	addedCount := map[byte]uint64{secType: 2, secFunction: 2, secGlobal: 2, secExport: 1, secCode: 2}

	out := make([]byte, 0, len(wasm)+len(wasm)/8)
	out = append(out, wasm[:8]...)
	emit := func(id byte, n uint64, entries ...[]byte) {
		var size int
		for _, e := range entries {
			size += len(e)
		}
		size += len(binary.AppendUvarint(nil, n))
		out = append(out, id)
		out = binary.AppendUvarint(out, uint64(size))
		out = binary.AppendUvarint(out, n)
		for _, e := range entries {
			out = append(out, e...)
		}
	}
	done := map[byte]bool{}
	// addMissing emits, alone, the added entries of the sections the
	// module lacks that come before position pos.
	addMissing := func(pos int) {
		for _, id := range []byte{secType, secFunction, secGlobal, secExport, secCode} {
			if !done[id] && order[id] < pos {
				emit(id, addedCount[id], added[id])
				done[id] = true
			}
		}
	}
	for _, s := range secs {
		if s.id != secCustom {
			addMissing(order[s.id])
		}
		extra, ok := added[s.id]
		if !ok {
			emitRaw(&out, s.id, s.payload)
			continue
		}
		n, rest, err := newReader(s.payload).vecLen()
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
		switch s.id {
		case secExport:
			err = checkExports(n, rest)
		case secCode:
			rest, err = code(n, rest, c, ins)
		}
		if err != nil {
			return nil, err
		}
		emit(s.id, uint64(n)+addedCount[s.id], rest, extra)
		done[s.id] = true
	}
	addMissing(len(order) + 1)
	return out, nil
}

// emitRaw appends a section as it is.
func emitRaw(out *[]byte, id byte, payload []byte) {
	*out = append(*out, id)
	*out = binary.AppendUvarint(*out, uint64(len(payload)))
	*out = append(*out, payload...)
}

// appendSleb appends v as a signed LEB128 number.
func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// split reads the sections after the header. Each non-custom section may
// appear once, in the order of the specification.
func split(b []byte) ([]section, error) {
	var secs []section
	last := 0
	r := newReader(b)
	for !r.done() {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		payload, err := r.bytes(int(size))
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		if id != secCustom {
			pos, ok := order[id]
			if !ok {
				return nil, fmt.Errorf("unknown section id %d", id)
			}
			if pos <= last {
				return nil, fmt.Errorf("section %d out of order or repeated", id)
			}
			last = pos
		}
		secs = append(secs, section{id, payload})
	}
	return secs, nil
}

// imports counts the function, global and memory imports of an import
// section into c.
func imports(p []byte, c *counts) error {
	r := newReader(p)
	n, err := r.u32()
	if err != nil {
		return fmt.Errorf("import section: %w", err)
	}
	for range n {
		for range 2 { // module and field names
			l, err := r.u32()
			if err != nil {
				return fmt.Errorf("import section: %w", err)
			}
			if _, err := r.bytes(int(l)); err != nil {
				return fmt.Errorf("import section: %w", err)
			}
		}
		kind, err := r.byte()
		if err != nil {
			return fmt.Errorf("import section: %w", err)
		}
		switch kind {
		case 0x00: // function: type index
			var ti uint32
			if ti, err = r.u32(); err == nil && ti >= c.types {
				err = fmt.Errorf("function import of type %d, which does not exist", ti)
			}
			c.funcs++
		case 0x01: // table: reference type, limits
			if _, err = r.byte(); err == nil {
				err = r.limits()
			}
		case 0x02: // memory: limits
			err = r.limits()
			c.memories++
		case 0x03: // global: value type, mutability
			_, err = r.bytes(2)
			c.globals++
		default:
			err = fmt.Errorf("unknown import kind %#x", kind)
		}
		if err != nil {
			return fmt.Errorf("import section: %w", err)
		}
	}
	if !r.done() {
		return errors.New("import section: trailing bytes")
	}
	return nil
}

// functions reads a function section: the type index of each function,
// which must exist. (wazero v1.12 does not check them all before it uses
// them, and panics on a call to a function of a type that does not exist.)
func functions(p []byte, types uint32) (uint32, error) {
	r := newReader(p)
	n, err := r.u32()
	if err != nil {
		return 0, fmt.Errorf("function section: %w", err)
	}
	for i := range n {
		ti, err := r.u32()
		if err != nil {
			return 0, fmt.Errorf("function section: %w", err)
		}
		if ti >= types {
			return 0, fmt.Errorf("function section: function %d has type %d, which does not exist", i, ti)
		}
	}
	if !r.done() {
		return 0, errors.New("function section: trailing bytes")
	}
	return n, nil
}

// checkExports reads the n entries of an export section, refusing one
// that already exports Export.
func checkExports(n uint32, entries []byte) error {
	r := newReader(entries)
	for range n {
		l, err := r.u32()
		if err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		name, err := r.bytes(int(l))
		if err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		if string(name) == Export {
			return fmt.Errorf("the module exports %q, a name the host reserves", Export)
		}
		if _, err := r.byte(); err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		if _, err := r.u32(); err != nil {
			return fmt.Errorf("export section: %w", err)
		}
	}
	if !r.done() {
		return errors.New("export section: trailing bytes")
	}
	return nil
}

// inserts is the code added to the module's functions.
type inserts struct {
	tick   []byte // at every function start and loop head
	charge []byte // before every bulk memory or table instruction
}

// code returns the n bodies of a code section with their inserts.
func code(n uint32, entries []byte, c counts, ins inserts) ([]byte, error) {
	r := newReader(entries)
	out := make([]byte, 0, len(entries)+len(entries)/8)
	var body []byte
	for i := range n {
		size, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("code section: function %d: %w", i, err)
		}
		b, err := r.bytes(int(size))
		if err != nil {
			return nil, fmt.Errorf("code section: function %d: %w", i, err)
		}
		body, err = function(body[:0], b, c, ins)
		if err != nil {
			return nil, fmt.Errorf("code section: function %d: %w", i, err)
		}
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if !r.done() {
		return nil, errors.New("code section: trailing bytes")
	}
	return out, nil
}

// function appends to out the body b with a tick inserted after its local
// declarations and after the block type of every loop, and a charge
// before every bulk instruction (whose size operand is on top of the
// stack).
func function(out, b []byte, c counts, ins inserts) ([]byte, error) {
	r := newReader(b)
	n, err := r.u32() // local declarations: (count, value type)*
	if err != nil {
		return nil, err
	}
	for range n {
		if _, err := r.u32(); err != nil {
			return nil, err
		}
		if _, err := r.byte(); err != nil {
			return nil, err
		}
	}
	out = append(out, b[:r.pos]...)
	out = append(out, ins.tick...)
	copied := r.pos // b[:copied] is in out
	depth := 1      // the body is a block
	for depth > 0 {
		op, err := r.byte()
		if err != nil {
			return nil, err
		}
		switch op {
		case 0x02, 0x04: // block, if
			err = r.blockType()
			depth++
		case 0x03: // loop
			if err = r.blockType(); err == nil {
				out = append(out, b[copied:r.pos]...)
				out = append(out, ins.tick...)
				copied = r.pos
			}
			depth++
		case 0x0b: // end
			depth--
		case 0x23, 0x24: // global.get, global.set
			var g uint32
			if g, err = r.u32(); err == nil && g >= c.globals {
				err = fmt.Errorf("global %d does not exist", g)
			}
		case 0xfc:
			start := r.pos - 1
			var bulk bool
			if bulk, err = r.prefixedFC(); err == nil && bulk {
				out = append(out, b[copied:start]...)
				out = append(out, ins.charge...)
				copied = start
			}
		case 0x10, 0xd2: // call, ref.func
			var f uint32
			if f, err = r.u32(); err == nil && f >= c.funcs {
				err = fmt.Errorf("function %d does not exist", f)
			}
		default:
			err = r.immediates(op)
		}
		if err != nil {
			return nil, fmt.Errorf("at byte %d: %w", r.pos, err)
		}
	}
	if !r.done() {
		return nil, errors.New("bytes after the end of the body")
	}
	return append(out, b[copied:]...), nil
}
