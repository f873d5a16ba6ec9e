package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

func BenchmarkAcceptInbound(b *testing.B) {
	ctx := context.Background()
	db, _ := open(b)
	in := inbound("", alice)
	i := 0
	for b.Loop() {
		in.DedupeKey = fmt.Sprintf("slack:T1:C1:%d", i)
		i++
		if _, dup, err := db.AcceptInbound(ctx, in); err != nil || dup {
			b.Fatalf("dup=%v err=%v", dup, err)
		}
	}
}

func BenchmarkAcceptInboundParallel(b *testing.B) {
	ctx := context.Background()
	db, _ := open(b)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		in := inbound("", alice)
		for pb.Next() {
			in.DedupeKey = fmt.Sprint(next.Add(1))
			if _, dup, err := db.AcceptInbound(ctx, in); err != nil || dup {
				b.Errorf("dup=%v err=%v", dup, err)
				return
			}
		}
	})
}

func BenchmarkAcceptInboundDuplicate(b *testing.B) {
	ctx := context.Background()
	db, _ := open(b)
	in := inbound("slack:T1:C1:1", alice)
	accept(b, db, in)
	for b.Loop() {
		if _, dup, err := db.AcceptInbound(ctx, in); err != nil || !dup {
			b.Fatalf("dup=%v err=%v", dup, err)
		}
	}
}

func BenchmarkRecent(b *testing.B) {
	ctx := context.Background()
	db, _ := open(b)
	s, err := db.ActiveSession(ctx, alice)
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]llm.Message, 200)
	for i := range msgs {
		msgs[i] = llm.Message{Role: llm.RoleUser, Content: fmt.Sprintf("message %d of a conversation, about this long on average.", i)}
		if i%2 == 1 {
			msgs[i].Role = llm.RoleAssistant
		}
	}
	if err := db.AppendMessages(ctx, s.ID, 0, msgs...); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		got, err := db.Recent(ctx, s.ID, 50)
		if err != nil || len(got) != 50 {
			b.Fatalf("%d messages, err %v", len(got), err)
		}
	}
}

// BenchmarkTurn is the store's share of one simple turn, as the runtime
// does it: accept, start (with the user message), read the history, finish
// with the step, the answer and a reply, mark it delivered. Sessions run one after the
// other.
func BenchmarkTurn(b *testing.B) {
	db, _ := open(b)
	i := 0
	for b.Loop() {
		turn(b, db, fmt.Sprint(i))
		i++
	}
}

// BenchmarkTurnParallel runs the turns of BenchmarkTurn from several
// goroutines, as the runtime does for different sessions.
func BenchmarkTurnParallel(b *testing.B) {
	db, _ := open(b)
	var next atomic.Int64
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			turn(b, db, fmt.Sprint(next.Add(1)))
		}
	})
}

func turn(b *testing.B, db *store.DB, key string) {
	ctx := context.Background()
	in := inbound(key, alice)
	in.Key.Conversation.Thread = key
	user := &llm.Message{Role: llm.RoleUser, Content: "hello"}
	answer := llm.Message{Role: llm.RoleAssistant, Content: "hi, how can I help?"}
	q, _, err := db.AcceptInbound(ctx, in)
	if err != nil {
		b.Fatal(err)
	}
	t, s, _, err := db.StartTurn(ctx, q.ID, user)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Recent(ctx, s.ID, 50); err != nil {
		b.Fatal(err)
	}
	last := &agent.Step{Session: s.ID, N: 1, Usage: llm.Usage{InputTokens: 100, OutputTokens: 10}, StopReason: "stop",
		Messages: []llm.Message{answer}}
	r, err := db.FinishTurn(ctx, q.ID, t, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: answer.Content}, last)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.MarkDelivered(ctx, r, "p"); err != nil {
		b.Fatal(err)
	}
}
