// Package chat is what Talon's chat adapters (Slack, Discord) share, so that
// each adapter keeps only what its platform owns: splitting a reply into
// messages under the platform's limit (Split: Slack counts bytes, Discord
// characters), pacing the messages and edits sent to one place (Pacer), the
// answers shown while they are generated (Streams), bounded without ever
// dropping one that is still live, the approval prompt (Prompt: what it
// says, in which order and within which bounds, for each platform to render
// with its own markup and escaping), and the memory of whom a refusal was
// told (Refusals, on the bounded, expiring set Seen).
//
// It does no I/O and never logs: the adapters call the platforms and log.
// It never sees a secret: what it handles is already on its way to a chat
// (an approval's details are redacted by the runtime before they get here).
package chat
