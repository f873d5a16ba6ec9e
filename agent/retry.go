package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// NewRef returns a short random id that ties an error a user sees to the
// log line with the details.
func NewRef() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Backoff is capped exponential backoff with jitter: a duration in
// [d/2, d] where d = base·2^attempt, at most maxD.
func Backoff(attempt int, base, maxD time.Duration) time.Duration {
	d := base << min(attempt, 20)
	if d <= 0 || d > maxD {
		d = maxD
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return d/2 + time.Duration(binary.LittleEndian.Uint64(b[:])%uint64(d/2+1))
}

// Sleep waits d unless ctx ends first; it reports whether it waited it out.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
