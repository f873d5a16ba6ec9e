// Package leak owns the detection of secrets in text: a user's own secret
// values and their common encodings (raw, standard and URL-safe base64 at
// every alignment, hex, URL escaping, JSON escaping) and well-known token
// formats (OpenAI, Anthropic, AWS, GitHub, Slack, Discord, Google, Stripe,
// PEM private keys, JWTs, long bearer tokens). It reports where secrets are
// and redacts them.
//
// A Detector is built once per user and is safe for concurrent use. Scanning
// is a prefilter (sampled 4-byte probes for user secrets, sampled long-run
// detection for token formats) followed by exact verification at the few
// candidates, so it runs at hundreds of MB/s.
//
// The package never logs, never performs I/O, never imports another Talon
// package, and never returns or prints a secret value: a Finding holds only
// offsets and a kind.
package leak
