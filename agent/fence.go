package agent

import (
	"context"
	"errors"
)

// Fence is a fencing token: the claim under which this process serves a
// share of the sessions (a partition's lease, cluster package). The
// store refuses the writes of a turn that matter (its start, a tool call's
// intent and result, a step, the turn's end and its reply, a reply given
// up on) made under a token older than the newest one recorded for the
// same name, with an error wrapping ErrFenced: a process that slept past
// its lease, and woke after another took the sessions over, cannot start,
// run a tool call or answer for them.
type Fence struct {
	// Name names what the token guards, e.g. "partition 3 of talon".
	Name string
	// Token grows with each claim of Name, by any process.
	Token uint64
}

// ErrFenced is wrapped by errors of writes refused because a newer claim
// of their fence was recorded (Fencer).
var ErrFenced = errors.New("agent: another process has taken these sessions over (fencing token superseded)")

// Fencer is a Store that keeps fencing tokens. Adopt records the token of
// its context's Fence (AdvanceFence) before it reads the sessions' work,
// and the store checks the writes of the scope's turns against it.
type Fencer interface {
	// AdvanceFence records token as the newest of name: every later write
	// under an older token of name fails with ErrFenced, and writes under
	// this one or newer go on. Recording a token older than the recorded
	// one is an error wrapping ErrFenced; the same one again is not.
	AdvanceFence(ctx context.Context, name string, token uint64) error
}

type fenceKey struct{}

// WithFence returns ctx carrying f: the store checks the writes made with
// it (and the contexts derived from it) against f.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf returns the Fence ctx carries, if any.
func FenceOf(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}
