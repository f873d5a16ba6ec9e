package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
)

// A batch holds one check of a fence and token however many of its
// writes queue it; another token or fence is checked too.
func TestQueueFenceOncePerBatch(t *testing.T) {
	b := &pgx.Batch{}
	at := func(name string, token uint64) context.Context {
		return agent.WithFence(context.Background(), agent.Fence{Name: name, Token: token})
	}
	queueFence(context.Background(), b)
	queueFence(at("p/1", 7), b)
	b.Queue(`SELECT 1`)
	queueFence(at("p/1", 7), b)
	queueFence(at("p/1", 8), b)
	queueFence(at("p/2", 7), b)
	queueFence(at("p/2", 7), b)
	var got []any
	for _, q := range b.QueuedQueries {
		if q.SQL == fenceCheck {
			got = append(got, q.Arguments...)
		}
	}
	want := []any{"p/1", int64(7), "p/1", int64(8), "p/2", int64(7)}
	if len(got) != len(want) {
		t.Fatalf("checks queued: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("checks queued: %v, want %v", got, want)
		}
	}
}
