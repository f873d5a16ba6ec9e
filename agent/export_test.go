package agent

import "context"

// RateBuckets counts the per-principal rate-limit buckets r holds.
func RateBuckets(r *Runtime) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rates)
}

// OnHold sets a function called when a worker of r waits for an Amend of
// the message it is about to take. Set it before Run.
func OnHold(r *Runtime, f func(InboundID)) { r.onHold = f }

// OnRecoveryWait sets a function called when a turn waits for the replies
// a previous process left undelivered in its session.
func OnRecoveryWait(r *Runtime, f func(SessionKey)) { r.onRecoveryWait = f }

// StartStatus prepares turn's working status on ch, as a turn does; the
// returned func ends it.
func StartStatus(r *Runtime, ctx context.Context, turn TurnID, ch Channel, key SessionKey, replyTo string) func() {
	r.init()
	return r.startStatus(ctx, turn, ch, key, replyTo)
}
