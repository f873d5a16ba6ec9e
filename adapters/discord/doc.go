// Package discord is Talon's Discord channel: it holds the gateway
// connection itself (intents set explicitly, every reconnection after a
// capped exponential backoff with jitter and resumed when it can be, fatal
// close codes ending Run with the fix named), reads back the channels
// missed during a gap or while Talon was stopped, turns DMs, mentions and
// thread follow-ups into agent.Inbound messages, and delivers the runtime's
// replies (streamed by edits when configured; a mention in a text channel
// answered in a thread started on it), approval prompts and typing
// indicator back to Discord through discordgo's REST client.
//
// It owns Discord's wire concerns: dedupe of events delivered more than
// once, the loop guard against the bot itself, other bots and webhooks, the
// guild/channel/role/user access policy, splitting under the 2,000-character
// limit with code fences kept balanced (the shared chat.Split, counting
// characters), a reply's parts recorded as they are posted so that a
// restart posts only the others, allowed_mentions that let no reply ping
// anyone, idempotent sends (nonce with enforce_nonce), Approve and Deny
// buttons, the /talon application command (one table defines its
// subcommands and the command hints the runtime writes), interactions
// answered ahead of any other work, and the modal that stores a secret in
// the vault without it ever becoming a message.
//
// It never runs turns, never talks to the model and never reads a secret's
// value back; it never logs message bodies, prompts, tokens or secret values.
// Of Talon's packages it imports only agent.
package discord
