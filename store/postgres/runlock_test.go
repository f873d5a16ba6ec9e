package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// The runtime lock: replicas share it, a process without nats.url holds
// it alone, and a holder whose connection was cut takes it again, or is
// told it lost it when another process took it meanwhile.
func TestRuntimeLock(t *testing.T) {
	postgres.SetRuntimeLockEvery(t, 50*time.Millisecond)
	u := testURL(t)
	ctx := context.Background()
	open := func() *postgres.DB {
		db, err := postgres.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open(), open()
	lost := make(chan error, 4)
	onLost := func(err error) { lost <- err }

	r1, err := a.LockRuntime(ctx, true, "d1", "talon test replica 1", onLost)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.LockRuntime(ctx, true, "d1", "talon test replica 2", onLost)
	if err != nil {
		t.Fatalf("a second replica: %v", err)
	}
	if _, err := b.LockRuntime(ctx, false, "", "talon test alone", onLost); !errors.Is(err, postgres.ErrRuntimeLocked) ||
		!strings.Contains(err.Error(), `"talon test replica 1" from`) || !strings.Contains(err.Error(), `"talon test replica 2" from`) {
		t.Fatalf("a process without nats.url beside two replicas: %v", err)
	}
	// A replica of another deployment (another NATS server or prefix)
	// would run the same sessions' turns.
	if _, err := b.LockRuntime(ctx, true, "d2", "talon test other deployment", onLost); !errors.Is(err, postgres.ErrRuntimeLocked) ||
		!strings.Contains(err.Error(), "the replicas of another deployment") || !strings.Contains(err.Error(), `"talon test replica 1" from`) {
		t.Fatalf("a replica of another deployment: %v", err)
	}
	r1.Close()
	r2.Close()
	// Once the first deployment's replicas stopped, the other may run.
	r3, err := b.LockRuntime(ctx, true, "d2", "talon test other deployment", onLost)
	if err != nil {
		t.Fatalf("the other deployment once the first stopped: %v", err)
	}
	r3.Close()

	alone, err := a.LockRuntime(ctx, false, "", "talon test alone", onLost)
	if err != nil {
		t.Fatalf("a process without nats.url once the replicas stopped: %v", err)
	}
	if _, err := b.LockRuntime(ctx, true, "d1", "talon test replica 3", onLost); !errors.Is(err, postgres.ErrRuntimeLocked) {
		t.Fatalf("a replica beside a process without nats.url: %v", err)
	}
	// Its connection cut: it connects again and holds the lock again.
	admin := pgtest.Pool(t, u)
	cut := func(app string) {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil || n != 1 {
			t.Fatalf("cut %s: %d sessions, %v", app, n, err)
		}
	}
	cut("talon test alone")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'talon test alone'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock's connection was not made again within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.LockRuntime(ctx, false, "", "talon test other", onLost); !errors.Is(err, postgres.ErrRuntimeLocked) {
		t.Fatalf("the lock after its holder connected again: %v", err)
	}
	select {
	case err := <-lost:
		t.Fatalf("lost called though the lock was taken again: %v", err)
	default:
	}
	// A holder that checks its connection every second, cut, and the
	// lock taken by another process before it is back: lost is called,
	// naming the new holder.
	alone.Close()
	postgres.SetRuntimeLockEvery(t, time.Second)
	if alone, err = a.LockRuntime(ctx, false, "", "talon test alone", onLost); err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	cut("talon test alone")
	other, err := b.LockRuntime(ctx, true, "d1", "talon test replica 4", onLost)
	if err != nil {
		t.Fatalf("a replica once the holder's connection was cut: %v", err)
	}
	defer other.Close()
	select {
	case err := <-lost:
		if !errors.Is(err, postgres.ErrRuntimeLocked) || !strings.Contains(err.Error(), `"talon test replica 4"`) {
			t.Errorf("lost: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lost not called within 10 s of the lock being taken by another process")
	}
}
