package interrupt

import (
	"errors"
	"fmt"
)

// ErrLimit matches every *LimitError.
var ErrLimit = errors.New("the module is beyond a limit of the sandbox")

// Limits bound the shape of a module. wazero's optimising compiler takes
// time that grows faster than the size of a function with its nesting
// depth, its loops, its blocks and the values live across them; these
// bounds, and the estimated cost of the whole module, keep the compilation
// of any module Instrument accepts short (see RATIONALE.md for the
// measurement behind them). A zero field means no limit.
type Limits struct {
	// BodyBytes bounds the size of one function's body.
	BodyBytes uint64
	// Locals bounds one function's parameters and locals together.
	Locals uint64
	// Blocks bounds one function's control instructions: block, loop,
	// if, else, br_if and br_table.
	Blocks uint64
	// Depth bounds the nesting of blocks, loops and ifs in a function.
	Depth uint64
	// LoopDepth bounds the nesting of loops in a function.
	LoopDepth uint64
	// FunctionCost bounds the estimated cost of compiling one function.
	FunctionCost uint64
	// Cost bounds the estimated cost of compiling the module.
	Cost uint64
}

// DefaultLimits are the limits the sandbox applies: every built-in tool
// is well within them, and every module within them that RATIONALE.md
// lists compiles in under 1.3 s with the sandbox's two compiler workers
// (2.1 s of one core) on the 2-core development machine.
func DefaultLimits() Limits {
	return Limits{
		BodyBytes:    128 << 10,
		Locals:       2048,
		Blocks:       8192,
		Depth:        2048,
		LoopDepth:    64,
		FunctionCost: 1_500_000,
		Cost:         10_000_000,
	}
}

// LimitError says which limit a module is beyond. It matches ErrLimit.
type LimitError struct {
	// Function is the index of the function beyond the limit (in the
	// function index space: imported functions first), or -1 for the
	// module as a whole.
	Function int64
	// Limit names what is bounded, e.g. "nesting depth".
	Limit    string
	Got, Max uint64
}

func (e *LimitError) Error() string {
	if e.Function < 0 {
		return fmt.Sprintf("the module's %s is %d, above the limit of %d", e.Limit, e.Got, e.Max)
	}
	return fmt.Sprintf("function %d: %s is %d, above the limit of %d", e.Function, e.Limit, e.Got, e.Max)
}

// Is reports ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// shape is what the limits and the cost estimate look at in one function.
type shape struct {
	bytes     uint64 // body size
	locals    uint64 // parameters and locals
	blocks    uint64 // block, loop, if, else, br_if, br_table
	loops     uint64
	depth     uint64 // deepest nesting of blocks, loops and ifs
	loopDepth uint64 // deepest nesting of loops
	// below is the sum, over every block, loop, if, br_if and br_table,
	// of the values on the operand stack below it: values live across a
	// basic block's boundary.
	below uint64
}

// The cost estimate, in units of a byte of ordinary code (about a third of
// a microsecond of one core's work here). Each term bounds the work of a
// pass of wazero v1.12's optimising compiler that grows faster than the
// code; the weights were fitted on generated modules that stress each one
// (RATIONALE.md has the measurements), so that no module compiles much
// slower than its estimate.
func (s shape) cost() uint64 {
	return 64 + // a function's fixed cost
		s.bytes +
		14*s.blocks + // basic blocks
		s.blocks*s.blocks/100 + // dominators: walks as long as the blocks
		s.depth*s.blocks/12 + // nested blocks: branches out of many levels
		s.loops*s.blocks/2 + // loop headers: each block asks each loop
		3*s.blocks*s.locals + // phis of the locals at merges
		s.locals*s.locals/6 + // the locals' variables, each against the others
		s.loops*s.locals*s.loopDepth/16 + // rounds of phi elimination
		s.below // values live across blocks
}

// check returns the first limit s is beyond, for function fn.
func (l Limits) check(fn int64, s shape) error {
	for _, c := range []struct {
		name     string
		got, max uint64
	}{
		{"body size in bytes", s.bytes, l.BodyBytes},
		{"number of parameters and locals", s.locals, l.Locals},
		{"number of control instructions", s.blocks, l.Blocks},
		{"nesting depth", s.depth, l.Depth},
		{"loop nesting depth", s.loopDepth, l.LoopDepth},
		{"estimated compilation cost", s.cost(), l.FunctionCost},
	} {
		if c.max != 0 && c.got > c.max {
			return &LimitError{Function: fn, Limit: c.name, Got: c.got, Max: c.max}
		}
	}
	return nil
}

// Version identifies what Instrument makes of a module. Bump it whenever
// the output for the same input can change (new instrumentation, another
// encoding): modules instrumented by another version are not reused from
// a cache.
const Version = 2
