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

// limits skips table or memory limits: a flag, a minimum and maybe a maximum.
func (r *reader) limits() error {
	flag, err := r.byte()
	if err != nil {
		return err
	}
	if flag > 1 {
		return fmt.Errorf("unsupported limits flag %#x", flag)
	}
	if _, err := r.u32(); err != nil {
		return err
	}
	if flag == 1 {
		_, err = r.u32()
	}
	return err
}

// blockType skips a block type: empty, a value type, or a type index (s33).
func (r *reader) blockType() error {
	if r.pos >= len(r.b) {
		return errEOF
	}
	switch r.b[r.pos] {
	case 0x40, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		r.pos++
		return nil
	}
	// A signed LEB128 number of 33 bits, at most 5 bytes: the type index
	// must be non-negative.
	var v int64
	for i := range 5 {
		c, err := r.byte()
		if err != nil {
			return err
		}
		v |= int64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (7 * (i + 1))
			}
			if v < 0 || v >= 1<<32 {
				return errors.New("bad block type")
			}
			return nil
		}
	}
	return errors.New("LEB128 number too long")
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
// end, global.get, global.set, call or ref.func (the caller handles those).
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
	case op == 0xfc:
		_, err := r.prefixedFC()
		return err
	case op == 0xfd:
		return r.prefixedFD()
	}
	return fmt.Errorf("unknown opcode %#x", op)
}

// prefixedFC skips a 0xFC instruction: saturating conversions, bulk memory
// and table instructions. bulk reports an instruction whose work grows
// with the size operand on top of the stack: memory.init, memory.copy,
// memory.fill, table.init, table.copy, table.grow and table.fill.
func (r *reader) prefixedFC() (bulk bool, err error) {
	sub, err := r.u32()
	if err != nil {
		return false, err
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
		return false, fmt.Errorf("unknown opcode 0xfc %d", sub)
	}
	for range n {
		if _, err := r.u32(); err != nil {
			return false, err
		}
	}
	return bulk, nil
}

// prefixedFD skips a 0xFD (SIMD) instruction.
func (r *reader) prefixedFD() error {
	sub, err := r.u32()
	if err != nil {
		return err
	}
	switch {
	case sub <= 11, sub == 92, sub == 93: // loads, store, load_zero
		return r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		_, err := r.bytes(16)
		return err
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		_, err := r.byte()
		return err
	case sub >= 84 && sub <= 91: // load_lane, store_lane
		if err := r.memarg(); err != nil {
			return err
		}
		_, err := r.byte()
		return err
	case sub <= 255:
		return nil
	}
	return fmt.Errorf("unknown opcode 0xfd %d", sub)
}
