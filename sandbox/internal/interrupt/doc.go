// Package interrupt makes a WebAssembly module stoppable from the host, and
// preemptible by the Go scheduler, at the cost of a few instructions per
// function call and loop iteration.
//
// Compiled WebAssembly runs as native code that Go cannot preempt: a guest
// in a long loop would hold its thread through a garbage collection's
// stop-the-world, stalling every goroutine, and could only be stopped by
// leaving native code at every iteration (wazero's WithCloseOnContextDone,
// which made a Go-built tool ten times slower). Instrument instead adds:
//
//   - two mutable i32 globals: stop, exported as Export and set by the host
//     to make the guest trap, and fuel, which only the added code uses;
//   - a function refuel, which leaves native code (memory.grow 0 is handled
//     by the host runtime in Go, where the scheduler can preempt the
//     goroutine), traps with unreachable if stop is set, and resets fuel to
//     Ticks;
//   - at the start of every function and the head of every loop, a tick:
//     fuel is decremented, and refuel called when it reaches zero;
//   - before every bulk instruction (memory.fill, memory.copy, table.fill
//     and the like, whose work grows with their size operand), a call to
//     charge, which takes a tick per KiB of that size and refuels when the
//     fuel is used up;
//   - around every table.grow, a guard: wazero holds tables as Go slices
//     of 8-byte references outside linear memory, so the instance counts
//     its references (tables at start, passive element segments, every
//     growth) in a global the host reads, and a growth that would take
//     references and linear memory together past the limit the host set
//     in another global returns -1 instead, as a table at its maximum
//     does. Tables cannot be imported.
//
// Before any of this, Instrument checks the module's shape against Limits:
// wazero's optimising compiler takes time that grows faster than the code
// with a function's nesting, its loops, its blocks and the values live
// across them, so each function is bounded, and the estimated cost of
// compiling the whole module too (see Limits and RATIONALE.md).
//
// Every unbounded execution calls functions or iterates loops, so a guest
// leaves native code at least every Ticks ticks (and every MiB of bulk
// work), and traps at its first refuel after the host sets stop.
//
// The decoder is strict: it reads every instruction of every function body
// with the immediates the WebAssembly 2.0 core specification gives it, and
// refuses anything it does not know, a body whose blocks do not balance, or
// an access to a global or function the module does not have (in code,
// exports, constant expressions and element segments alike). A module it
// accepts is read exactly as the runtime's validator reads it, so no loop
// or function escapes the tick, and the added globals and functions cannot
// be touched by the module's own code. It never runs the module.
package interrupt
