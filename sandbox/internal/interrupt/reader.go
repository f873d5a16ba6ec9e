package interrupt

import (
	"errors"
	"fmt"
)

var errEOF = errors.New("unexpected end")

// reader reads a WebAssembly binary strictly: LEB128 numbers no longer than
// their type allows, lengths within the input.
type reader struct {
	b   []byte
	pos int
}

func newReader(b []byte) *reader { return &reader{b: b} }

func (r *reader) done() bool { return r.pos == len(r.b) }

func (r *reader) byte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, errEOF
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.pos {
		return nil, errEOF
	}
	p := r.b[r.pos : r.pos+n]
	r.pos += n
	return p, nil
}

// leb skips a LEB128 number of at most maxBytes bytes and returns its low
// 64 bits (unsigned reading).
func (r *reader) leb(maxBytes int) (uint64, error) {
	var v uint64
	for i := range maxBytes {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		if i < 10 {
			v |= uint64(c&0x7f) << (7 * i)
		}
		if c&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errors.New("LEB128 number too long")
}

// u32 reads an unsigned 32-bit LEB128 number.
func (r *reader) u32() (uint32, error) {
	v, err := r.leb(5)
	if err != nil {
		return 0, err
	}
	if v > 1<<32-1 {
		return 0, errors.New("u32 out of range")
	}
	return uint32(v), nil
}

// vecLen reads a vector's length and returns it with the rest of the input.
func (r *reader) vecLen() (uint32, []byte, error) {
	n, err := r.u32()
	if err != nil {
		return 0, nil, err
	}
	return n, r.b[r.pos:], nil
}

// limits reads table or memory limits: a flag, a minimum and maybe a
// maximum (2^32-1 when absent).
func (r *reader) limits() (lo, hi uint32, err error) {
	flag, err := r.byte()
	if err != nil {
		return 0, 0, err
	}
	if flag > 1 {
		return 0, 0, fmt.Errorf("unsupported limits flag %#x", flag)
	}
	if lo, err = r.u32(); err != nil {
		return 0, 0, err
	}
	hi = 1<<32 - 1
	if flag == 1 {
		if hi, err = r.u32(); err != nil {
			return 0, 0, err
		}
	}
	return lo, hi, nil
}

// valType reads a value type of WebAssembly 2.0.
func (r *reader) valType() error {
	t, err := r.byte()
	if err != nil {
		return err
	}
	switch t {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		return nil
	}
	return fmt.Errorf("unsupported value type %#x", t)
}

// Block types that are not a type index.
const (
	blockEmpty = -1 // []
	blockValue = -2 // [] -> [t]
)

// blockType reads a block type: empty, a value type, or a type index (s33),
// returned as blockEmpty, blockValue or the index.
func (r *reader) blockType() (int64, error) {
	if r.pos >= len(r.b) {
		return 0, errEOF
	}
	switch r.b[r.pos] {
	case 0x40:
		r.pos++
		return blockEmpty, nil
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		r.pos++
		return blockValue, nil
	}
	// A signed LEB128 number of 33 bits, at most 5 bytes: the type index
	// must be non-negative.
	var v int64
	for i := range 5 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (7 * (i + 1))
			}
			if v < 0 || v >= 1<<32 {
				return 0, errors.New("bad block type")
			}
			return v, nil
		}
	}
	return 0, errors.New("LEB128 number too long")
}

// memarg skips a memory instruction's alignment and offset.
func (r *reader) memarg() error {
	align, err := r.u32()
	if err != nil {
		return err
	}
	if align >= 64 { // the multi-memory flag; that proposal is not enabled
		return fmt.Errorf("unsupported alignment %d", align)
	}
	_, err = r.u32()
	return err
}

// immediates skips the immediates of op, which is not a block, loop, if,
// else, end, br, br_if, global.get, global.set, call, call_indirect, ref.func
// or a prefixed instruction (the caller handles those).
func (r *reader) immediates(op byte) error {
	switch {
	case op == 0x00, op == 0x01, op == 0x05, op == 0x0f, op == 0x1a, op == 0x1b,
		op >= 0x45 && op <= 0xc4, op == 0xd1:
		// unreachable, nop, else, return, drop, select, numeric (with
		// sign extension), ref.is_null: none
		return nil
	case op == 0x0c, op == 0x0d, op >= 0x20 && op <= 0x22, op == 0x25, op == 0x26:
		// br, br_if, local.*, table.get, table.set
		_, err := r.u32()
		return err
	case op == 0x0e: // br_table: vec(label) label
		n, err := r.u32()
		if err != nil {
			return err
		}
		for range uint64(n) + 1 {
			if _, err := r.u32(); err != nil {
				return err
			}
		}
		return nil
	case op == 0x11: // call_indirect: type, table
		if _, err := r.u32(); err != nil {
			return err
		}
		_, err := r.u32()
		return err
	case op == 0x1c: // select with types: vec(valtype)
		n, err := r.u32()
		if err != nil {
			return err
		}
		_, err = r.bytes(int(min(n, 1<<30)))
		return err
	case op >= 0x28 && op <= 0x3e: // loads and stores
		return r.memarg()
	case op == 0x3f, op == 0x40: // memory.size, memory.grow: memory index
		_, err := r.u32()
		return err
	case op == 0x41: // i32.const
		_, err := r.leb(5)
		return err
	case op == 0x42: // i64.const
		_, err := r.leb(10)
		return err
	case op == 0x43: // f32.const
		_, err := r.bytes(4)
		return err
	case op == 0x44: // f64.const
		_, err := r.bytes(8)
		return err
	case op == 0xd0: // ref.null: reference type
		_, err := r.byte()
		return err
	}
	return fmt.Errorf("unknown opcode %#x", op)
}

