// Package routines owns work that runs on a schedule: routines people make
// in chat (through the routine_* tools the model calls, or /routine add)
// or the operator makes with talon routine, and one-off reminders.
//
// A routine's run is an ordinary turn of its owner: the scheduler records
// the run (unique per routine and scheduled time: no run ever happens
// twice) before it hands the runtime an inbound message of the routine's
// own session, with the owner's principal, so that the turn has the
// owner's tools, credentials, grants and budget, never more. The reply
// goes where the routine was made, or to the owner's direct messages.
// Schedules are cron expressions read in the owner's time zone (parsed
// with robfig/cron), intervals, or one moment. A run missed while the
// gateway was down starts at start-up if it is younger than CatchUp, else
// it is recorded missed. A routine whose runs fail MaxFailures times in a
// row, or whose destination refuses the bot, pauses, and its owner is
// told why.
//
// It never talks to a platform itself (its Router does), never calls a
// model or a tool, and keeps nothing in memory that a restart would lose.
package routines
