package agent

import (
	"context"
	"fmt"
	"time"
)

// Amendment is a platform's change to a message whose turn has not
// started: an edit or a deletion.
type Amendment struct {
	// Text replaces the message's text (an edit), unless Cancel.
	Text string
	// Cancel drops the message (a deletion). A deletion is applied
	// whatever edits came before or after it.
	Cancel bool
	// Edited is when the platform says the edit was made (Slack's
	// message.edited.ts, Discord's edited_timestamp); zero when it does
	// not say. The store keeps the newest time applied to each message
	// and refuses an edit older than it: an edit one replica received
	// before it stalled cannot replace, when it wakes, a newer edit another
	// replica applied meanwhile. An edit without a time is applied as
	// before (the last written wins).
	Edited time.Time
}

// EditedMicros is a.Edited in microseconds since the Unix epoch, as the
// stores keep it: 0 when the edit has no time (zero, or before 1970).
func (a Amendment) EditedMicros() int64 {
	if a.Edited.IsZero() {
		return 0
	}
	return max(a.Edited.UnixMicro(), 0)
}

// AmendRouter is a Dispatcher that finds the process running the session
// of a message that is to be amended, when it is not this one (an edit
// or deletion arrives at any replica; its session's turns run at one).
type AmendRouter interface {
	// HoldQueued asks the process that runs the session of the accepted
	// message dedupeKey to hold it: its turn does not start until release
	// is called, after which that process reads the message again from
	// the store. held is false when the message is unknown, finished or
	// started. Only ids cross between processes: this one writes the
	// amendment to the store while the message is held.
	HoldQueued(ctx context.Context, dedupeKey string) (q QueuedInbound, release func(), held bool, err error)
}

// Amend changes a message whose turn has not started: a.Cancel drops it,
// and otherwise a.Text replaces its text (a platform edit). It reports
// whether the message was changed; false means its turn had started, it is
// unknown, or a newer edit than a (by a.Edited) was applied to it.
//
// A message queued in this process is changed here. Otherwise, when the
// Dispatcher is an AmendRouter, the process that runs its session holds it
// while this one writes the change to the store, then takes it as changed
// (or drops it).
func (r *Runtime) Amend(ctx context.Context, dedupeKey string, a Amendment) (bool, error) {
	r.init()
	router, ok := r.Dispatch.(AmendRouter)
	if ok {
		r.mu.Lock()
		_, _, here := r.queuedLocked(dedupeKey)
		r.mu.Unlock()
		ok = !here
	}
	if !ok {
		return r.amendLocal(ctx, dedupeKey, a)
	}
	q, release, held, err := router.HoldQueued(ctx, dedupeKey)
	if err != nil {
		return false, fmt.Errorf("agent: amend: %w", err)
	}
	if !held {
		return false, nil
	}
	defer release()
	if !a.Cancel {
		a.Text = r.redact(ctx, q.Key.Principal, a.Text, "inbound")
	}
	_, changed, err := r.Store.AmendInbound(ctx, dedupeKey, a)
	if err != nil {
		return false, err
	}
	return changed, nil
}

// Hold keeps the worker of this process from starting the turn of q, a
// message of one of the scope's sessions, until release is called with q
// as the store has it then (ok false: it is finished, and is dropped). It
// queues q first if it is not queued yet. held is false when q's turn has
// started or finished here, or the scope has ended. Another process
// amends q in the store meanwhile (Runtime.Amend with an AmendRouter).
func (s *Scope) Hold(ctx context.Context, q QueuedInbound) (release func(now QueuedInbound, ok bool), held bool, err error) {
	r := s.r
	var (
		qu   *queue
		done chan struct{}
	)
	for {
		r.mu.Lock()
		// Queued and marked at once, so that its worker cannot start it
		// in between.
		s.takeLocked(q)
		qu = r.queues[q.Key]
		found := false
		if qu != nil && r.scoped[q.ID] == s {
			for _, it := range qu.items {
				if it.ID == q.ID {
					found = true
					break
				}
			}
		}
		if !found {
			r.mu.Unlock()
			return nil, false, nil
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
			return nil, false, ctx.Err()
		}
	}
	return func(now QueuedInbound, ok bool) {
		r.mu.Lock()
		for i, it := range qu.items {
			if it.ID != q.ID {
				continue
			}
			if !ok {
				qu.items = append(qu.items[:i], qu.items[i+1:]...)
				r.forgetLocked(it.ID)
				r.addPendingLocked(-1)
			} else {
				qu.items[i].Text = now.Text
			}
			break
		}
		delete(qu.amending, q.ID)
		r.mu.Unlock()
		close(done)
	}, true, nil
}
