package chat

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

func TestPacer(t *testing.T) {
	type call struct {
		key     string
		at      time.Duration // after t0
		onlyNow bool
		wait    time.Duration
		ok      bool
	}
	cases := []struct {
		name    string
		burst   int
		deferTo time.Duration // Defer("C1", t0+defer_) before the calls, when not 0
		calls   []call
	}{
		{"burst then one a second", 3, 0, []call{
			{"C1", 0, false, 0, true}, {"C1", 0, false, 0, true}, {"C1", 0, false, 0, true},
			{"C1", 0, false, time.Second, true}, {"C1", 0, false, 2 * time.Second, true},
		}},
		{"keys are independent", 3, 0, []call{
			{"C1", 0, false, 0, true}, {"C1", 0, false, 0, true}, {"C1", 0, false, 0, true},
			{"C2", 0, false, 0, true}, {"C1", 0, false, time.Second, true},
		}},
		{"slots free up with time", 3, 0, []call{
			{"C1", 0, false, 0, true}, {"C1", 0, false, 0, true}, {"C1", 0, false, 0, true},
			{"C1", 2 * time.Second, false, 0, true}, {"C1", 2 * time.Second, false, 0, true},
			{"C1", 2 * time.Second, false, time.Second, true},
		}},
		{"onlyNow books nothing when it would wait", 3, 0, []call{
			{"C1", 0, false, 0, true}, {"C1", 0, false, 0, true}, {"C1", 0, false, 0, true},
			{"C1", 0, true, time.Second, false}, {"C1", 0, true, time.Second, false},
			{"C1", time.Second, true, 0, true},
		}},
		{"one at a time (a stream's edits)", 0, 0, []call{
			{"S", 0, true, 0, true}, {"S", 500 * time.Millisecond, true, 500 * time.Millisecond, false},
			{"S", time.Second, true, 0, true}, {"S", 1500 * time.Millisecond, true, 500 * time.Millisecond, false},
		}},
		{"a Retry-After holds the next slot", 3, 5 * time.Second, []call{
			{"C1", 0, false, 5 * time.Second, true}, {"C1", 5 * time.Second, true, time.Second, false},
			{"C1", 6 * time.Second, true, 0, true},
			{"C2", 0, false, 0, true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &Pacer{Interval: time.Second, Burst: c.burst}
			if c.deferTo != 0 {
				p.Defer("C1", t0.Add(c.deferTo))
			}
			for i, k := range c.calls {
				wait, ok := p.Reserve(k.key, t0.Add(k.at), k.onlyNow)
				if wait != k.wait || ok != k.ok {
					t.Errorf("call %d: Reserve = %v, %v; want %v, %v", i+1, wait, ok, k.wait, k.ok)
				}
			}
		})
	}
}

func TestPacerForgetsFreeKeysOnly(t *testing.T) {
	p := &Pacer{Interval: time.Second, Burst: 1}
	for i := range maxPaceKeys {
		p.Reserve(fmt.Sprint(i), t0, false)
	}
	p.Reserve("busy", t0.Add(time.Second), false)
	p.Reserve("busy", t0.Add(time.Second), false) // its next slot is at t0+3s
	// Past maxPaceKeys, a reservation at t0+2s forgets every key whose
	// slot is free by then, and only those.
	p.Reserve("new", t0.Add(2*time.Second), false)
	if n := p.keys(); n != 2 {
		t.Errorf("%d keys remembered, want 2 (busy and new)", n)
	}
	if wait, _ := p.Reserve("busy", t0.Add(2*time.Second), false); wait != time.Second {
		t.Errorf("busy waits %v, want 1s: its pace was forgotten", wait)
	}
	p.Forget("busy")
	if wait, _ := p.Reserve("busy", t0.Add(2*time.Second), false); wait != 0 {
		t.Errorf("after Forget busy waits %v", wait)
	}
	if wait, ok := (&Pacer{}).Reserve("x", t0, true); wait != 0 || !ok {
		t.Errorf("the zero Pacer paced: %v, %v", wait, ok)
	}
}
