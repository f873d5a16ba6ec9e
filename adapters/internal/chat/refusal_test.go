package chat

import (
	"strconv"
	"testing"
	"time"
)

var r0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) // the refusals' clock

// A person is told once per reason; Untold lets the next refusal tell
// them; the memory of people stays bounded however many are refused.
func TestRefusalsTellOncePerReasonBounded(t *testing.T) {
	r := NewRefusals(RefusalLimits{People: 100})
	if !r.Tell("u1", "not allowed", "c1", r0) || r.Tell("u1", "not allowed", "c2", r0) {
		t.Fatal("want the first refusal told and the second not")
	}
	if !r.Tell("u1", "another reason", "c1", r0) {
		t.Error("another reason is not told")
	}
	r.Untold("u1", "not allowed")
	if !r.Tell("u1", "not allowed", "c1", r0) {
		t.Error("a refusal taken back with Untold is not told again")
	}
	for i := range 10_000 {
		if !r.Tell("user"+strconv.Itoa(i), "not allowed", "c", r0) {
			t.Fatalf("user %d, refused for the first time, is not told", i)
		}
	}
	if people, _ := r.Len(); people != 100 {
		t.Errorf("%d people remembered after 10,000 refused, want the bound 100", people)
	}
	// The most recent are remembered; the oldest were forgotten.
	if r.Tell("user9999", "not allowed", "c", r0) || !r.Tell("user0", "not allowed", "c", r0) {
		t.Error("want the newest remembered and the oldest forgotten")
	}
}

// Notices are limited per channel, and the memory of the channels is
// bounded whatever the number of channels: when every remembered channel
// had a notice recently, a new channel's notice is dropped (not another
// channel forgotten), until they age.
func TestRefusalsPerChannelLimitBounded(t *testing.T) {
	const every, channels = 10 * time.Second, 1000
	r := NewRefusals(RefusalLimits{Every: every, Channels: channels})
	if !r.Tell("u1", "no", "1", r0) || r.Tell("u2", "no", "1", r0) {
		t.Fatal("want one notice per channel within Every")
	}
	if !r.Tell("u2", "no", "1", r0.Add(every+time.Millisecond)) {
		t.Fatal("no notice once Every has passed")
	}
	now := r0.Add(every + time.Millisecond)
	allowed := 0
	for i := range 5 * channels {
		if r.Tell("p"+strconv.Itoa(i), "no", strconv.Itoa(1000+i), now) {
			allowed++
		}
	}
	if _, n := r.Len(); n > channels || allowed > channels {
		t.Errorf("%d channels remembered, %d notices allowed; want at most %d", n, allowed, channels)
	}
	// A person whose notice was dropped was not told: the next refusal,
	// once the channels aged, tells them.
	if !r.Tell("p4999", "no", "99999", now.Add(every+time.Millisecond)) {
		t.Error("a new channel is refused a notice after the others aged")
	}
}

func TestSeen(t *testing.T) {
	s := NewSeen(3, time.Minute)
	for _, k := range []string{"a", "b", "c"} {
		if !s.Add(k, r0) {
			t.Fatalf("Add(%s) of a new key = false", k)
		}
	}
	if s.Add("a", r0.Add(time.Second)) || !s.Has("a", r0.Add(time.Second)) {
		t.Error("a key added again is not seen")
	}
	s.Add("d", r0.Add(2*time.Second)) // full: b, the oldest, goes
	if s.Has("b", r0.Add(2*time.Second)) || !s.Has("c", r0.Add(2*time.Second)) || s.Len() != 3 {
		t.Errorf("after overflow: has b %v, has c %v, len %d; want false, true, 3",
			s.Has("b", r0.Add(2*time.Second)), s.Has("c", r0.Add(2*time.Second)), s.Len())
	}
	if s.Has("c", r0.Add(2*time.Minute)) {
		t.Error("a key is seen after its TTL")
	}
	if !s.Add("c", r0.Add(2*time.Minute)) {
		t.Error("a key added after its TTL is not new")
	}
	s.Forget("d")
	if s.Has("d", r0.Add(2*time.Minute)) {
		t.Error("a forgotten key is seen")
	}

	lim := NewSeen(2, time.Minute)
	if !lim.AddIfRoom("x", r0) || !lim.AddIfRoom("y", r0) || lim.AddIfRoom("z", r0) || lim.AddIfRoom("x", r0) {
		t.Error("AddIfRoom: want x and y in, z refused (full of fresh keys), x refused (fresh)")
	}
	if !lim.AddIfRoom("z", r0.Add(2*time.Minute)) || lim.Len() != 1 {
		t.Errorf("AddIfRoom after the others expired: len %d, want z alone", lim.Len())
	}
}
