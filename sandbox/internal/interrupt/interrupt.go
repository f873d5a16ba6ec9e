package interrupt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Names under which the added globals are exported. A module that exports
// a name beginning with ReservedPrefix itself is refused.
const (
	// Export is the stop global (i32): the host sets it to make the guest
	// trap at its next refuel.
	Export = "talon.interrupt"
	// MemoryLimitExport is the instance's memory limit in bytes (i64),
	// which the host sets after instantiation: linear memory and table
	// references (8 bytes each) together may not exceed it. Until it is
	// set, every table.grow fails.
	MemoryLimitExport = "talon.memory_limit"
	// ReferencesExport is the number of table and element segment
	// references the instance holds (i64), for the host to count in the
	// memory limit when linear memory grows.
	ReferencesExport = "talon.references"
	// RefusedExport is set to 1 (i32) when a table.grow was refused
	// because of the memory limit.
	RefusedExport = "talon.table_refused"
	// StatePrefix begins the exports of the module's own mutable globals,
	// numbered from 0 in index order ("talon.state.0", …): with the linear
	// memory they are an instance's whole state between two calls, so the
	// host can capture it after _initialize and restore it into a fresh
	// instance (see Module.Snapshot).
	StatePrefix = "talon.state."
	// ReservedPrefix begins every name the host reserves.
	ReservedPrefix = "talon."
)

// ReferenceBytes is what the host counts for one table element: wazero
// holds a table as a Go slice of uintptr.
const ReferenceBytes = 8

// Ticks is the number of function calls and loop iterations between two
// refuels: about a microsecond of guest work per exit to Go, so the exits
// cost well under one percent.
const Ticks = 1000

// ErrUnsupported matches every error of Instrument but a *LimitError: the
// module is malformed, or uses something the instrumenter does not know.
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

// Module is an instrumented module and what the host must know of it.
type Module struct {
	// Wasm is the instrumented binary.
	Wasm []byte
	// References is the number of table elements and element segment
	// entries an instance holds once instantiated, before any table.grow.
	References uint64
	// Cost is the estimated work of compiling the module, in units of a
	// byte of ordinary code (see Limits).
	Cost uint64
	// State is the number of the module's own mutable globals, exported
	// as StatePrefix followed by 0 to State-1.
	State int
	// Snapshot is set when an instance's state between two calls is
	// wholly its linear memory and the globals exported under
	// StatePrefix: the module imports no mutable global, has one memory,
	// and its code changes no table and uses no passive data or element
	// segment (so the tables are what its element segments made them).
	Snapshot bool
}

