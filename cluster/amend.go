package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

// An edit or deletion of a message reaches any replica, but the message is
// queued at the replica that owns its session's partition. The replica
// that receives it (agent.Runtime.Amend) asks the owner, on
// "<prefix>.amend.<partition>", to hold the message ("hold <id>": its turn
// does not start), writes the change to the store itself, and tells the
// owner it is done ("release <id>"): the owner reads the message again
// from the store and takes it as changed, or drops it. Only ids cross
// NATS, as for the announcements; the store stays the truth. A hold whose
// release never comes (the asking replica died) ends after holdTimeout.

// holdTimeout bounds how long an owner holds a message for another
// replica's amendment.
const holdTimeout = 10 * time.Second

// held is a message this replica holds for another's amendment.
type held struct {
	p       int
	release func(agent.QueuedInbound, bool)
	timer   *time.Timer
}

func (n *Node) amendSubject(p int) string { return n.cfg.Prefix + ".amend." + strconv.Itoa(p) }

// HoldQueued asks the owner of the session of the accepted message
// dedupeKey to hold it (agent.AmendRouter). While no replica owns the
// partition (a takeover) it asks again, for up to twice the lease TTL.
func (n *Node) HoldQueued(ctx context.Context, dedupeKey string) (agent.QueuedInbound, func(), bool, error) {
	q, ok, err := n.findQueued(ctx, dedupeKey)
	if err != nil || !ok || q.Running {
		return agent.QueuedInbound{}, nil, false, err
	}
	subj := n.amendSubject(n.Partition(q.Key))
	id := strconv.FormatInt(int64(q.ID), 10)
	reply, err := n.ask(ctx, subj, "hold "+id, 2*n.cfg.LeaseTTL)
	if err != nil {
		return agent.QueuedInbound{}, nil, false, fmt.Errorf("cluster: hold message %d at its session's replica: %w", q.ID, err)
	}
	if reply != "held" {
		return agent.QueuedInbound{}, nil, false, nil
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := n.ask(rctx, subj, "release "+id, 5*time.Second); err != nil {
			n.log.Warn().Err(err).Int64("inbound", int64(q.ID)).Dur("hold", holdTimeout).
				Msg("cluster: could not release a message held for its amendment; its replica releases it after the hold")
		}
	}
	return q, release, true, nil
}

// findQueued finds the accepted message dedupeKey among those whose turn
// has not finished (amendments are rare: a scan of the pending ones).
func (n *Node) findQueued(ctx context.Context, dedupeKey string) (agent.QueuedInbound, bool, error) {
	pending, err := n.store.Pending(ctx)
	if err != nil {
		return agent.QueuedInbound{}, false, fmt.Errorf("cluster: find the message to amend: %w", err)
	}
	for _, q := range pending {
		if q.DedupeKey == dedupeKey {
			return q, true, nil
		}
	}
	return agent.QueuedInbound{}, false, nil
}

// ask sends a request to the owner of a partition and returns its answer,
// asking again while no one answers, for up to within.
func (n *Node) ask(ctx context.Context, subj, body string, within time.Duration) (string, error) {
	end := time.Now().Add(within)
	wait := 50 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := n.nc.RequestWithContext(rctx, subj, []byte(body))
		cancel()
		if err == nil {
			if string(m.Data) == "error" {
				return "", errors.New("the owner could not read the message from the store")
			}
			return string(m.Data), nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return "", err
		}
		if time.Now().After(end) {
			return "", fmt.Errorf("no replica answered for the partition within %s: %w", within, err)
		}
		if !sleepCtx(ctx, wait) {
			return "", ctx.Err()
		}
		wait = min(2*wait, time.Second)
	}
}

// serveAmendments answers holds and releases for partition p while ctx
// lasts; the subscription ends with the returned function.
func (n *Node) serveAmendments(ctx context.Context, p int, sc *agent.Scope, log *zerolog.Logger) func() {
	sub, err := n.nc.Subscribe(n.amendSubject(p), func(m *nats.Msg) {
		if ctx.Err() != nil {
			return // the partition is being given up: the next owner answers
		}
		op, arg, _ := strings.Cut(string(m.Data), " ")
		id, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || id <= 0 {
			return
		}
		switch op {
		case "hold":
			_ = m.Respond([]byte(n.hold(ctx, p, sc, agent.InboundID(id), log)))
		case "release":
			n.unhold(ctx, agent.InboundID(id), log)
			_ = m.Respond([]byte("ok"))
		}
	})
	if err != nil {
		log.Warn().Err(err).Msg("cluster: edits and deletions of this partition's messages that reach other replicas are not applied")
		return func() {}
	}
	return func() {
		_ = sub.Unsubscribe()
		// Holds of this partition end with it; its next owner reads the
		// messages from the store.
		n.mu.Lock()
		var ids []agent.InboundID
		for id, h := range n.holds {
			if h.p == p {
				ids = append(ids, id)
			}
		}
		n.mu.Unlock()
		for _, id := range ids {
			n.unhold(context.Background(), id, log)
		}
	}
}

func (n *Node) hold(ctx context.Context, p int, sc *agent.Scope, id agent.InboundID, log *zerolog.Logger) string {
	q, ok, err := n.load(ctx, id)
	if err != nil {
		log.Warn().Err(err).Int64("inbound", int64(id)).Msg("cluster: load a message to hold for its amendment")
		return "error"
	}
	if !ok || n.Partition(q.Key) != p {
		return "no"
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	release, ok, err := sc.Hold(hctx, q)
	if err != nil || !ok {
		return "no"
	}
	h := &held{p: p, release: release}
	n.mu.Lock()
	if n.holds == nil {
		n.holds = map[agent.InboundID]*held{}
	}
	if old := n.holds[id]; old != nil {
		// Cannot happen: Hold waits for the message's previous hold.
		n.mu.Unlock()
		release(q, true)
		return "no"
	}
	n.holds[id] = h
	h.timer = time.AfterFunc(holdTimeout, func() { n.unhold(context.Background(), id, log) })
	n.mu.Unlock()
	return "held"
}

// unhold ends the hold of id: the message is read again from the store
// and kept as it is there, or dropped when it has finished (or cannot be
// read: the sweep finds it again then).
func (n *Node) unhold(ctx context.Context, id agent.InboundID, log *zerolog.Logger) {
	n.mu.Lock()
	h := n.holds[id]
	delete(n.holds, id)
	n.mu.Unlock()
	if h == nil {
		return
	}
	h.timer.Stop()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	q, ok, err := n.load(lctx, id)
	if err != nil {
		log.Warn().Err(err).Int64("inbound", int64(id)).Msg("cluster: read a message again after its amendment; it is taken again from the store by the sweep")
		ok = false
	}
	h.release(q, ok)
}