// prefixedFC skips a 0xFC instruction: saturating conversions, bulk memory
// and table instructions. bulk reports an instruction whose work grows
// with the size operand on top of the stack: memory.init, memory.copy,
// memory.fill, table.init, table.copy, table.grow and table.fill.
func (r *reader) prefixedFC() (sub uint32, bulk bool, err error) {
	sub, err = r.u32()
	if err != nil {
		return 0, false, err
	}
	var n int // u32 immediates
	switch {
	case sub <= 7: // trunc_sat
	case sub == 9, sub == 13, sub == 16: // data.drop, elem.drop, table.size
		n = 1
	case sub == 11, sub == 15, sub == 17: // memory.fill, table.grow, table.fill
		n, bulk = 1, true
	case sub == 8, sub == 10, sub == 12, sub == 14:
		// memory.init, memory.copy, table.init, table.copy
		n, bulk = 2, true
	default:
		return 0, false, fmt.Errorf("unknown opcode 0xfc %d", sub)
	}
	for range n {
		if _, err := r.u32(); err != nil {
			return 0, false, err
		}
	}
	return sub, bulk, nil
}

// prefixedFD skips a 0xFD (SIMD) instruction and returns its opcode.
func (r *reader) prefixedFD() (uint32, error) {
	sub, err := r.u32()
	if err != nil {
		return 0, err
	}
	switch {
	case sub <= 11, sub == 92, sub == 93: // loads, store, load_zero
		return sub, r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		_, err := r.bytes(16)
		return sub, err
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		_, err := r.byte()
		return sub, err
	case sub >= 84 && sub <= 91: // load_lane, store_lane
		if err := r.memarg(); err != nil {
			return 0, err
		}
		_, err := r.byte()
		return sub, err
	case sub <= 255:
		return sub, nil
	}
	return 0, fmt.Errorf("unknown opcode 0xfd %d", sub)
}

// arity returns how many operands op pops and pushes, for an op that
// immediates handles.
func arity(op byte) (pops, pushes uint64) {
	switch {
	case op == 0x1a: // drop
		return 1, 0
	case op == 0x1b, op == 0x1c: // select
		return 3, 1
	case op == 0x20, op == 0x3f, op >= 0x41 && op <= 0x44, op == 0xd0:
		// local.get, memory.size, constants, ref.null
		return 0, 1
	case op == 0x21: // local.set
		return 1, 0
	case op == 0x26, op >= 0x36 && op <= 0x3e: // table.set, stores
		return 2, 0
	case op == 0x22, op == 0x25, op >= 0x28 && op <= 0x35, op == 0x40, op == 0xd1:
		// local.tee, table.get, loads, memory.grow, ref.is_null
		return 1, 1
	case op == 0x45, op == 0x50, op >= 0x67 && op <= 0x69, op >= 0x79 && op <= 0x7b,
		op >= 0x8b && op <= 0x91, op >= 0x99 && op <= 0x9f, op >= 0xa7 && op <= 0xc4:
		// eqz, unary operators, conversions, sign extensions
		return 1, 1
	case op >= 0x46 && op <= 0xa6: // comparisons and binary operators
		return 2, 1
	}
	return 0, 0 // nop
}

// fcArity is how many operands each 0xFC instruction pops and pushes.
var fcArity = [18][2]uint64{
	{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, // trunc_sat
	{3, 0}, {0, 0}, {3, 0}, {3, 0}, // memory.init, data.drop, memory.copy, memory.fill
	{3, 0}, {0, 0}, {3, 0}, // table.init, elem.drop, table.copy
	{2, 1}, {0, 1}, {3, 0}, // table.grow, table.size, table.fill
}

// simdArity returns how many operands a 0xFD instruction pops and pushes.
func simdArity(sub uint32) (pops, pushes uint64) {
	switch {
	case sub == 11: // v128.store
		return 2, 0
	case sub == 12: // v128.const
		return 0, 1
	case sub <= 10, sub >= 15 && sub <= 20, sub >= 92 && sub <= 95:
		// loads, splats, load_zero, demote, promote
		return 1, 1
	case sub >= 21 && sub <= 34: // lanes: replace_lane takes the value too
		switch sub {
		case 23, 26, 28, 30, 32, 34:
			return 2, 1
		}
		return 1, 1
	case sub == 82: // bitselect
		return 3, 1
	case sub >= 84 && sub <= 87: // load_lane
		return 2, 1
	case sub >= 88 && sub <= 91: // store_lane
		return 2, 0
	}
	switch sub {
	case 77, 83, // v128.not, any_true
		0x60, 0x61, 0x62, 0x63, 0x64, 0x67, 0x68, 0x69, 0x6a, 0x74, 0x75, 0x7a, 0x7c, 0x7d, 0x7e, 0x7f,
		0x80, 0x81, 0x83, 0x84, 0x87, 0x88, 0x89, 0x8a, 0x94,
		0xa0, 0xa1, 0xa3, 0xa4, 0xa7, 0xa8, 0xa9, 0xaa,
		0xc0, 0xc1, 0xc3, 0xc4, 0xc7, 0xc8, 0xc9, 0xca,
		0xe0, 0xe1, 0xe3, 0xec, 0xed, 0xef,
		0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff:
		// unary: abs, neg, popcnt, all_true, bitmask, rounding, extends, conversions
		return 1, 1
	}
	return 2, 1 // comparisons and binary operators
}
