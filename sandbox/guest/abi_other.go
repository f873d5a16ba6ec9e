//go:build !wasip1

package guest

import (
	"fmt"
	"io"
	"os"
)

// hostHTTP fails outside the sandbox.
func hostHTTP([]byte) ([]byte, error) { return nil, ErrNotInSandbox }

// hostLog discards outside the sandbox.
func hostLog(int32, string) {}

// hostHasSecret reports false outside the sandbox.
func hostHasSecret(string) bool { return false }

// Main serves one call outside the sandbox: a native build of a tool reads
// the input envelope from stdin and writes the output envelope to stdout,
// so the same package can be run as a process (tests and benchmarks compare
// the two). Call it from main.main; in the WebAssembly build it does
// nothing, since main.main never runs in a reactor. Host functions are
// unavailable natively: HTTP returns ErrNotInSandbox.
func Main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Stdout.Write(errorOutput(fmt.Sprintf("read input: %v", err)))
		return
	}
	if handler == nil {
		os.Stdout.Write(errorOutput("no handler: call guest.Run from an init function"))
		return
	}
	os.Stdout.Write(handler(in))
}