// Instrument returns a copy of wasm with the stop and fuel globals, the
// refuel function, the ticks and the table.grow guard added (see the
// package comment), after checking it against lim. A module beyond a
// limit fails with a *LimitError; every other error matches ErrUnsupported.
func Instrument(wasm []byte, lim Limits) (*Module, error) {
	m, err := instrument(wasm, lim)
	var le *LimitError
	if errors.As(err, &le) {
		return nil, le
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return m, nil
}

type section struct {
	id      byte
	payload []byte
}

// funcType is the arity of a function type.
type funcType struct{ params, results uint32 }

// module is what the instrumenter knows of a module, before instrumenting.
type moduleInfo struct {
	types     []funcType
	funcTypes []uint32 // the type of each function, imported and defined
	imported  uint32   // imported functions
	globals   uint32   // imported and defined
	memories  uint32
	tables    uint32
	refs      uint64   // table elements at start and element segment entries
	shapes    []shape  // of the defined functions, once the code is read
	mutable   []uint32 // indices of the defined mutable globals
	// stateful is set by what keeps state outside linear memory and the
	// defined globals: an imported mutable global, or code that changes a
	// table or uses a passive segment.
	stateful bool
}

func instrument(wasm []byte, lim Limits) (*Module, error) {
	m, secs, err := analyze(wasm)
	if err != nil {
		return nil, err
	}
	funcs := uint32(len(m.funcTypes))
	types := uint32(len(m.types))
	stop, fuel, limit, refs, pending, refused := m.globals, m.globals+1, m.globals+2, m.globals+3, m.globals+4, m.globals+5
	refuel, charge, growCheck, growDone := funcs, funcs+1, funcs+2, funcs+3

	global := func(b []byte, op byte, g uint32) []byte { return binary.AppendUvarint(append(b, op), uint64(g)) }
	call := func(b []byte, f uint32) []byte { return binary.AppendUvarint(append(b, 0x10), uint64(f)) }

	// tick: fuel -= 1; if fuel == 0 { refuel() }
	tick := global(nil, 0x23, fuel)
	tick = global(append(tick, 0x41, 0x01, 0x6b), 0x24, fuel) // i32.const 1, i32.sub, global.set
	tick = call(append(global(tick, 0x23, fuel), 0x45, 0x04, 0x40), refuel)
	tick = append(tick, 0x0b) // end

	// refuel: leave compiled code (memory.grow 0 is handled by wazero in
	// Go), trap if stop is set, fuel = Ticks.
	refuelBody := []byte{0x00, 0x41, 0x00, 0x40, 0x00, 0x1a} // no locals; i32.const 0, memory.grow 0, drop
	refuelBody = append(global(refuelBody, 0x23, stop), 0x04, 0x40, 0x00, 0x0b, 0x41)
	refuelBody = global(appendSleb(refuelBody, Ticks), 0x24, fuel)
	refuelBody = append(refuelBody, 0x0b)

	// charge (param $n i32) (result i32): fuel -= (n >> 10) + 1, a refuel
	// if that used it up, and n back, for the bulk instruction that follows.
	chargeBody := global([]byte{0x00}, 0x23, fuel)
	chargeBody = append(chargeBody, 0x20, 0x00, 0x41, 0x0a, 0x76, 0x6b) // local.get $n, i32.const 10, i32.shr_u, i32.sub
	chargeBody = global(append(chargeBody, 0x41, 0x01, 0x6b), 0x24, fuel)
	chargeBody = call(append(global(chargeBody, 0x23, fuel), 0x41, 0x01, 0x48, 0x04, 0x40), refuel) // i32.const 1, i32.lt_s, if
	chargeBody = append(chargeBody, 0x0b, 0x20, 0x00, 0x0b)                                         // end, local.get $n, end

	// growCheck (param $n i32) (result i32), before table.grow: if the
	// references after growing by n and the linear memory would exceed the
	// limit, refused = 1 and -1, a delta no table.grow can take (it then
	// returns -1 to the guest); else refs += n and n. pending remembers n
	// for growDone.
	gc := []byte{0x00, 0x20, 0x00, 0xad}                  // no locals; local.get $n, i64.extend_i32_u
	gc = append(global(gc, 0x23, refs), 0x7c, 0x42, 0x03) // global.get $refs, i64.add, i64.const 3
	gc = append(gc, 0x86, 0x3f, 0x00, 0xad, 0x42, 0x10)   // i64.shl, memory.size, i64.extend_i32_u, i64.const 16
	gc = append(gc, 0x86, 0x7c)                           // i64.shl, i64.add
	gc = append(global(gc, 0x23, limit), 0x56, 0x04, 0x7f, 0x41, 0x01)
	gc = append(global(gc, 0x24, refused), 0x41, 0x00) // if (result i32): refused = 1, pending = 0, -1
	gc = append(global(gc, 0x24, pending), 0x41, 0x7f)
	gc = append(gc, 0x05, 0x20, 0x00) // else: pending = n, refs += n, n
	gc = global(gc, 0x24, pending)
	gc = append(global(gc, 0x23, refs), 0x20, 0x00, 0xad, 0x7c)
	gc = append(global(gc, 0x24, refs), 0x20, 0x00, 0x0b, 0x0b)

	// growDone (param $r i32) (result i32), after table.grow: if it
	// returned -1, refs -= pending; r back.
	gd := []byte{0x00, 0x20, 0x00, 0x41, 0x7f, 0x46, 0x04, 0x40} // local.get $r, i32.const -1, i32.eq, if
	gd = global(gd, 0x23, refs)
	gd = append(global(gd, 0x23, pending), 0xad, 0x7d) // i64.extend_i32_u, i64.sub
	gd = append(global(gd, 0x24, refs), 0x0b, 0x20, 0x00, 0x0b)

	ins := inserts{
		tick:      tick,
		charge:    call(nil, charge),
		growCheck: call(nil, growCheck),
		growDone:  call(nil, growDone),
	}

	var exports []byte
	exports = appendExport(exports, Export, 0x03, stop)
	exports = appendExport(exports, MemoryLimitExport, 0x03, limit)
	exports = appendExport(exports, ReferencesExport, 0x03, refs)
	exports = appendExport(exports, RefusedExport, 0x03, refused)
	for i, g := range m.mutable {
		exports = appendExport(exports, StatePrefix+strconv.Itoa(i), 0x03, g)
	}

	globals := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41} // stop: (mut i32) 0; fuel: (mut i32) Ticks
	globals = append(appendSleb(globals, Ticks), 0x0b)
	globals = append(globals, 0x7e, 0x01, 0x42, 0x00, 0x0b, 0x7e, 0x01, 0x42) // limit: (mut i64) 0; refs: (mut i64) m.refs
	globals = append(appendSleb(globals, int64(m.refs)), 0x0b)
	globals = append(globals, 0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41, 0x00, 0x0b) // pending, refused: (mut i32) 0

	var codeEntries []byte
	for _, b := range [][]byte{refuelBody, chargeBody, gc, gd} {
		codeEntries = append(binary.AppendUvarint(codeEntries, uint64(len(b))), b...)
	}
	fn := binary.AppendUvarint(nil, uint64(types))
	for range 3 {
		fn = binary.AppendUvarint(fn, uint64(types)+1)
	}
	added := map[byte][]byte{
		secType:     {0x60, 0x00, 0x00, 0x60, 0x01, 0x7f, 0x01, 0x7f}, // [] -> [], [i32] -> [i32]
		secFunction: fn,
		secGlobal:   globals,
		secExport:   exports,
		secCode:     codeEntries,
	}
	addedCount := map[byte]uint64{secType: 2, secFunction: 4, secGlobal: 6, secExport: 4 + uint64(len(m.mutable)), secCode: 4}

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
	var cost uint64
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
		if s.id == secCode {
			if rest, cost, err = m.code(n, rest, lim, ins); err != nil {
				return nil, err
			}
		}
		emit(s.id, uint64(n)+addedCount[s.id], rest, extra)
		done[s.id] = true
	}
	addMissing(len(order) + 1)
	return &Module{Wasm: out, References: m.refs, Cost: cost, State: len(m.mutable),
		Snapshot: !m.stateful && m.memories == 1}, nil
}

