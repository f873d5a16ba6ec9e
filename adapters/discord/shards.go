package discord

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// ShardsAuto, as Config.Shards, asks Discord for the recommended shard
// count (GET /gateway/bot).
const ShardsAuto = -1

// maxShards bounds Config.Shards.
const maxShards = 4096

// identifyEvery is Discord's least time between two IDENTIFYs of one
// bucket of shards (shard id mod max_concurrency).
const identifyEvery = 5 * time.Second

// ShardClaimer decides which shards of the gateway this process connects,
// and when each may identify. cluster.Shards implements it across the
// replicas of a deployment, with leases in NATS JetStream.
type ShardClaimer interface {
	// ShardCount agrees on the shard count with the other replicas: the
	// one they use, or want. adopt (discord.shards: auto) takes theirs
	// when it differs; otherwise a difference is an error.
	ShardCount(ctx context.Context, want int, adopt bool) (int, error)
	// Serve calls work for each shard this process may connect, in a
	// goroutine of its own, until ctx ends. work's context ends when the
	// shard must be disconnected; the connection must be closed when work
	// returns, and must be closed within a second of that context ending.
	// work asks hold before each IDENTIFY and before every frame it sends
	// or event it handles.
	Serve(ctx context.Context, count int, work func(ctx context.Context, shard int, hold ShardHold)) error
	// Identify waits until a shard of bucket (shard id mod
	// max_concurrency) may identify, and takes the turn.
	Identify(ctx context.Context, bucket int) error
}

// ShardHold is this process's claim of one shard, as a ShardClaimer grants
// it.
type ShardHold interface {
	// Held reports whether the claim still holds, by this process's own
	// clock: once it is false (the process slept past its lease, or lost
	// it), the connection is dropped without sending anything more.
	Held() bool
	// BeforeIdentify is asked between HELLO and each IDENTIFY with the
	// gateway's heartbeat interval: it returns how long to wait first (the
	// connection is closed unidentified meanwhile, then opened again), or
	// 0 to identify now. A claim after an owner that did not disconnect
	// cleanly waits until Discord has dropped that owner's connection.
	BeforeIdentify(ctx context.Context, heartbeat time.Duration) (time.Duration, error)
	// Handover returns the gateway session the shard's previous owner left
	// resumable (its id, where to resume it, the last event it handled),
	// asked once per claim: the claim's first connection resumes it, which
	// moves the session here from a connection Discord may still count as
	// open (a paused owner's, a lost host's), then ends it and identifies.
	Handover(ctx context.Context) (session, resumeURL string, seq int64, ok bool)
	// BeforeResume is asked between HELLO and the RESUME of a session
	// handed over, so that a later claim knows this connection may be open.
	BeforeResume(ctx context.Context) error
	// Taken says that the session handed over was resumed here and then
	// ended: the IDENTIFY that follows need not wait for Discord.
	Taken()
	// Serving records the session the connection serves and the last
	// event it handled ("" once the session is ended), for the next owner.
	Serving(session, resumeURL string, seq int64)
}

// runShards serves the shards this process holds (every one without
// Shards) until ctx ends, each on a connection of its own whose events go
// to the same dispatch. A fatal close of any shard stops them all and is
// returned.
func (a *Adapter) runShards(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	count, concurrency, err := a.shardPlan(ctx)
	if err != nil || ctx.Err() != nil {
		return err
	}
	if a.Shards != nil {
		if count, err = a.Shards.ShardCount(ctx, count, a.cfg.Shards == ShardsAuto); err != nil {
			return fmt.Errorf("discord: %w", err)
		}
	}
	a.mu.Lock()
	a.shardCount, a.shardStates = count, map[int]string{}
	a.mu.Unlock()
	a.Log.Info().Int("shards", count).Int("max_concurrency", concurrency).Bool("shared", a.Shards != nil).
		Msg("discord: the gateway is sharded")
	a.reportShards()
	identify := a.identifyGate(concurrency)

	var (
		fatalMu sync.Mutex
		fatal   error
	)
	work := func(wctx context.Context, shard int, hold ShardHold) {
		g := a.newGateway()
		g.shard = &[2]int{shard, count}
		g.hold = hold
		g.log = a.Log.With().Int("shard", shard).Logger()
		g.identify = func(ctx context.Context) error { return identify(ctx, shard%concurrency) }
		g.missed = a.replayedMessage
		g.dispatch = func(ctx context.Context, e *discordgo.Event) {
			a.dispatchMu.Lock()
			a.dispatch(ctx, e)
			a.dispatchMu.Unlock()
			switch e.Type {
			case "READY":
				a.setShardState(shard, "connected")
			case "RESUMED":
				a.setShardState(shard, "connected (resumed)")
			}
		}
		g.reconnecting = func(resume bool) {
			if resume {
				a.setShardState(shard, "reconnecting (resuming)")
			} else {
				a.setShardState(shard, "reconnecting")
			}
		}
		a.setShardState(shard, "connecting")
		g.log.Info().Msg("discord: connecting a shard")
		err := g.run(wctx)
		a.setShardState(shard, "")
		g.log.Info().Msg("discord: shard disconnected")
		var ce *CloseError
		if errors.As(err, &ce) {
			fatalMu.Lock()
			if fatal == nil {
				fatal = fmt.Errorf("discord: shard %d of %d: %w", shard, count, ce)
			}
			fatalMu.Unlock()
			cancel()
		}
	}
	if a.Shards != nil {
		err = a.Shards.Serve(ctx, count, work)
	} else {
		var wg sync.WaitGroup
		for shard := range count {
			wg.Add(1)
			go func() {
				defer wg.Done()
				work(ctx, shard, nil)
			}()
		}
		wg.Wait()
	}
	fatalMu.Lock()
	defer fatalMu.Unlock()
	if fatal != nil {
		var ce *CloseError
		errors.As(fatal, &ce)
		return ce
	}
	if err != nil {
		return fmt.Errorf("discord: shards: %w", err)
	}
	return nil
}

