// Package vault owns Talon's credential vault: master-key handling and its
// life cycle in a data directory (environment variable or key file, key
// check value, crash-safe rotation), sealing and opening per-user entries
// with AES-256-GCM under per-entry HKDF-SHA256 keys, host and port
// normalisation and matching for the hosts an entry is bound to, the Secret
// type that redacts itself wherever it is printed, logged or marshalled, the
// vocabulary of audit events, and the Service a running gateway uses:
// redaction of each user's secrets (with vault/leak, through a per-user
// detector cache), storing and removing entries for chat users, the egress
// broker's credentials and its check of outbound requests.
//
// A sealed entry's additional data binds its format version, owner, name,
// hosts and injection rule, so editing any of those in storage, or moving a
// row to another user, makes Open fail closed; changing an entry's user
// takes re-sealing it with the master key (Vault.RenameUsers).
//
// The package never logs (errors are returned, or handed to
// Service.OnError), keeps its entries only through the Storage interface
// (the store package implements it; no SQL here), never imports a Talon
// package other than vault/leak, and never puts a secret value or key
// material in an error, a String or a marshalled form.
package vault
