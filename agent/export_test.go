package agent

// RateBuckets counts the per-principal rate-limit buckets r holds.
func RateBuckets(r *Runtime) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rates)
}
