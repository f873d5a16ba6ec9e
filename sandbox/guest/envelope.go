package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// handler is the registered tool function, set by Run. A WebAssembly export
// cannot carry a closure, so this one package variable links the exported
// talon_call to the tool's handler; each instance serves exactly one call.
var handler func(input []byte) []byte

// Run registers fn as the tool's handler. Call it from an init function of
// the tool's package main: in a reactor module main.main is never called.
//
// For each call the SDK decodes the input envelope {"tool": ..., "args": ...},
// unmarshals args into A (unknown object fields are rejected), calls fn and
// encodes {"ok": result} or {"error": err.Error()}. Arguments that cannot be
// decoded produce {"error": "invalid arguments: ..."} without calling fn; a
// panic in fn is recovered and reported as an error. A later Run replaces an
// earlier one.
func Run[A any, R any](fn func(args A) (R, error)) {
	handler = func(input []byte) []byte { return dispatch(input, fn) }
	warm[A, R]()
}

// warm decodes an empty call and encodes an empty result, without calling
// the tool, so that encoding/json builds its per-type caches now: Run is
// called from init, which the host runs when it prepares an instance,
// ahead of the call. Each instance serves one call, so without this every
// call would pay for them.
func warm[A any, R any]() {
	_, _ = decodeArgs[A]([]byte(`{"tool":"","args":{}}`))
	var r R
	_ = okOutput(r)
}

// envelope is the input JSON of talon_call.
type envelope struct {
	Tool string          `json:"tool"`
	Args json.RawMessage `json:"args"`
}

// errorEnvelope is the output JSON of a failed talon_call; okOutput writes
// the other form, {"ok": …}, itself.
type errorEnvelope struct {
	Error string `json:"error"`
}

// dispatch runs one call of fn on the input envelope and returns the output
// envelope. It never panics.
func dispatch[A any, R any](input []byte, fn func(A) (R, error)) (out []byte) {
	args, err := decodeArgs[A](input)
	if err != nil {
		return errorOutput(err.Error())
	}
	defer func() {
		if r := recover(); r != nil {
			out = errorOutput(fmt.Sprintf("tool panicked: %v", r))
		}
	}()
	attached = nil
	res, err := fn(args)
	if err != nil {
		attached = nil
		return errorOutput(err.Error())
	}
	return withFile(okOutput(res))
}

// decodeArgs decodes the input envelope and its args into an A; unknown
// fields of args are refused.
func decodeArgs[A any](input []byte) (A, error) {
	var args A
	var env envelope
	if err := json.Unmarshal(input, &env); err != nil {
		return args, fmt.Errorf("invalid input: %v", err)
	}
	if len(env.Args) > 0 && !bytes.Equal(bytes.TrimSpace(env.Args), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(env.Args))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&args); err != nil {
			return args, fmt.Errorf("invalid arguments: %v", err)
		}
	}
	return args, nil
}

// okOutput encodes {"ok": v}.
func okOutput(v any) []byte {
	// Encode v once, straight into the output, and without escaping <, >
	// and & as json.Marshal does: the host passes the result on as JSON.
	var b bytes.Buffer
	b.WriteString(`{"ok":`)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return errorOutput(fmt.Sprintf("encode result: %v", err))
	}
	out := b.Bytes()
	out[len(out)-1] = '}' // Encode ends with a newline
	return out
}

// errorOutput encodes {"error": msg}. An empty message is replaced so that
// the output always has exactly one field.
func errorOutput(msg string) []byte {
	if msg == "" {
		msg = "tool failed"
	}
	b, err := json.Marshal(errorEnvelope{Error: msg})
	if err != nil {
		// A string always marshals; keep a constant fallback regardless.
		return []byte(`{"error":"tool failed"}`)
	}
	return b
}

// noHandlerOutput is returned by talon_call when no handler was registered.
func noHandlerOutput() []byte {
	return errorOutput("tool has no handler: guest.Run was not called from init")
}
