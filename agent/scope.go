package agent

import (
	"context"
	"errors"
	"fmt"
)

// Dispatcher hands an accepted message to the process that runs its
// session's turns. The cluster package implements it over NATS JetStream:
// the replica that owns the session's partition takes the message (Adopt,
// Scope.Take).
type Dispatcher interface {
	// Dispatch announces q, already durable in the store. An error means
	// the announcement may be lost; the message is not: its owner finds
	// it in the store (Store.Pending) when it adopts or sweeps its
	// sessions.
	Dispatch(ctx context.Context, q QueuedInbound) error
}

// DecisionNotifier is a Dispatcher that also tells the other processes
// of an approval decided in this one (Decide): the turn waiting for it may
// run in another, which then goes on at once (Wake). A notice that is lost
// only delays that turn until the approval's expiry, which then finds the
// decision in the store.
type DecisionNotifier interface {
	Decided(ctx context.Context, id ApprovalID)
}

// Wake lets the turns of this process that wait for approval id go on,
// when another process has decided it: the decision is read from the
// store. It does nothing when no turn here waits for it, or it is still
// pending.
func (r *Runtime) Wake(ctx context.Context, id ApprovalID) error {
	r.init()
	r.mu.Lock()
	n := len(r.waiters[id])
	r.mu.Unlock()
	if n == 0 {
		return nil
	}
	a, err := r.Store.GetApproval(ctx, id)
	if err != nil {
		return fmt.Errorf("agent: wake approval %d: %w", id, err)
	}
	if a.State == ApprovalPending {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.waiters[id] {
		select {
		case w <- a.State:
		default:
		}
	}
	return nil
}

// Scope is a share of the sessions whose turns this process runs while
// its context lasts: a replica adopts one for each partition it owns
// (Adopt). When the context ends, the scope's turns stop as at a shutdown
// whose grace has run out: a running tool call is interrupted, an approval
// wait is abandoned, a delivery is cut short. They stay as they are in the
// store, and the process that adopts the sessions next resumes them with
// the recovery rules of a restart (recorded tool results used, nothing run
// twice).
type Scope struct {
	r   *Runtime
	ctx context.Context
	// fence, when fenced, is the claim the scope's turns write under (the
	// Fence of Adopt's context).
	fence  Fence
	fenced bool
	// n counts the scope's queued and running messages and its deliveries
	// of old replies; zero is closed (and nil'ed) when n drops to 0.
	// Guarded by r.mu.
	n    int
	zero chan struct{}
}

// released reports whether ctx ended because the runtime stops or a
// Scope ended (rather than a deadline or an error).
func released(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errShutdown)
}

// Adopt starts serving the sessions owns selects, until ctx ends: it
// delivers their replies that are persisted but not delivered, and queues
// their accepted messages whose turn has not finished (interrupted turns
// resume), skipping those this process has queued or is running already.
// Call it after Ready; once Shutdown has begun it returns ErrStopping.
// When ctx carries a Fence and the Store is a Fencer, its token is
// recorded first, and the scope's turns write under it.
//
// The caller must make sure that no other process serves these sessions
// while ctx lasts (the cluster package holds a lease), and call
// Scope.Wait after ctx ends before another process may adopt them.
func (r *Runtime) Adopt(ctx context.Context, owns func(SessionKey) bool) (*Scope, error) {
	r.init()
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	fence, fenced := FenceOf(ctx)
	if f, ok := r.Store.(Fencer); ok && fenced {
		// Before anything is read: the previous owner's writes from now
		// on are refused, and those it made before are read below.
		if err := f.AdvanceFence(ctx, fence.Name, fence.Token); err != nil {
			return nil, fmt.Errorf("agent: adopt: record the fencing token: %w", err)
		}
	}
	undelivered, err := r.Store.Undelivered(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: adopt: undelivered replies: %w", err)
	}
	pending, err := r.Store.Pending(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: adopt: pending messages: %w", err)
	}
	sc := &Scope{r: r, ctx: ctx, fence: fence, fenced: fenced}
	mine := undelivered[:0]
	for _, rep := range undelivered {
		if owns(rep.Key) {
			mine = append(mine, rep)
		}
	}
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return nil, ErrStopping
	}
	r.redeliver(mine, sc)
	taken := 0
	for _, q := range pending {
		if owns(q.Key) && sc.Take(q) {
			taken++
		}
	}
	if len(mine)+taken > 0 {
		r.Log.Info().Int("undelivered", len(mine)).Int("queued", taken).Msg("adopted work of sessions this process serves now")
	}
	return sc, nil
}

// Take queues q, an accepted message of one of the scope's sessions,
// unless this process has it queued or running already, the scope has
// ended or the runtime stops. It reports whether it queued q. Messages of
// one session run in the order of their ids, among those not started.
func (s *Scope) Take(q QueuedInbound) bool {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.takeLocked(q)
}

func (s *Scope) takeLocked(q QueuedInbound) bool {
	r := s.r
	if r.stopped || s.ctx.Err() != nil || r.scoped[q.ID] != nil || r.finished.has(q.ID) {
		return false
	}
	if qu := r.queues[q.Key]; qu != nil && qu.current == q.DedupeKey {
		return false // a turn of this process (not of a scope) runs it
	}
	r.enqueueLocked(q, s)
	return true
}

// Wait blocks until the scope's context has ended and every turn and
// delivery of the scope has stopped. The runtime stopping ends them too.
func (s *Scope) Wait() {
	<-s.ctx.Done()
	r := s.r
	for {
		r.mu.Lock()
		if s.n == 0 {
			r.mu.Unlock()
			return
		}
		if s.zero == nil {
			s.zero = make(chan struct{})
		}
		ch := s.zero
		r.mu.Unlock()
		<-ch
	}
}

// doneLocked counts off one message or delivery of the scope.
func (s *Scope) doneLocked() {
	s.n--
	if s.n == 0 && s.zero != nil {
		close(s.zero)
		s.zero = nil
	}
}

// context returns the context of a turn or delivery of the scope: base,
// cancelled with errShutdown when the scope ends. A nil Scope returns
// base.
func (s *Scope) context(base context.Context) (context.Context, context.CancelFunc) {
	if s == nil {
		return base, func() {}
	}
	if s.fenced {
		base = WithFence(base, s.fence)
	}
	ctx, cancel := context.WithCancelCause(base)
	stop := context.AfterFunc(s.ctx, func() { cancel(errShutdown) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// forgetLocked ends the scope's hold of message id, if a Scope queued it,
// and reports whether one had.
func (r *Runtime) forgetLocked(id InboundID) bool {
	sc := r.scoped[id]
	if sc == nil {
		return false
	}
	delete(r.scoped, id)
	sc.doneLocked()
	return true
}

// recentFinished is how many finished messages recentIDs remembers.
const recentFinished = 1 << 16

// recentIDs is a set of the last recentFinished ids added.
type recentIDs struct {
	set  map[InboundID]struct{}
	ring []InboundID
	next int
}

func (s *recentIDs) add(id InboundID) {
	if s.set == nil {
		s.set = make(map[InboundID]struct{})
		s.ring = make([]InboundID, 0, 64)
	}
	if len(s.ring) < recentFinished {
		s.ring = append(s.ring, id)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % recentFinished
	}
	s.set[id] = struct{}{}
}

func (s *recentIDs) has(id InboundID) bool {
	_, ok := s.set[id]
	return ok
}
