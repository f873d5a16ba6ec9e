// Package memory is what the model remembers for people: a memory per
// user, and a memory per channel that its members share, which the model
// writes and searches with three host-side tools (memory_save,
// memory_search, memory_forget) and people list and prune with /memory.
//
// It owns who may read and change which memory (a user their own; any
// member of a channel that channel's, and only its writers and the admins
// change it), the bounds on what is saved and returned, the refusal of
// anything that looks like a secret before it is saved, and how entries
// are shown to the model: quoted, as material it looked up, never as
// instructions, and tainting the turn when they hold other people's words
// or were saved by a turn that had read untrusted content.
//
// It never stores anything itself (package store keeps the entries and
// their full-text index) and never reaches the network. Memory enters a
// model's context only as a tool result, through the runtime's one context
// builder and its leak checks.
package memory
