package postgres

import "time"

// HoldGroups makes db's grouped writes queue, as they do while all its
// groups are in flight, until release is called; queued says how many
// wait. Its grouped reads queue too: they share the bound.
func HoldGroups(db *DB) (queued func() int, release func()) { return hold(&db.group) }

// HoldReads is HoldGroups, counting db's queued reads.
func HoldReads(db *DB) (queued func() int, release func()) { return hold(&db.reads) }

// ReadGroups returns how many groups of two reads or more db sent.
func ReadGroups(db *DB) int64 {
	db.reads.mu.Lock()
	defer db.reads.mu.Unlock()
	return db.reads.groups
}

// ReadsQueued returns how many of db's grouped reads wait to be sent.
func ReadsQueued(db *DB) int {
	db.reads.mu.Lock()
	defer db.reads.mu.Unlock()
	return len(db.reads.queue)
}

func hold(g *grouper) (queued func() int, release func()) {
	g.mu.Lock()
	g.running += g.maxGroups
	g.mu.Unlock()
	queued = func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue)
	}
	release = func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.running -= g.maxGroups
		close(g.ended)
		g.ended = make(chan struct{})
	}
	return queued, release
}

// PoolSize returns the most connections db's pool opens.
func PoolSize(db *DB) int32 { return db.pool.Config().MaxConns }

// PoolSizeSet is poolSizeSet.
var PoolSizeSet = poolSizeSet

// SetRuntimeLockEvery sets how often the RuntimeLocks taken afterwards
// check their connection, until the test ends.
func SetRuntimeLockEvery(t interface{ Cleanup(func()) }, d time.Duration) {
	old := runtimeLockEvery
	runtimeLockEvery = d
	t.Cleanup(func() { runtimeLockEvery = old })
}
