//go:build !wasip1

package guest

// hostHTTP fails outside the sandbox.
func hostHTTP([]byte) ([]byte, error) { return nil, ErrNotInSandbox }

// hostLog discards outside the sandbox.
func hostLog(int32, string) {}

// hostHasSecret reports false outside the sandbox.
func hostHasSecret(string) bool { return false }
