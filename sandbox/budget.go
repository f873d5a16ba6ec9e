package sandbox

import (
	"context"
	"sync"
	"time"
)

// budget is a call's deadline. Its clock stops while a person is asked to
// approve one of the call's requests: the limit bounds the tool's own work,
// and the person's answer has its own expiry (the approval's). When the
// budget runs out, its context is cancelled with cause
// context.DeadlineExceeded.
type budget struct {
	cancel context.CancelCauseFunc

	mu        sync.Mutex
	left      time.Duration // guarded by mu
	timer     *time.Timer   // running; nil while paused or spent; guarded by mu
	startedAt time.Time     // when timer was started; guarded by mu
}

// newBudget returns a context that ends d after now (not counting pauses),
// or with ctx, and the budget that ends it. Call end when the call is over.
func newBudget(ctx context.Context, d time.Duration) (context.Context, *budget) {
	bctx, cancel := context.WithCancelCause(ctx)
	b := &budget{cancel: cancel, left: d}
	b.resume()
	return bctx, b
}

// pause stops the clock. It returns false when the budget is already spent.
func (b *budget) pause() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer == nil || !b.timer.Stop() {
		return false
	}
	b.timer = nil
	b.left -= time.Since(b.startedAt)
	return true
}

// resume starts the clock again with what is left.
func (b *budget) resume() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		return
	}
	b.startedAt = time.Now()
	b.timer = time.AfterFunc(max(b.left, 0), func() { b.cancel(context.DeadlineExceeded) })
}

// end stops the clock and releases the context.
func (b *budget) end() {
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.mu.Unlock()
	b.cancel(context.Canceled)
}
