package agent

import "context"

// Limiter holds the turn limits across the processes of a deployment
// (the cluster package implements it over NATS JetStream KV). Without one,
// Limits.MaxConcurrentTurns, MaxTurnsPerUser and RatePerMinute hold in
// this process only, as they do for a single gateway. With one they hold
// for every process that shares it, and this process's own bounds still
// apply on top.
type Limiter interface {
	// Acquire waits until p may run one more turn: fewer than perUser of
	// p's turns and fewer than global turns in all run anywhere. release
	// frees the slot; a process that dies holding one frees it by itself
	// after a while. An error other than ctx's means the limits could not
	// be checked: the runtime then runs the turn under its own bounds.
	Acquire(ctx context.Context, p Principal, perUser, global int) (release func(), err error)
	// Allow takes one of p's perMinute turns a minute (a token bucket
	// shared by every process) and reports whether there was one.
	Allow(ctx context.Context, p Principal, perMinute int) (bool, error)
}

// acquireShared takes p's slot of the Limiter, when there is one. It
// reports false when the runtime stops or cut is closed first. When the
// Limiter fails, the turn runs under this process's bounds only.
func (r *Runtime) acquireShared(p Principal, cut <-chan struct{}) (release func(), ok bool) {
	if r.Limiter == nil {
		return func() {}, true
	}
	ctx, cancel := context.WithCancel(r.base)
	defer cancel()
	go func() {
		select {
		case <-r.stopping:
		case <-cut:
		case <-ctx.Done():
		}
		cancel()
	}()
	release, err := r.Limiter.Acquire(ctx, p, r.limits.MaxTurnsPerUser, r.limits.MaxConcurrentTurns)
	if err == nil {
		return release, true
	}
	if ctx.Err() != nil {
		return nil, false
	}
	r.Log.Warn().Err(err).Msg("the deployment's turn limits could not be checked; this turn runs under this process's limits only")
	return func() {}, true
}

// allowTurn takes one of p's turns of the minute: from the Limiter's
// bucket when there is one (this process's own when it fails), else from
// this process's.
func (r *Runtime) allowTurn(ctx context.Context, p Principal) bool {
	if r.limits.RatePerMinute <= 0 {
		return true
	}
	if r.Limiter != nil {
		ok, err := r.Limiter.Allow(ctx, p, r.limits.RatePerMinute)
		if err == nil {
			return ok
		}
		r.Log.Warn().Err(err).Msg("the deployment's turn rate could not be checked; this process's rate applies to this turn")
	}
	return r.allow(p)
}
