package agent

import (
	"context"
	"fmt"
	"time"
)

// ApprovalRequest is a tool call, or one request inside it, that needs the
// session owner's approval before it runs.
type ApprovalRequest struct {
	Key    SessionKey
	Turn   TurnID
	CallID string
	Tool   string
	// Description names the action and never a secret.
	Description string
}

// RequestApproval asks the owner of req.Key and waits for the answer. The
// approval is persisted first, so a restart keeps it: the resumed turn asks
// again with the same description and finds the same approval (and its
// decision, if one was made). It is denied when the channel cannot ask,
// when the owner denies, and when it expires (ApprovalTimeout, or the end of
// the turn). When the runtime is stopping it returns an error at once and
// the approval stays pending: the call is abandoned, not recorded, and the
// resumed turn runs it again, which asks again.
func (r *Runtime) RequestApproval(ctx context.Context, req ApprovalRequest) (bool, error) {
	r.init()
	r.mu.Lock()
	ch := r.channels[req.Key.Principal.Platform]
	replyTo := r.replyTo[req.Turn]
	r.mu.Unlock()
	asker, ok := ch.(Asker)
	if !ok {
		return false, nil
	}

	timeout := r.ApprovalTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	a, _, err := r.Store.CreateApproval(ctx, Approval{
		Turn: req.Turn, CallID: req.CallID, Tool: req.Tool, Description: req.Description,
		Key: req.Key, ReplyTo: replyTo, ExpiresAt: r.Now().Add(timeout),
	})
	if err != nil {
		return false, fmt.Errorf("agent: request approval: %w", err)
	}
	switch a.State {
	case ApprovalApproved:
		return true, nil
	case ApprovalDenied, ApprovalExpired:
		return false, nil
	}
	if r.isStopping() {
		// Asked during the shutdown's drain: nothing was sent yet, and the
		// approval is persisted, so the resumed turn runs the call again and
		// asks then.
		r.abandon(req.Turn, req.CallID)
		return false, errShutdown
	}

	wait := make(chan ApprovalState, 1)
	r.mu.Lock()
	r.waiters[a.ID] = append(r.waiters[a.ID], wait)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		ws := r.waiters[a.ID]
		for i, w := range ws {
			if w == wait {
				r.waiters[a.ID] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(r.waiters[a.ID]) == 0 {
			delete(r.waiters, a.ID)
		}
	}()

	prompt := promptOf(a)
	if err := asker.AskApproval(ctx, prompt); err != nil {
		r.Log.Warn().Err(err).Int64("approval", int64(a.ID)).Msg("could not ask for approval; denying")
		r.settle(context.WithoutCancel(ctx), a.ID, ApprovalDenied, "")
		return false, nil
	}
	timer := time.NewTimer(max(a.ExpiresAt.Sub(r.Now()), 0))
	defer timer.Stop()
	select {
	case st := <-wait:
		return st == ApprovalApproved, nil
	case <-timer.C:
	case <-r.stopping:
		r.abandon(req.Turn, req.CallID)
		return false, errShutdown
	case <-ctx.Done():
		select {
		case <-r.stopping:
			r.abandon(req.Turn, req.CallID)
			return false, ctx.Err()
		default:
		}
	}
	st := r.settle(context.WithoutCancel(ctx), a.ID, ApprovalExpired, "")
	return st == ApprovalApproved, nil
}

// settle moves a pending approval to state, wakes its waiters and tells
// the channel. It returns the approval's final state (a concurrent
// decision may have won).
func (r *Runtime) settle(ctx context.Context, id ApprovalID, state ApprovalState, by string) ApprovalState {
	a, changed, err := r.Store.DecideApproval(ctx, id, state, by)
	if err != nil {
		r.Log.Error().Err(err).Int64("approval", int64(id)).Msg("settle approval")
		return ApprovalDenied
	}
	if changed {
		r.announce(ctx, a)
	}
	return a.State
}

// announce wakes the waiters of a decided approval and updates the prompt.
func (r *Runtime) announce(ctx context.Context, a Approval) {
	r.mu.Lock()
	for _, w := range r.waiters[a.ID] {
		select {
		case w <- a.State:
		default:
		}
	}
	ch := r.channels[a.Key.Principal.Platform]
	r.mu.Unlock()
	if asker, ok := ch.(Asker); ok {
		var by Principal
		if a.DecidedBy != "" {
			by, _ = ParsePrincipal(a.DecidedBy)
		}
		if err := asker.ApprovalDone(ctx, promptOf(a), a.State, by); err != nil {
			r.Log.Warn().Err(err).Int64("approval", int64(a.ID)).Msg("could not show the approval's outcome")
		}
	}
}

func promptOf(a Approval) ApprovalPrompt {
	return ApprovalPrompt{ID: a.ID, Key: a.Key, ReplyTo: a.ReplyTo, Tool: a.Tool, Description: a.Description, ExpiresAt: a.ExpiresAt}
}

// Decide records the owner's answer to an approval: compare-and-set from
// pending, so a double click or a second person changes nothing. It returns
// the approval's state after the call: ErrNotOwner when by is not the
// session's owner, ErrDecided (with the existing state) when it was decided
// already, ErrUnknownApproval for an unknown id.
func (r *Runtime) Decide(ctx context.Context, id ApprovalID, by Principal, approve bool) (ApprovalState, error) {
	r.init()
	a, err := r.Store.GetApproval(ctx, id)
	if err != nil {
		return "", fmt.Errorf("agent: decide approval %d: %w", id, err)
	}
	if a.Key.Principal != by {
		return a.State, ErrNotOwner
	}
	if a.State != ApprovalPending {
		return a.State, ErrDecided
	}
	state := ApprovalDenied
	if approve {
		state = ApprovalApproved
	}
	if !r.Now().Before(a.ExpiresAt) {
		state = ApprovalExpired
	}
	a, changed, err := r.Store.DecideApproval(ctx, id, state, by.String())
	if err != nil {
		return "", fmt.Errorf("agent: decide approval %d: %w", id, err)
	}
	if !changed {
		return a.State, ErrDecided
	}
	r.announce(ctx, a)
	return a.State, nil
}

// Amend changes a message whose turn has not started: cancel drops it, and
// otherwise text replaces its text (a platform edit). It reports whether the
// message was changed; false means its turn had started or it is unknown.
//
// The store is written without r.mu held, so queueing and the other
// sessions go on meanwhile. The message is marked as being amended first:
// its session's worker does not take it until the amendment is applied to
// the queue (or failed), so the store and the queue still change together,
// and a second Amend of the same message waits for the first.
func (r *Runtime) Amend(ctx context.Context, dedupeKey, text string, cancel bool) (bool, error) {
	r.init()
	var (
		qu   *queue
		q    QueuedInbound
		done chan struct{}
	)
	for {
		r.mu.Lock()
		var ok bool
		qu, q, ok = r.queuedLocked(dedupeKey)
		if !ok {
			r.mu.Unlock()
			return false, nil
		}
		busy := qu.amending[q.ID]
		if busy == nil {
			done = make(chan struct{})
			if qu.amending == nil {
				qu.amending = make(map[InboundID]chan struct{})
			}
			qu.amending[q.ID] = done
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	// The mark ends however Amend returns; apply, when set, changes the
	// queue in the same critical section. The message is still queued then:
	// only the worker takes it, and it waits while the mark is set.
	var apply func()
	defer func() {
		r.mu.Lock()
		if apply != nil {
			apply()
		}
		delete(qu.amending, q.ID)
		r.mu.Unlock()
		close(done)
	}()

	if !cancel {
		text = r.redact(ctx, q.Key.Principal, text, "inbound")
	}
	_, changed, err := r.Store.AmendInbound(ctx, dedupeKey, text, cancel)
	if err != nil || !changed {
		return false, err
	}
	apply = func() {
		for i, it := range qu.items {
			if it.ID != q.ID {
				continue
			}
			if cancel {
				qu.items = append(qu.items[:i], qu.items[i+1:]...)
				r.addPendingLocked(-1)
			} else {
				qu.items[i].Text = text
			}
			break
		}
	}
	return true, nil
}

// queuedLocked finds the queued message with dedupeKey and its queue. ok is
// false when it is unknown or a worker has taken it (its turn started).
func (r *Runtime) queuedLocked(dedupeKey string) (qu *queue, q QueuedInbound, ok bool) {
	for _, qu := range r.queues {
		if qu.current == dedupeKey {
			return nil, QueuedInbound{}, false
		}
		for _, q := range qu.items {
			if q.DedupeKey == dedupeKey {
				return qu, q, true
			}
		}
	}
	return nil, QueuedInbound{}, false
}

// callRef names one tool call of one turn.
type callRef struct {
	turn TurnID
	call string
}

// abandon marks a call whose approval wait the shutdown ended: its result
// (a refusal the person never gave) must not be recorded.
func (r *Runtime) abandon(t TurnID, call string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.abandoned[callRef{t, call}] = true
}

// wasAbandoned reports, and forgets, whether abandon marked the call.
func (r *Runtime) wasAbandoned(t TurnID, call string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := r.abandoned[callRef{t, call}]
	delete(r.abandoned, callRef{t, call})
	return ok
}
