// Package vault owns the cryptographic core of Talon's credential vault:
// master-key handling (environment variable or key file, key check value,
// rotation), sealing and opening per-user entries with AES-256-GCM under
// per-entry HKDF-SHA256 keys, host normalisation and matching for the hosts
// an entry is bound to, the Secret type that redacts itself wherever it is
// printed, logged or marshalled, and the vocabulary of audit events.
//
// A sealed entry's additional data binds its format version, owner, name,
// hosts and injection rule, so editing any of those in storage, or moving a
// row to another user, makes Open fail closed.
//
// The package never logs, never performs network or database I/O (callers
// store SealedEntry values themselves), never imports another Talon package,
// and never puts a secret value or key material in an error, a String or a
// marshalled form.
package vault
