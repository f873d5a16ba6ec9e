// Package terminal is a local channel on standard input and output, for
// development, demos and scripts: one principal (terminal::<user>), one
// conversation, streamed replies.
//
// It never reads a secret from its input into a message: /secret values are
// read without echo by the runtime's secure prompt, not as chat lines.
package terminal
