package slack

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/agent"
)

// The thread a message was sent in is read before it is answered
// (agent.ThreadReader): conversations.replies of that thread only, in
// pages, the messages after the session's cursor and before the message
// itself. The cursor is the ts of the message answered: the next turn
// reads what was posted after it. A pasted link to a message of the same
// conversation adds that message; a link to another channel is not
// followed (the user may not see it, or the bot may read what they cannot).
// Reading needs channels:history, groups:history, im:history or
// mpim:history, as the conversation is.

var _ agent.ThreadReader = (*Adapter)(nil)

// Bounds of a thread read.
const (
	// threadPage is the messages asked for per conversations.replies call
	// (Adapter.threadPage, for tests, when not 0).
	threadPage = 200
	// threadPages bounds the calls of one read; a longer thread is read
	// to that point, and its newest messages kept of what was read.
	threadPages = 25
)

// ReadThread reads the messages of req's Slack thread that the session has
// not seen (see agent.ThreadReader).
func (a *Adapter) ReadThread(ctx context.Context, req agent.ThreadRequest) (agent.ThreadRead, error) {
	if err := a.setup(); err != nil {
		return agent.ThreadRead{}, err
	}
	ts := req.DedupeKey[strings.LastIndexByte(req.DedupeKey, ':')+1:]
	if _, ok := parseTS(ts); !ok {
		// Not a message ts Slack would send: nothing to bound a read by.
		return agent.ThreadRead{}, nil
	}
	channel, thread := req.Key.Conversation.Channel, req.Key.Conversation.Thread
	read := agent.ThreadRead{Cursor: ts}
	if after, ok := parseTS(req.After); ok {
		if now, _ := parseTS(ts); tsLess(now, after) {
			read.Cursor = req.After // never back
		}
	}
	bot := a.botIdentity()
	var raw []slack.Message
	if thread != "" && thread != ts {
		msgs, omitted, err := a.replies(ctx, channel, thread, req.After, ts, req.Limit)
		if err != nil {
			return agent.ThreadRead{}, err
		}
		raw, read.Omitted = msgs, omitted
	}
	link, note := a.linked(ctx, req.Text, channel, raw)
	if note != "" {
		read.Notes = append(read.Notes, note)
	}
	all := raw
	if link != nil {
		all = append(all[:len(all):len(all)], *link)
	}
	named := a.nameAll(ctx, all)
	for _, m := range raw {
		read.Messages = append(read.Messages, a.threadMessage(m, req.Key.Principal.User, bot, named))
	}
	if link != nil {
		m := a.threadMessage(*link, req.Key.Principal.User, bot, named)
		read.Referenced = &m
	}
	return read, nil
}

// replies reads the messages of thread in channel after after ("" for
// all, the parent included) and before before, oldest first: the newest
// limit of them, and how many older ones were left out.
func (a *Adapter) replies(ctx context.Context, channel, thread, after, before string, limit int) ([]slack.Message, int, error) {
	lo, hasLo := parseTS(after)
	hi, _ := parseTS(before)
	var (
		out     []slack.Message
		omitted int
		cursor  string
	)
	size := threadPage
	if a.threadPage > 0 {
		size = a.threadPage
	}
	for page := 0; page < threadPages; page++ {
		msgs, more, next, err := a.api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
			ChannelID: channel, Timestamp: thread, Oldest: after, Latest: before, Cursor: cursor, Limit: size,
		})
		if err != nil {
			return nil, 0, fmt.Errorf("slack: read thread (conversations.replies): %w%s", err, scopeHint(err))
		}
		for _, m := range msgs {
			t, ok := parseTS(m.Timestamp)
			// Slack sends the parent with every page; the bounds are
			// checked here whatever the server did with them.
			if !ok || (hasLo && !tsLess(lo, t)) || !tsLess(t, hi) || !readable(m) {
				continue
			}
			if n := len(out); n > 0 && !tsLess(mustTS(out[n-1].Timestamp), t) {
				continue // a repeat, or out of order
			}
			out = append(out, m)
			if limit > 0 && len(out) > 2*limit {
				omitted += len(out) - limit
				out = append(out[:0], out[len(out)-limit:]...)
			}
		}
		if !more || next == "" {
			break
		}
		cursor = next
	}
	if limit > 0 && len(out) > limit {
		omitted += len(out) - limit
		out = out[len(out)-limit:]
	}
	return out, omitted, nil
}

// readable reports whether m is a message people wrote (or a bot posted),
// not a join or a channel event.
func readable(m slack.Message) bool {
	switch m.SubType {
	case "", "thread_broadcast", "file_share", "bot_message", "me_message":
		return true
	}
	return false
}

// messageLink is a pasted link to a Slack message:
// https://acme.slack.com/archives/C123/p1700000000000100, with
// ?thread_ts=… for a reply in a thread.
var messageLink = regexp.MustCompile(`https://[A-Za-z0-9.-]+\.slack\.com/archives/([A-Z0-9]+)/p([0-9]{10})([0-9]{6})(?:\?[^\s<>|]*?thread_ts=([0-9]{10}\.[0-9]{6}))?`)

