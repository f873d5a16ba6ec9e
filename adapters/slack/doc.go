// Package slack is Talon's Slack channel: it receives messages over Socket
// Mode (the default, no public URL) or the HTTP Events API, turns DMs,
// mentions and thread follow-ups into agent.Inbound messages, and delivers
// the runtime's replies, approval prompts and working status back to Slack.
//
// It owns Slack's wire concerns: signature checks, acknowledgement after
// persistence, dedupe of retried events, the loop guard against the bot's own
// messages, the workspace/channel/user access policy (Slack Connect guests
// included), decoding Slack's wire text into what the user typed (entities,
// links, mentions named through users.info and conversations.info with a
// bounded, expiring cache), mrkdwn rendering escaped exactly once with
// neutralised mentions, splitting under Slack's size limits (the shared
// chat.Split, counting bytes), posting a reply's parts so that a restart
// posts only those not recorded (each carries message metadata naming its
// reply and part, which a resumed delivery looks for in the thread),
// streaming by editing one message (Config.StreamEdits, at most once per
// StreamInterval, recorded so that a restart edits it into the reply),
// pacing posts per channel and Retry-After on 429, the assistant thread
// status while a turn runs, Block Kit approval buttons, the /talon slash
// command (answered through its response_url) and how the runtime's
// commands are typed on Slack (CommandHint), and the modal that stores a
// secret in the vault without it ever becoming a message.
//
// It never runs turns, never talks to the model, never reads a secret's
// value back and never downloads a file; it never logs message bodies,
// prompts, tokens, response_urls or secret values.
// Of Talon's packages it imports only agent.
package slack
