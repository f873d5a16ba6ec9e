package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// The behaviour of the store through the interfaces is tested by the
// conformance suite (conformance_test.go, store/storetest); the tests of
// this package cover what is SQLite's own. These are their helpers.

var t0 = time.UnixMilli(1_700_000_000_123).UTC()

// open opens a database in a fresh temporary directory, with a fixed clock.
func open(tb testing.TB) (*store.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "talon.db")
	return openAt(tb, path), path
}

func openAt(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	db.Now = func() time.Time { return t0 }
	tb.Cleanup(func() { db.Close() })
	return db
}

var alice = agent.SessionKey{
	Principal:    agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"},
	Conversation: agent.Conversation{Channel: "C1", Thread: "1700.1"},
}

func inbound(key string, k agent.SessionKey) agent.Inbound {
	return agent.Inbound{
		DedupeKey:  key,
		Key:        k,
		Text:       "text of " + key,
		ReplyTo:    "reply-to " + key,
		ReceivedAt: t0.Add(-time.Second),
	}
}

func accept(tb testing.TB, db *store.DB, in agent.Inbound) agent.QueuedInbound {
	tb.Helper()
	q, dup, err := db.AcceptInbound(context.Background(), in)
	if err != nil {
		tb.Fatal(err)
	}
	if dup {
		tb.Fatalf("AcceptInbound(%q) is a duplicate", in.DedupeKey)
	}
	return q
}