// shardPlan returns the shard count (Config.Shards, or Discord's
// recommendation) and the bot's identify concurrency, from GET
// /gateway/bot, asked again with a backoff until it answers. An invalid
// token is a *CloseError (as 4004).
func (a *Adapter) shardPlan(ctx context.Context) (count, concurrency int, err error) {
	for attempt := 0; ; attempt++ {
		gb, err := a.sess.GatewayBot(discordgo.WithContext(ctx))
		var re *discordgo.RESTError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == http.StatusUnauthorized {
			return 0, 0, fatalClose(4004)
		}
		if err == nil {
			count = a.cfg.Shards
			if count == ShardsAuto {
				count = max(gb.Shards, 1)
			}
			return count, max(gb.SessionStartLimit.MaxConcurrency, 1), nil
		}
		d := agent.Backoff(attempt, cmp.Or(a.reconnectBase, reconnectBase), cmp.Or(a.reconnectMax, reconnectMax))
		a.Log.Warn().Err(err).Dur("retry_in", d).Msg("discord: could not ask Discord for the shard count (GET /gateway/bot); retrying")
		if !agent.Sleep(ctx, d) {
			return 0, 0, nil
		}
	}
}

// replayedMessage notes a message that the session of a shard's previous
// owner replayed when this process took the session over: the read back
// after the shard's new READY reads its channel from just before it.
func (a *Adapter) replayedMessage(e *discordgo.Event) {
	if m, ok := decodeEvent[discordgo.MessageCreate](a, e); ok && m.Message != nil && m.ID != "" {
		a.noteMissed(m.Message)
	}
}

// identifyGate returns the wait before an IDENTIFY of a bucket: Shards',
// across replicas, or one in this process.
func (a *Adapter) identifyGate(concurrency int) func(ctx context.Context, bucket int) error {
	if a.Shards != nil {
		return a.Shards.Identify
	}
	every := cmp.Or(a.identifyEvery, identifyEvery)
	var mu sync.Mutex
	next := make([]time.Time, concurrency)
	return func(ctx context.Context, bucket int) error {
		mu.Lock()
		now := time.Now()
		at := next[bucket]
		if at.Before(now) {
			at = now
		}
		next[bucket] = at.Add(every)
		mu.Unlock()
		if !agent.Sleep(ctx, time.Until(at)) {
			return ctx.Err()
		}
		return nil
	}
}

// setShardState records a shard's state ("" once disconnected) and tells
// OnState.
func (a *Adapter) setShardState(shard int, state string) {
	a.mu.Lock()
	if state == "" {
		delete(a.shardStates, shard)
	} else {
		a.shardStates[shard] = state
	}
	a.mu.Unlock()
	a.reportShards()
}

// reportShards tells OnState the state of the shards this process
// connects: "connected (shards 0, 2 of 4)" when all are, "standing by
// (none of 4 shards held)" when it holds none, else each shard's state.
func (a *Adapter) reportShards() {
	if a.OnState == nil {
		return
	}
	a.mu.Lock()
	count := a.shardCount
	var held []int
	for s := range a.shardStates {
		held = append(held, s)
	}
	slices.Sort(held)
	states := make([]string, len(held))
	same := true
	for i, s := range held {
		states[i] = a.shardStates[s]
		same = same && states[i] == states[0]
	}
	a.mu.Unlock()
	if len(held) == 0 {
		a.OnState(fmt.Sprintf("standing by (none of %d shards held)", count))
		return
	}
	ids := make([]string, len(held))
	for i, s := range held {
		ids[i] = strconv.Itoa(s)
	}
	if same {
		a.OnState(fmt.Sprintf("%s (shards %s of %d)", states[0], strings.Join(ids, ", "), count))
		return
	}
	parts := make([]string, len(held))
	for i := range held {
		parts[i] = "shard " + ids[i] + " " + states[i]
	}
	a.OnState(fmt.Sprintf("%s (of %d)", strings.Join(parts, ", "), count))
}

// ShardsHeld lists the shards this process connects or is connecting now
// (nil when the gateway is not sharded).
func (a *Adapter) ShardsHeld() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int
	for s := range a.shardStates {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// ShardAdvice asks Discord (GET /gateway/bot) how many shards it
// recommends for the bot and how many of them may identify at once
// (max_concurrency), for `talon doctor`.
func (a *Adapter) ShardAdvice(ctx context.Context) (shards, maxConcurrency int, err error) {
	s, err := a.restSession()
	if err != nil {
		return 0, 0, err
	}
	gb, err := s.GatewayBot(discordgo.WithContext(ctx))
	if err != nil {
		return 0, 0, fmt.Errorf("discord: ask for the recommended shard count: %w", err)
	}
	return max(gb.Shards, 1), max(gb.SessionStartLimit.MaxConcurrency, 1), nil
}