// analyze splits wasm into sections and reads and checks every section but
// the code. Sections come in order, so each sees the index spaces of those
// before it.
func analyze(wasm []byte) (*moduleInfo, []section, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return nil, nil, errors.New("not a WebAssembly 1.0 binary")
	}
	secs, err := split(wasm[8:])
	if err != nil {
		return nil, nil, err
	}
	m := &moduleInfo{}
	for _, s := range secs {
		switch s.id {
		case secStart:
			// It would run while the module is instantiated, before the
			// host can hold the stop global.
			return nil, nil, errors.New("the module has a start function; a tool is a reactor (export _initialize instead)")
		case secType:
			err = m.readTypes(s.payload)
		case secImport:
			err = m.readImports(s.payload)
		case secFunction:
			err = m.readFunctions(s.payload)
		case secTable:
			err = m.readTables(s.payload)
		case secMemory:
			err = m.readMemories(s.payload)
		case secGlobal:
			err = m.readGlobals(s.payload)
		case secExport:
			err = m.readExports(s.payload)
		case secElement:
			err = m.readElements(s.payload)
		case secData:
			err = m.readData(s.payload)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if m.memories == 0 {
		return nil, nil, errors.New("the module has no memory")
	}
	return m, secs, nil
}

// appendExport appends an export entry.
func appendExport(b []byte, name string, kind byte, index uint32) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(append(b, name...), kind)
	return binary.AppendUvarint(b, uint64(index))
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

// vec reads a section's vector: its length, then each entry with read,
// then nothing more. Errors name the section.
func vec(name string, p []byte, read func(r *reader, i uint32) error) error {
	r := newReader(p)
	n, err := r.u32()
	if err != nil {
		return fmt.Errorf("%s section: %w", name, err)
	}
	for i := range n {
		if err := read(r, i); err != nil {
			return fmt.Errorf("%s section: entry %d: %w", name, i, err)
		}
	}
	if !r.done() {
		return fmt.Errorf("%s section: trailing bytes", name)
	}
	return nil
}

// grow adds n to *total, refusing index spaces beyond 2^31.
func grow(total *uint32, n uint32) error {
	if uint64(*total)+uint64(n) > 1<<31 {
		return errors.New("too many entries")
	}
	*total += n
	return nil
}

// readTypes reads the type section: function types only.
func (m *moduleInfo) readTypes(p []byte) error {
	return vec("type", p, func(r *reader, _ uint32) error {
		form, err := r.byte()
		if err != nil {
			return err
		}
		if form != 0x60 {
			return fmt.Errorf("unsupported type form %#x", form)
		}
		var t funcType
		for _, n := range []*uint32{&t.params, &t.results} {
			if *n, err = r.u32(); err != nil {
				return err
			}
			for range *n {
				if err := r.valType(); err != nil {
					return err
				}
			}
		}
		if len(m.types) >= 1<<20 {
			return errors.New("too many types")
		}
		m.types = append(m.types, t)
		return nil
	})
}

// funcType checks a type index of a function.
func (m *moduleInfo) funcType(ti uint32) error {
	if uint64(ti) >= uint64(len(m.types)) {
		return fmt.Errorf("type %d, which does not exist", ti)
	}
	return nil
}

func (m *moduleInfo) addFunc(ti uint32) error {
	if err := m.funcType(ti); err != nil {
		return fmt.Errorf("a function of %w", err)
	}
	if len(m.funcTypes) >= 1<<31 {
		return errors.New("too many functions")
	}
	m.funcTypes = append(m.funcTypes, ti)
	return nil
}

// readImports reads the import section. A tool may import functions (the
// ABI checks which), globals and a memory (which the ABI then refuses),
// never a table: nothing the host provides has one, and its size would
// escape the count of the instance's references.
func (m *moduleInfo) readImports(p []byte) error {
	return vec("import", p, func(r *reader, _ uint32) error {
		var names [2]string
		for i := range names {
			l, err := r.u32()
			if err != nil {
				return err
			}
			b, err := r.bytes(int(l))
			if err != nil {
				return err
			}
			names[i] = string(b)
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		switch kind {
		case 0x00: // function: type index
			ti, err := r.u32()
			if err != nil {
				return err
			}
			if err := m.addFunc(ti); err != nil {
				return fmt.Errorf("function import: %w", err)
			}
			m.imported++
			return nil
		case 0x01:
			return fmt.Errorf("import %s.%s is a table; a tool may not import a table", names[0], names[1])
		case 0x02: // memory: limits
			if _, _, err := r.limits(); err != nil {
				return err
			}
			return grow(&m.memories, 1)
		case 0x03: // global: value type, mutability
			if err := r.valType(); err != nil {
				return err
			}
			mut, err := r.byte()
			if err != nil || mut > 1 {
				return errors.New("bad global mutability")
			}
			if mut == 1 {
				m.stateful = true // its value lives outside the instance
			}
			return grow(&m.globals, 1)
		}
		return fmt.Errorf("unknown import kind %#x", kind)
	})
}

// readFunctions reads a function section: the type index of each function,
// which must exist. (wazero v1.12 does not check them all before it uses
// them, and panics on a call to a function of a type that does not exist.)
func (m *moduleInfo) readFunctions(p []byte) error {
	return vec("function", p, func(r *reader, i uint32) error {
		ti, err := r.u32()
		if err != nil {
			return err
		}
		return m.addFunc(ti)
	})
}

// readTables reads the table section: a reference type and limits per
// table (not the typed-reference forms). Their minimum sizes count as the
// instance's references.
func (m *moduleInfo) readTables(p []byte) error {
	return vec("table", p, func(r *reader, _ uint32) error {
		t, err := r.byte()
		if err != nil {
			return err
		}
		if t != 0x70 && t != 0x6f {
			return fmt.Errorf("unsupported table type %#x", t)
		}
		lo, _, err := r.limits()
		if err != nil {
			return err
		}
		m.refs += uint64(lo)
		return grow(&m.tables, 1)
	})
}

func (m *moduleInfo) readMemories(p []byte) error {
	return vec("memory", p, func(r *reader, _ uint32) error {
		if _, _, err := r.limits(); err != nil {
			return err
		}
		return grow(&m.memories, 1)
	})
}

// readGlobals reads the global section: each global's type and constant
// initial value, which may use only the module's own functions and
// globals, not those the instrumenter adds.
func (m *moduleInfo) readGlobals(p []byte) error {
	var defined uint32
	err := vec("global", p, func(r *reader, i uint32) error {
		at := r.pos
		if err := r.valType(); err != nil {
			return err
		}
		mut, err := r.byte()
		if err != nil || mut > 1 {
			return errors.New("bad global mutability")
		}
		if mut == 1 {
			m.mutable = append(m.mutable, m.globals+i)
			if t := r.b[at]; t != 0x7f && t != 0x7e && t != 0x7d && t != 0x7c {
				// A reference names something of its own instance, and
				// the host reads a global as 64 bits.
				m.stateful = true
			}
		}
		if err := m.constExpr(r); err != nil {
			return err
		}
		return grow(&defined, 1)
	})
	if err != nil {
		return err
	}
	return grow(&m.globals, defined)
}

// constExpr reads a constant expression of the WebAssembly 2.0 core
// specification, refusing references to functions and globals the module
// does not have.
func (m *moduleInfo) constExpr(r *reader) error {
	for {
		op, err := r.byte()
		if err != nil {
			return err
		}
		switch op {
		case 0x0b:
			return nil
		case 0x41:
			_, err = r.leb(5)
		case 0x42:
			_, err = r.leb(10)
		case 0x43:
			_, err = r.bytes(4)
		case 0x44:
			_, err = r.bytes(8)
		case 0xd0:
			var t byte
			if t, err = r.byte(); err == nil && t != 0x70 && t != 0x6f {
				err = fmt.Errorf("unsupported reference type %#x", t)
			}
		case 0xd2:
			var f uint32
			if f, err = r.u32(); err == nil && uint64(f) >= uint64(len(m.funcTypes)) {
				err = fmt.Errorf("function %d does not exist", f)
			}
		case 0x23:
			var g uint32
			if g, err = r.u32(); err == nil && g >= m.globals {
				err = fmt.Errorf("global %d does not exist", g)
			}
		case 0xfd:
			var sub byte
			if sub, err = r.byte(); err == nil && sub != 0x0c {
				err = fmt.Errorf("unsupported constant instruction 0xfd %d", sub)
			}
			if err == nil {
				_, err = r.bytes(16)
			}
		default:
			err = fmt.Errorf("unsupported constant instruction %#x", op)
		}
		if err != nil {
			return err
		}
	}
}

// readExports reads the n entries of an export section, refusing a name
// the host reserves and an index the module does not have.
func (m *moduleInfo) readExports(p []byte) error {
	return vec("export", p, func(r *reader, _ uint32) error {
		l, err := r.u32()
		if err != nil {
			return err
		}
		name, err := r.bytes(int(l))
		if err != nil {
			return err
		}
		if strings.HasPrefix(string(name), ReservedPrefix) {
			return fmt.Errorf("the module exports %q, a name the host reserves", name)
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		i, err := r.u32()
		if err != nil {
			return err
		}
		var n uint64
		switch kind {
		case 0x00:
			n = uint64(len(m.funcTypes))
		case 0x01:
			n = uint64(m.tables)
		case 0x02:
			n = uint64(m.memories)
		case 0x03:
			n = uint64(m.globals)
		default:
			return fmt.Errorf("unknown export kind %#x", kind)
		}
		if uint64(i) >= n {
			return fmt.Errorf("export %q of kind %d: index %d does not exist", name, kind, i)
		}
		return nil
	})
}

// readElements reads the element section in its eight forms. The entries
// of passive segments count as the instance's references (wazero keeps
// a copy of them per instance; active ones go into a table, declarative
// ones nowhere).
func (m *moduleInfo) readElements(p []byte) error {
	return vec("element", p, func(r *reader, _ uint32) error {
		flags, err := r.u32()
		if err != nil {
			return err
		}
		if flags > 7 {
			return fmt.Errorf("unsupported element segment flags %d", flags)
		}
		if flags&0x02 != 0 && flags&0x01 == 0 { // active with a table index
			t, err := r.u32()
			if err != nil {
				return err
			}
			if t >= m.tables {
				return fmt.Errorf("table %d does not exist", t)
			}
		}
		if flags&0x01 == 0 { // active: an offset
			if err := m.constExpr(r); err != nil {
				return err
			}
		}
		if flags&0x03 != 0 { // an element kind or reference type
			k, err := r.byte()
			if err != nil {
				return err
			}
			if flags&0x04 == 0 && k != 0x00 || flags&0x04 != 0 && k != 0x70 && k != 0x6f {
				return fmt.Errorf("unsupported element kind %#x", k)
			}
		}
		n, err := r.u32()
		if err != nil {
			return err
		}
		for range n {
			if flags&0x04 != 0 {
				err = m.constExpr(r)
			} else {
				var f uint32
				if f, err = r.u32(); err == nil && uint64(f) >= uint64(len(m.funcTypes)) {
					err = fmt.Errorf("function %d does not exist", f)
				}
			}
			if err != nil {
				return err
			}
		}
		if flags&0x03 == 0x01 { // passive: wazero keeps a copy per instance
			m.refs += uint64(n)
		}
		return nil
	})
}

// readData reads the data section's offsets (its bytes are not checked).
func (m *moduleInfo) readData(p []byte) error {
	return vec("data", p, func(r *reader, _ uint32) error {
		flags, err := r.u32()
		if err != nil {
			return err
		}
		switch flags {
		case 0:
			err = m.constExpr(r)
		case 1:
		case 2:
			if _, err = r.u32(); err == nil {
				err = m.constExpr(r)
			}
		default:
			err = fmt.Errorf("unsupported data segment flags %d", flags)
		}
		if err != nil {
			return err
		}
		l, err := r.u32()
		if err != nil {
			return err
		}
		_, err = r.bytes(int(l))
		return err
	})
}

// inserts is the code added to the module's functions.
type inserts struct {
	tick      []byte // at every function start and loop head
	charge    []byte // before every bulk memory or table instruction
	growCheck []byte // before every table.grow (after its charge)
	growDone  []byte // after every table.grow
}

// code returns the n bodies of a code section with their inserts, and the
// module's estimated compilation cost, checking each function and the
// total against lim.
func (m *moduleInfo) code(n uint32, entries []byte, lim Limits, ins inserts) ([]byte, uint64, error) {
	if uint64(n)+uint64(m.imported) != uint64(len(m.funcTypes)) {
		return nil, 0, fmt.Errorf("code section: %d bodies for %d functions", n, uint64(len(m.funcTypes))-uint64(m.imported))
	}
	r := newReader(entries)
	out := make([]byte, 0, len(entries)+len(entries)/8)
	var body []byte
	var total uint64
	for i := range n {
		fn := int64(m.imported) + int64(i)
		size, err := r.u32()
		if err != nil {
			return nil, 0, fmt.Errorf("code section: function %d: %w", fn, err)
		}
		b, err := r.bytes(int(size))
		if err != nil {
			return nil, 0, fmt.Errorf("code section: function %d: %w", fn, err)
		}
		var s shape
		body, s, err = m.function(body[:0], b, m.types[m.funcTypes[fn]], ins)
		if err != nil {
			return nil, 0, fmt.Errorf("code section: function %d: %w", fn, err)
		}
		m.shapes = append(m.shapes, s)
		if err := lim.check(fn, s); err != nil {
			return nil, 0, err
		}
		total += s.cost()
		if lim.Cost != 0 && total > lim.Cost {
			// Refused here, before reading the rest: the total only
			// grows.
			return nil, 0, &LimitError{Function: -1, Limit: "estimated compilation cost", Got: total, Max: lim.Cost}
		}
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if !r.done() {
		return nil, 0, errors.New("code section: trailing bytes")
	}
	return out, total, nil
}

// frame is an open block, loop or if of a function body, for the stack
// height.
type frame struct {
	base            uint64 // operand stack height below the frame
	params, results uint64
	loop            bool
}

// function appends to out the body b (of a function of type t) with a tick
// inserted after its local declarations and after the block type of every
// loop, a charge before every bulk instruction (whose size operand is on
// top of the stack) and the guard around every table.grow. It returns the
// function's shape.
func (m *moduleInfo) function(out, b []byte, t funcType, ins inserts) ([]byte, shape, error) {
	s := shape{bytes: uint64(len(b)), locals: uint64(t.params)}
	r := newReader(b)
	n, err := r.u32() // local declarations: (count, value type)*
	if err != nil {
		return nil, s, err
	}
	for range n {
		c, err := r.u32()
		if err != nil {
			return nil, s, err
		}
		if err := r.valType(); err != nil {
			return nil, s, err
		}
		s.locals += uint64(c) // at most 2^32 declarations of 2^32: no overflow
	}
	out = append(out, b[:r.pos]...)
	out = append(out, ins.tick...)
	copied := r.pos // b[:copied] is in out

	// The operand stack height, tracked by each instruction's arity: the
	// values live across a block are what it costs the compiler.
	frames := []frame{{results: uint64(t.results)}}
	var height uint64
	pop := func(k uint64) {
		base := frames[len(frames)-1].base
		height = max(height, base+k) - k // never below the frame: unreachable code pops freely
	}
	push := func(k uint64) { height += k }
	var loopDepth uint64
	open := func(bt int64, loop bool) error {
		p, res, err := m.blockArity(bt)
		if err != nil {
			return err
		}
		pop(p)
		s.below += height
		frames = append(frames, frame{base: height, params: p, results: res, loop: loop})
		push(p)
		s.blocks++
		s.depth = max(s.depth, uint64(len(frames)-1))
		if loop {
			s.loops++
			loopDepth++
			s.loopDepth = max(s.loopDepth, loopDepth)
		}
		return nil
	}
	// unreachable: the rest of the frame is not reached; its height is
	// that of the frame's base until its end or else.
	unreachable := func() { height = frames[len(frames)-1].base }

	for len(frames) > 0 {
		op, err := r.byte()
		if err != nil {
			return nil, s, err
		}
		switch op {
		case 0x02, 0x03, 0x04: // block, loop, if
			if op == 0x04 {
				pop(1)
			}
			var bt int64
			if bt, err = r.blockType(); err == nil {
				err = open(bt, op == 0x03)
			}
			if err == nil && op == 0x03 {
				out = append(out, b[copied:r.pos]...)
				out = append(out, ins.tick...)
				copied = r.pos
			}
		case 0x05: // else
			f := frames[len(frames)-1]
			height = f.base + f.params
			s.blocks++
		case 0x0b: // end
			f := frames[len(frames)-1]
			frames = frames[:len(frames)-1]
			height = f.base + f.results
			if f.loop {
				loopDepth--
			}
		case 0x00, 0x0f: // unreachable, return
			unreachable()
		case 0x0c: // br
			_, err = r.u32()
			unreachable()
		case 0x0d: // br_if
			_, err = r.u32()
			pop(1)
			s.blocks++
			s.below += height
		case 0x0e: // br_table
			err = r.immediates(op)
			pop(1)
			s.blocks++
			s.below += height
			unreachable()
		case 0x10: // call
			var f uint32
			if f, err = r.u32(); err == nil && uint64(f) >= uint64(len(m.funcTypes)) {
				err = fmt.Errorf("function %d does not exist", f)
			}
			if err == nil {
				ft := m.types[m.funcTypes[f]]
				pop(uint64(ft.params))
				push(uint64(ft.results))
			}
		case 0x11: // call_indirect: type, table
			var ti uint32
			if ti, err = r.u32(); err == nil {
				err = m.funcType(ti)
			}
			if err == nil {
				_, err = r.u32()
			}
			if err == nil {
				ft := m.types[ti]
				pop(1 + uint64(ft.params))
				push(uint64(ft.results))
			}
		case 0x23, 0x24: // global.get, global.set
			var g uint32
			if g, err = r.u32(); err == nil && g >= m.globals {
				err = fmt.Errorf("global %d does not exist", g)
			}
			if op == 0x23 {
				push(1)
			} else {
				pop(1)
			}
		case 0xd2: // ref.func
			var f uint32
			if f, err = r.u32(); err == nil && uint64(f) >= uint64(len(m.funcTypes)) {
				err = fmt.Errorf("function %d does not exist", f)
			}
			push(1)
		case 0xfc:
			start := r.pos - 1
			var sub uint32
			var bulk bool
			if sub, bulk, err = r.prefixedFC(); err == nil {
				switch sub {
				case 8, 9, 12, 13, 14, 15, 17: // memory.init, data.drop, table.init, elem.drop, table.copy, table.grow, table.fill
					m.stateful = true
				}
				if bulk {
					out = append(out, b[copied:start]...)
					out = append(out, ins.charge...)
					copied = start
				}
				if sub == 15 { // table.grow: guarded
					out = append(out, ins.growCheck...)
					out = append(out, b[copied:r.pos]...)
					out = append(out, ins.growDone...)
					copied = r.pos
				}
				pop(fcArity[sub][0])
				push(fcArity[sub][1])
			}
		case 0xfd:
			var sub uint32
			if sub, err = r.prefixedFD(); err == nil {
				p, q := simdArity(sub)
				pop(p)
				push(q)
			}
		default:
			if op == 0x26 { // table.set
				m.stateful = true
			}
			if err = r.immediates(op); err == nil {
				p, q := arity(op)
				pop(p)
				push(q)
			}
		}
		if err != nil {
			return nil, s, fmt.Errorf("at byte %d: %w", r.pos, err)
		}
	}
	if !r.done() {
		return nil, s, errors.New("bytes after the end of the body")
	}
	return append(out, b[copied:]...), s, nil
}

// blockArity returns the parameters and results of a block type as
// reader.blockType returns it.
func (m *moduleInfo) blockArity(bt int64) (params, results uint64, err error) {
	switch {
	case bt == blockEmpty:
		return 0, 0, nil
	case bt == blockValue:
		return 0, 1, nil
	case bt >= 0 && bt < int64(len(m.types)):
		t := m.types[bt]
		return uint64(t.params), uint64(t.results), nil
	}
	return 0, 0, fmt.Errorf("block of type %d, which does not exist", bt)
}
