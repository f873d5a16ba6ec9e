// Package postgres is Talon's store on PostgreSQL (github.com/jackc/pgx/v5
// and its pool), for deployments that run several replicas of Talon on one
// database. It implements what the SQLite store in package store
// implements for the runtime, the channel adapters, the vault, the memory,
// the routines, the console and the MCP authorization flow (the
// conformance suite in store/storetest holds both to the same behaviour),
// with its own embedded, versioned migrations (the first 18 numbered as
// SQLite's; later ones in the order features came to PostgreSQL).
//
// Several processes may use one database at once. Every method that
// changes state does so in one transaction; what SQLite's single writer
// made safe is made safe here by the database: unique constraints decide
// which replica accepts a message, records a tool call or creates an
// approval; a row lock (SELECT … FOR UPDATE) serialises the start of a
// turn, the steps of a turn and the rewrite of a vault entry; an update
// that names the state it expects (compare-and-set) finishes a turn,
// decides an approval or marks a reply once; a routine's run is a row
// unique per routine and time, inserted ON CONFLICT DO NOTHING, so one
// replica starts it. The memory's full-text search is a GIN index over a
// tsvector of the words the program finds as SQLite's FTS5 does. Migrations run under an
// advisory lock, so replicas starting together migrate once.
//
// Unlike SQLite's, the schema has no foreign keys on what a turn writes:
// migration 0031 dropped the 14 that the turn's inserts checked (the
// inbound message's principal and turn, a session's principal, a turn's
// session and inbound, a message's session and turn, a step's and a tool
// call's turn, a reply's inbound, turn and principal, a posted part's
// reply, a preview's inbound), each check a lock on the parent row. Those
// parents are never deleted, and each insert names rows the turn has just
// read or written. DB.Orphans checks the same references (the list is
// droppedKeys in integrity.go); the tests fail on any row it reports, and
// Import refuses a source that has one. The keys of approvals, turn
// files, daily usage, routines and time zones stay.
//
// Times are unix milliseconds, as in the SQLite store, and vault entries
// are the vault's sealed bytes. Text PostgreSQL cannot hold (a NUL byte)
// is stored with U+FFFD in its place. It never logs and never puts a
// message body, a reply or a secret in an error; it wraps store.ErrNotFound
// and store.ErrFinished like the SQLite store, so callers branch on one
// sentinel.
package postgres
