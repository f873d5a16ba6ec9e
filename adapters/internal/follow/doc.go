// Package follow keeps, for a channel adapter, the threads it follows for a
// user: threads where the user mentioned the bot, whose follow-ups start
// turns without a new mention until the thread has been quiet (no message
// of theirs reaching the bot) for a while. The set lives in memory; with a
// Store it is also written there, which is the truth after a restart, and
// the memory is a cache in front of it. It never logs message text.
package follow
