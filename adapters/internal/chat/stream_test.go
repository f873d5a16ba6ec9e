package chat

import (
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

type preview struct{ text string }

// The stream map is bounded by dropping only streams that are over:
// finished ones first, then those without activity for Stale; a live
// stream is never dropped, and a new answer beyond the bound is simply
// not previewed.
func TestStreamsBoundedWithoutDroppingLiveOnes(t *testing.T) {
	s := &Streams[preview]{Max: 3, Stale: time.Minute}
	for id := range agent.InboundID(3) {
		st, ok := s.Open(id+1, t0)
		if !ok {
			t.Fatalf("stream %d refused", id+1)
		}
		st.text = "live"
	}
	if _, ok := s.Open(4, t0.Add(30*time.Second)); ok {
		t.Fatal("a fourth stream was opened while three are live: one of them was dropped")
	}
	for id := range agent.InboundID(3) {
		if st, ok := s.Open(id+1, t0.Add(30*time.Second)); !ok || st.text != "live" {
			t.Fatalf("live stream %d lost: %v, %v", id+1, st, ok)
		}
	}

	// A finished stream makes room; the others stay.
	if st, ok := s.Finish(2); !ok || st.text != "live" {
		t.Fatalf("Finish(2) = %v, %v", st, ok)
	}
	if _, ok := s.Open(2, t0.Add(31*time.Second)); ok {
		t.Error("a finished stream was opened again (a late delta would overwrite the answer)")
	}
	if _, ok := s.Open(4, t0.Add(31*time.Second)); !ok {
		t.Fatal("no room made by the finished stream")
	}
	if s.Len() != 3 {
		t.Errorf("%d streams, want 3", s.Len())
	}

	// Stream 1 goes quiet; 3 and 4 stay active: 1 is the one dropped.
	for _, id := range []agent.InboundID{3, 4} {
		if !s.Reserve(id, t0.Add(80*time.Second)) {
			t.Errorf("stream %d: first write refused", id)
		}
	}
	if _, ok := s.Open(5, t0.Add(100*time.Second)); !ok {
		t.Fatal("the stale stream did not make room")
	}
	if _, ok := s.Open(1, t0.Add(100*time.Second)); ok {
		t.Error("stream 1 is still kept, after a minute without activity")
	}
	for _, id := range []agent.InboundID{3, 4, 5} {
		if _, ok := s.Open(id, t0.Add(100*time.Second)); !ok {
			t.Errorf("active stream %d was dropped", id)
		}
	}
	s.Drop(3)
	if s.Len() != 2 {
		t.Errorf("%d streams after Drop, want 2", s.Len())
	}
}

// A preview is written at most once per Interval, and not before a
// Retry-After; a dropped stream starts afresh.
func TestStreamsPaceWrites(t *testing.T) {
	s := &Streams[preview]{Interval: time.Second}
	s.Open(1, t0)
	steps := []struct {
		at   time.Duration
		want bool
	}{{0, true}, {400 * time.Millisecond, false}, {time.Second, true}, {1999 * time.Millisecond, false}, {2 * time.Second, true}}
	for _, st := range steps {
		if due := s.Due(1, t0.Add(st.at)); due != st.want {
			t.Errorf("Due at %v: %v, want %v", st.at, due, st.want)
		}
		if got := s.Reserve(1, t0.Add(st.at)); got != st.want {
			t.Errorf("write at %v: %v, want %v", st.at, got, st.want)
		}
	}
	s.Defer(1, t0.Add(10*time.Second))
	if s.Reserve(1, t0.Add(5*time.Second)) {
		t.Error("a write before the Retry-After")
	}
	if !s.Reserve(1, t0.Add(10*time.Second)) {
		t.Error("no write after the Retry-After")
	}
	s.Drop(1)
	s.Open(1, t0.Add(10*time.Second))
	if !s.Reserve(1, t0.Add(10*time.Second)) {
		t.Error("a new stream of the same id waits for the old one's pace")
	}
}
