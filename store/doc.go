// Package store owns Talon's persistence on SQLite (modernc.org/sqlite, pure
// Go): the schema and its embedded, ordered migrations, and the
// implementation of agent.Store (the inbox of accepted messages, session
// history, turns, tool calls and the outbox of replies), the threads the
// channel adapters follow, which a restart must not forget, and
// vault.Storage (VaultStorage: the credential vault's sealed entries, key
// check and audit log, in the vault's own types; it never sees a value in
// clear).
//
// A DB has one writer connection, used for every write, and a separate pool
// of read-only connections; the file is in WAL mode so readers never block
// the writer. Write transactions that arrive together share one commit
// (group commit), and a goroutine of the DB checkpoints the log on a
// connection of its own, so the writer never stops for a checkpoint's copy
// and fsyncs. Every method that changes state does so in one transaction.
// Times are stored as unix milliseconds.
//
// It never decides what a turn does, never talks to a platform or a model,
// and never logs: it returns wrapped errors, with ErrNotFound and
// ErrFinished for the conditions a caller branches on. Message bodies and
// reply texts are stored, never put in error strings.
package store
