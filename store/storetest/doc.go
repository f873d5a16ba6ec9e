// Package storetest is the conformance suite of Talon's stores: one set of
// tests, run against every implementation (the SQLite store in package
// store, the PostgreSQL store in store/postgres), so that their behaviour
// cannot drift. It tests what the runtime, the channel adapters and the
// vault rely on, through the interfaces they use: the inbox (accept and
// dedupe, pending order, starting and resuming turns, steps and tool calls,
// finishing a turn with its reply), history and sessions, the outbox and
// its delivered parts, approvals, followed threads and channel cursors,
// thread cursors, a turn's files, the usage meter, and the vault's sealed
// entries and audit log; and that two stores open on the same data (two
// replicas) accept, start and decide each thing once.
//
// It never opens a database itself: each implementation's test hands Run a
// Harness that does. Implementation details (migrations of old files, a
// writer's internals, query plans) are tested beside the implementation.
package storetest