// linked returns the message the first pasted message link in text points
// to, when it is in channel and not among have; or a note for the model
// saying why it was not read.
func (a *Adapter) linked(ctx context.Context, text, channel string, have []slack.Message) (*slack.Message, string) {
	m := messageLink.FindStringSubmatch(text)
	if m == nil {
		return nil, ""
	}
	if m[1] != channel {
		return nil, "The user's message links to a message in another conversation; it was not read: only this conversation is."
	}
	ts := m[2] + "." + m[3]
	for _, h := range have {
		if h.Timestamp == ts {
			return nil, ""
		}
	}
	var (
		msgs []slack.Message
		err  error
	)
	if thread := m[4]; thread != "" && thread != ts {
		msgs, _, _, err = a.api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
			ChannelID: channel, Timestamp: thread, Oldest: ts, Latest: ts, Inclusive: true, Limit: 2,
		})
	} else {
		var res *slack.GetConversationHistoryResponse
		res, err = a.api.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{
			ChannelID: channel, Oldest: ts, Latest: ts, Inclusive: true, Limit: 1,
		})
		if res != nil {
			msgs = res.Messages
		}
	}
	if err != nil {
		a.Log.Warn().Err(err).Str("channel_id", channel).Msg("slack: could not read a linked message")
		return nil, "The message the user links to could not be read."
	}
	for _, msg := range msgs {
		if msg.Timestamp == ts && readable(msg) {
			return &msg, ""
		}
	}
	return nil, "The message the user links to was not found (deleted, or not visible to the assistant)."
}

// nameAll looks up the names of the authors of msgs and of the people and
// channels they mention, within the bounds of names.resolve.
func (a *Adapter) nameAll(ctx context.Context, msgs []slack.Message) map[ref]person {
	var refs []ref
	seen := map[ref]bool{}
	add := func(r ref) {
		if r.id != "" && !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	for _, m := range msgs {
		if m.BotID == "" {
			add(ref{'U', m.User})
		}
	}
	for _, m := range msgs {
		for _, r := range unnamedRefs(m.Text, a.botUser) {
			add(r)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	return a.names.resolve(ctx, refs)
}

// threadMessage is m as the agent reads it; user is the session's.
func (a *Adapter) threadMessage(m slack.Message, user string, bot identity, named map[ref]person) agent.ThreadMessage {
	out := agent.ThreadMessage{ID: m.Timestamp, AuthorID: m.User, Own: m.User != "" && m.User == user && m.BotID == ""}
	if t, ok := parseTS(m.Timestamp); ok {
		out.At = time.Unix(t.sec, t.usec*1000).UTC()
	}
	switch {
	case bot.known && ((m.User != "" && m.User == bot.user) || (m.BotID != "" && m.BotID == bot.bot)):
		out.Bot, out.Author = true, "Talon"
	case m.BotID != "" || m.SubType == "bot_message":
		out.Author = m.Username
		if out.Author == "" && m.BotProfile != nil {
			out.Author = m.BotProfile.Name
		}
		out.Author += " (a bot)"
		out.AuthorID = m.BotID
	default:
		if p := named[ref{'U', m.User}]; p.found {
			out.Author = p.name
		}
	}
	out.Text = decodeText(m.Text, a.botUser, func(r ref) string { return named[r].name })
	for _, f := range m.Files {
		name := f.Name
		if name == "" {
			name = f.Title
		}
		typ := f.Mimetype
		if typ == "" {
			typ = f.PrettyType
		}
		out.Files = append(out.Files, agent.ThreadFile{Name: name, Type: typ, Size: int64(f.Size)})
	}
	return out
}

// slackTS is a message ts, "1700000000.000100", as numbers.
type slackTS struct{ sec, usec int64 }

func parseTS(s string) (slackTS, bool) {
	sec, usec, ok := strings.Cut(s, ".")
	if !ok || sec == "" || len(usec) != 6 {
		return slackTS{}, false
	}
	a, err1 := strconv.ParseInt(sec, 10, 64)
	b, err2 := strconv.ParseInt(usec, 10, 64)
	if err1 != nil || err2 != nil || a < 0 || b < 0 {
		return slackTS{}, false
	}
	return slackTS{a, b}, true
}

func mustTS(s string) slackTS {
	t, _ := parseTS(s)
	return t
}

func tsLess(a, b slackTS) bool { return a.sec < b.sec || (a.sec == b.sec && a.usec < b.usec) }

// scopeHint tells the operator which scope a missing_scope error needs.
func scopeHint(err error) string {
	var e slack.SlackErrorResponse
	if errors.As(err, &e) && e.Err == "missing_scope" {
		return "; the bot token needs channels:history, groups:history, im:history and mpim:history (see the manifest; talon doctor names what is missing)"
	}
	return ""
}
