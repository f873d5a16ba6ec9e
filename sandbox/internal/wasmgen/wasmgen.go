// Package wasmgen generates tool modules whose shape makes an optimising
// compiler work hard: loops nested deep, many loops or blocks one after
// another, many values live across many blocks. Each module is a complete
// tool (it speaks the tool ABI), so that only its shape can get it refused.
// The hostile test suites and the compile-time measurements use it; the
// gateway never does.
package wasmgen

import (
	"encoding/binary"
	"fmt"
)

// Kind is what a generated talon_call is made of.
type Kind int

const (
	// Nest: n loops nested in one another; every level updates ops of
	// the locals.
	Nest Kind = iota
	// Seq: n loops one after another, each updating ops of the locals.
	Seq
	// SeqBlocks: n blocks one after another, each left by a br_if.
	SeqBlocks
	// Live: every local set at the start, n blocks, every local read at
	// the end: all of them live across every block.
	Live
	// Stack: ops values pushed at the start, n blocks, all of them summed
	// at the end: all of them live across every block.
	Stack
	// NestBlocks: n blocks nested in one another, each updating ops of
	// the locals and left by a br_if to a block further out.
	NestBlocks
)

// Shape is the size of a generated talon_call.
type Shape struct {
	Kind   Kind
	N      int // loops or blocks
	Locals int // i32 locals declared
	Ops    int // per level (nest, seq) or values (stack)
	Funcs  int // copies of the function in the module (at least 1)
}

func (s Shape) String() string {
	names := [...]string{"nest", "seq", "seqBlocks", "live", "stack", "nestBlocks"}
	return fmt.Sprintf("%s/n=%d/locals=%d/ops=%d/funcs=%d", names[s.Kind], s.N, s.Locals, s.Ops, max(s.Funcs, 1))
}

func uleb(b []byte, v int) []byte { return binary.AppendUvarint(b, uint64(v)) }

func section(id byte, n int, payload []byte) []byte {
	p := append(uleb(nil, n), payload...)
	return append(uleb([]byte{id}, len(p)), p...)
}

func wasmName(s string) []byte { return append(uleb(nil, len(s)), s...) }

// body is the code of the generated function: (param i32) (result i32).
func (s Shape) body() []byte {
	var c []byte
	if s.Locals > 0 {
		c = append(uleb(uleb(c, 1), s.Locals), 0x7f)
	} else {
		c = uleb(c, 0)
	}
	get := func(c []byte, i int) []byte { return uleb(append(c, 0x20), i) }
	set := func(c []byte, i int) []byte { return uleb(append(c, 0x21), i) }
	// local i+1 += local j+1 (local 0 is the parameter)
	update := func(c []byte, level int) []byte {
		if s.Locals == 0 {
			return c
		}
		for k := range s.Ops {
			a, b := 1+(k+level)%s.Locals, 1+(k*7+level+1)%s.Locals
			c = set(append(get(get(c, a), b), 0x6a), a)
		}
		return c
	}
	switch s.Kind {
	case Nest, NestBlocks:
		op := byte(0x03) // loop
		if s.Kind == NestBlocks {
			op = 0x02 // block
		}
		for lvl := range s.N {
			c = update(append(c, op, 0x40), lvl)
		}
		for lvl := s.N - 1; lvl >= 0; lvl-- {
			// local.get 0, br_if to a level out, end
			c = append(uleb(append(get(update(c, lvl), 0), 0x0d), (lvl*7)%(lvl+1)), 0x0b)
		}
	case Seq:
		for i := range s.N {
			c = append(append(get(update(append(c, 0x03, 0x40), i), 0), 0x0d, 0x00), 0x0b)
		}
	case SeqBlocks:
		for range s.N {
			c = append(get(append(c, 0x02, 0x40), 0), 0x0d, 0x00, 0x0b)
		}
	case Live:
		for i := 1; i <= s.Locals; i++ {
			c = set(append(get(c, 0), 0x41, byte(i&0x3f), 0x6a), i)
		}
		for range s.N {
			c = append(get(append(c, 0x02, 0x40), 0), 0x0d, 0x00, 0x0b)
		}
		c = get(c, 0)
		for i := 1; i <= s.Locals; i++ {
			c = append(get(c, i), 0x6a)
		}
		c = append(c, 0x0f) // return
	case Stack:
		for i := range s.Ops {
			c = append(get(c, 0), 0x41, byte(i&0x3f), 0x6a)
		}
		for range s.N {
			c = append(get(append(c, 0x02, 0x40), 0), 0x0d, 0x00, 0x0b)
		}
		for range s.Ops - 1 {
			c = append(c, 0x6a)
		}
		c = append(c, 0x0f)
	}
	return append(get(c, 0), 0x0b)
}

// Module returns a tool module whose talon_call calls s.Funcs copies
// of the function s describes.
func Module(s Shape) []byte {
	funcs := max(s.Funcs, 1)
	m := []byte("\x00asm\x01\x00\x00\x00")
	// types: 0 () -> (); 1 (i32) -> (i32); 2 (i32 i32) -> (i64)
	m = append(m, section(1, 3, []byte{
		0x60, 0x00, 0x00,
		0x60, 0x01, 0x7f, 0x01, 0x7f,
		0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7e,
	})...)
	fs := []byte{0x00, 0x01, 0x02}
	for range funcs {
		fs = append(fs, 0x01)
	}
	m = append(m, section(3, len(fs), fs)...)
	m = append(m, section(5, 1, []byte{0x00, 0x01})...)
	var exp []byte
	exp = append(append(exp, wasmName("memory")...), 0x02, 0x00)
	exp = append(append(exp, wasmName("talon_abi_version_1")...), 0x00, 0x00)
	exp = append(append(exp, wasmName("talon_alloc")...), 0x00, 0x01)
	exp = append(append(exp, wasmName("talon_call")...), 0x00, 0x02)
	m = append(m, section(7, 4, exp)...)

	// talon_call(p, n) calls every generated function with 0 (so that
	// no loop loops) and answers {"ok":0}.
	call := []byte{0x00}
	for i := range funcs {
		call = append(uleb(append(call, 0x41, 0x00, 0x10), 3+i), 0x1a) // i32.const 0, call, drop
	}
	call = append(sleb(append(call, 0x42), 16<<32|int64(len(output))), 0x0b)
	bodies := [][]byte{
		{0x00, 0x0b},                   // talon_abi_version_1
		{0x00, 0x41, 0x80, 0x08, 0x0b}, // talon_alloc: 1024
		call,
	}
	b := s.body()
	for range funcs {
		bodies = append(bodies, b)
	}
	var code []byte
	for _, b := range bodies {
		code = append(uleb(code, len(b)), b...)
	}
	m = append(m, section(10, len(bodies), code)...)
	data := append([]byte{0x00, 0x41, 0x10, 0x0b}, uleb(nil, len(output))...) // at 16
	return append(m, section(11, 1, append(data, output...))...)
}

// output is what a generated tool answers.
const output = `{"ok":0}`

func sleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
