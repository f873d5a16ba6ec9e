package sandbox

import (
	"errors"
	"fmt"
)

// Conditions a tool call can end in. Each is matched with errors.Is on the
// *CallError a failed call carries; the model sees only CallError.Reason.
var (
	// ErrUnknownTool: no enabled tool has the name.
	ErrUnknownTool = errors.New("unknown tool")
	// ErrDeadline: the call ran past its deadline and was stopped.
	ErrDeadline = errors.New("deadline exceeded")
	// ErrMemory: the guest asked for more memory than its limit.
	ErrMemory = errors.New("memory limit exceeded")
	// ErrMemoryBusy: the sandbox's memory budget (Config.MaxMemoryMiB)
	// had no room for the call: it waited for memory until its deadline,
	// or its memory.grow found the budget full.
	ErrMemoryBusy = errors.New("sandbox memory budget full")
	// ErrOutputTooLarge: the guest's output is above max_output_bytes.
	ErrOutputTooLarge = errors.New("output too large")
	// ErrRateLimited: the user called the tool more than per_minute times in a minute.
	ErrRateLimited = errors.New("rate limited")
	// ErrGuestFault: the guest passed a pointer or length outside its
	// memory or above a host function's cap, or broke the ABI during a call.
	ErrGuestFault = errors.New("guest fault")
	// ErrTrap: the guest crashed (unreachable, out-of-bounds access, stack
	// overflow, …).
	ErrTrap = errors.New("tool crashed")
	// ErrBadOutput: the guest's output is not {"ok": …} or {"error": "…"}.
	ErrBadOutput = errors.New("bad output")
	// ErrABI: the module does not speak the tool ABI of this Talon.
	ErrABI = errors.New("tool ABI mismatch")
	// ErrNotApproved: the call needed approval and did not get it.
	ErrNotApproved = errors.New("not approved")
	// ErrInput: the arguments could not be handed to the tool.
	ErrInput = errors.New("bad input")
	// ErrLoad: the tool's module could not be compiled, does not speak the
	// tool ABI (the error then matches ErrABI too), or is beyond a limit
	// of the sandbox (ErrLimit too). It is found on first use.
	ErrLoad = errors.New("tool failed to load")
	// ErrLimit: the module is beyond a limit the sandbox sets on a
	// module's shape (so that compiling it stays short) or needs more
	// memory for its memory and tables at start than limits.memory_mib.
	// The error is a *LimitError.
	ErrLimit = errors.New("module beyond a sandbox limit")
	// ErrCompiling: the call's context ended while the tool was being
	// compiled for its first use. The compilation goes on; a later call
	// finds it done.
	ErrCompiling = errors.New("tool still compiling")
)

// CallError is why a call failed. Kind is one of the Err* sentinels above;
// Reason is a short text for the model. Neither ever contains arguments,
// output or secrets.
type CallError struct {
	Tool   string
	Kind   error
	Reason string
	// cause is the full reason behind Kind, for the operator (ErrLoad).
	cause error
}

func (e *CallError) Error() string {
	return fmt.Sprintf("sandbox: tool %s: %s", e.Tool, e.Reason)
}

// Unwrap makes errors.Is(err, ErrDeadline) and friends work, and reaches
// the full cause of an ErrLoad (errors.Is(err, ErrABI), the compile error).
func (e *CallError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

// ABIVersionError is returned by Check for a module built for another
// version of the tool ABI. It matches ErrABI.
type ABIVersionError struct {
	Version int
}

func (e *ABIVersionError) Error() string {
	return fmt.Sprintf("built for tool ABI version %d; this Talon speaks version %d", e.Version, ABIVersion)
}

// Is reports ErrABI.
func (e *ABIVersionError) Is(target error) bool { return target == ErrABI }

// ImportError is returned by Check for an import the host does not provide,
// or provides with another signature. It matches ErrABI.
type ImportError struct {
	Module, Name string
	// Reason is "unknown import" or a signature mismatch.
	Reason string
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("import %s.%s: %s", e.Module, e.Name, e.Reason)
}

// Is reports ErrABI.
func (e *ImportError) Is(target error) bool { return target == ErrABI }

// ExportError is returned by Check for a missing or mistyped export. It
// matches ErrABI.
type ExportError struct {
	Name   string
	Reason string
}

func (e *ExportError) Error() string {
	return fmt.Sprintf("export %s: %s", e.Name, e.Reason)
}

// Is reports ErrABI.
func (e *ExportError) Is(target error) bool { return target == ErrABI }

// LimitError is returned by Check and Load for a module beyond a limit of
// the sandbox: its shape (a function's size, nesting depth, locals,
// control instructions, or the estimated cost of compiling it; see
// ABI.md) or the memory its memory and tables need at start. It matches
// ErrLimit.
type LimitError struct {
	// Function is the index of the function beyond the limit (imported
	// functions first), or -1 for the module as a whole.
	Function int64
	// Limit names what is bounded, e.g. "nesting depth".
	Limit    string
	Got, Max uint64
}

func (e *LimitError) Error() string {
	if e.Function < 0 {
		return fmt.Sprintf("the module's %s is %d, above the limit of %d", e.Limit, e.Got, e.Max)
	}
	return fmt.Sprintf("function %d: %s is %d, above the limit of %d", e.Function, e.Limit, e.Got, e.Max)
}

// Is reports ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }
