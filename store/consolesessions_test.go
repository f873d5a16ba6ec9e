package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/talonhq/talon/store"
)

func TestConsoleSessions(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	const cookie = "session-cookie-value-7f3a9c"
	h := sha256.Sum256([]byte(cookie))
	if err := db.AddConsoleSession(ctx, store.ConsoleSession{Hash: h, Who: "slack:T1:U1", Created: t0, Expires: t0.Add(time.Hour)}, 2); err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("other"))
	if err := db.AddConsoleSession(ctx, store.ConsoleSession{Hash: other, Who: "admin", Created: t0, Expires: t0.Add(time.Minute)}, 2); err != nil {
		t.Fatal(err)
	}
	if err := db.AddConsoleSession(ctx, store.ConsoleSession{Hash: sha256.Sum256([]byte("third")), Who: "admin", Created: t0, Expires: t0.Add(time.Hour)}, 2); !errors.Is(err, store.ErrTooManySessions) {
		t.Fatalf("a third session of at most 2 = %v, want ErrTooManySessions", err)
	}
	db.Close()

	// After a reopen (a restart), the sign-in is still there until it expires.
	db = openAt(t, path)
	got, err := db.ConsoleSession(ctx, h, t0.Add(59*time.Minute))
	if err != nil || got.Who != "slack:T1:U1" || !got.Expires.Equal(t0.Add(time.Hour)) || !got.Created.Equal(t0) {
		t.Fatalf("ConsoleSession after reopen = %+v, %v", got, err)
	}
	if _, err := db.ConsoleSession(ctx, h, t0.Add(time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an expired session = %v, want ErrNotFound", err)
	}
	// The expired one is swept by the next sign-in, which then fits.
	db.Now = func() time.Time { return t0.Add(2 * time.Minute) }
	if err := db.AddConsoleSession(ctx, store.ConsoleSession{Hash: sha256.Sum256([]byte("third")), Who: "admin", Created: t0, Expires: t0.Add(time.Hour)}, 2); err != nil {
		t.Errorf("a sign-in after one expired = %v", err)
	}
	if err := db.DeleteConsoleSession(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ConsoleSession(ctx, h, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a deleted session = %v, want ErrNotFound", err)
	}
	db.Close()
	for _, f := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(cookie)) {
			t.Errorf("%s holds the cookie value", f)
		}
	}
}

func TestOIDCStates(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	h := sha256.Sum256([]byte("state-1"))
	if err := db.AddOIDCState(ctx, h, "nonce-1", t0.Add(10*time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	old := sha256.Sum256([]byte("state-old"))
	if err := db.AddOIDCState(ctx, old, "nonce-old", t0.Add(time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if err := db.AddOIDCState(ctx, sha256.Sum256([]byte("x")), "n", t0.Add(time.Minute), 2); !errors.Is(err, store.ErrTooManySessions) {
		t.Errorf("a third pending sign-in of at most 2 = %v", err)
	}
	db.Close()
	db = openAt(t, path) // a restart keeps them
	if _, err := db.TakeOIDCState(ctx, old, t0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an expired state = %v, want ErrNotFound", err)
	}
	if n, err := db.TakeOIDCState(ctx, h, t0.Add(9*time.Minute)); err != nil || n != "nonce-1" {
		t.Fatalf("TakeOIDCState = %q, %v", n, err)
	}
	if _, err := db.TakeOIDCState(ctx, h, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a state taken twice = %v, want ErrNotFound", err)
	}
}
