package discord

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// The thread a message was sent in is read before it is answered
// (agent.ThreadReader): in a thread or forum post, the channel's history
// after the session's cursor and before the message, newest first in pages
// of 100, as many as Limit asks; a reply to a message adds that message.
// The cursor is the id of the message answered. Only the conversation the
// message is in is read (in a DM, only that DM), with Read Message
// History, which the invite asks for.

var _ agent.ThreadReader = (*Adapter)(nil)

// Bounds of a thread read.
const (
	// historyPage is what Discord gives at most per call.
	historyPage = 100
	// historyPages bounds the calls of one read.
	historyPages = 10
)

// ReadThread reads the messages of req's Discord thread that the session
// has not seen (see agent.ThreadReader).
func (a *Adapter) ReadThread(ctx context.Context, req agent.ThreadRequest) (agent.ThreadRead, error) {
	id := strings.TrimPrefix(req.DedupeKey, "discord:")
	to, err := parseReplyTo(req.ReplyTo)
	if !isSnowflake(id) || err != nil || to.interaction != "" || to.message != id || a.sess == nil {
		// A command, or not a message: nothing to bound a read by.
		return agent.ThreadRead{}, nil
	}
	read := agent.ThreadRead{Cursor: id}
	if snowflakeLess(id, req.After) {
		read.Cursor = req.After // never back
	}
	a.mu.Lock()
	bot := a.botID
	a.mu.Unlock()
	var (
		msgs    []*discordgo.Message
		trigger *discordgo.Message
	)
	if thread, _ := a.threadOf(to.channel); thread && !to.newThread {
		var more bool
		msgs, trigger, more, err = a.history(ctx, to.channel, req.After, id, req.Limit)
		if err != nil {
			return agent.ThreadRead{}, err
		}
		if more {
			read.Notes = append(read.Notes, "Older messages of this thread are not shown.")
		}
	}
	if trigger == nil {
		a.mu.Lock()
		ref, known := a.refs[id]
		a.mu.Unlock()
		switch {
		case known && ref == "":
			// Not a reply (seen when it arrived): nothing more to read.
		case known:
			trigger = &discordgo.Message{ID: id, MessageReference: &discordgo.MessageReference{MessageID: ref, ChannelID: to.channel}}
		default:
			// Accepted before a restart: the message itself says what it
			// replies to.
			trigger, err = a.sess.ChannelMessage(to.channel, id, discordgo.WithContext(ctx))
			if err != nil {
				a.Log.Warn().Err(err).Str("channel_id", to.channel).Str("message_id", id).Msg("discord: could not read the message to see what it replies to")
				trigger = nil
			}
		}
	}
	if trigger != nil && trigger.MessageReference != nil && trigger.MessageReference.MessageID != "" {
		ref := trigger.MessageReference
		switch {
		case ref.ChannelID != "" && ref.ChannelID != to.channel:
			read.Notes = append(read.Notes, "The user's message refers to a message in another conversation; it was not read: only this conversation is.")
		case !contains(msgs, ref.MessageID):
			m := trigger.ReferencedMessage
			if m == nil {
				m, err = a.sess.ChannelMessage(to.channel, ref.MessageID, discordgo.WithContext(ctx))
			}
			if err != nil || m == nil {
				read.Notes = append(read.Notes, "The message the user replies to could not be read (deleted, or not visible to the assistant).")
			} else {
				tm := threadMessage(m, req.Key.Principal.User, bot)
				read.Referenced = &tm
			}
		}
	}
	for _, m := range msgs {
		read.Messages = append(read.Messages, threadMessage(m, req.Key.Principal.User, bot))
	}
	return read, nil
}

// maxRefs bounds the replies remembered (refs); past it they are
// forgotten, and a thread read asks Discord instead.
const maxRefs = 10000

// noteReference remembers what m replies to, for ReadThread: a reply in
// the same channel, or "" for none (a forward from another channel is
// named by its channel and refused there).
func (a *Adapter) noteReference(m *discordgo.Message) {
	ref := ""
	if r := m.MessageReference; r != nil && r.MessageID != "" {
		if r.ChannelID != "" && r.ChannelID != m.ChannelID {
			return // not known here: ReadThread reads the message and says why it is not followed
		}
		ref = r.MessageID
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refs == nil || len(a.refs) >= maxRefs {
		a.refs = make(map[string]string)
	}
	a.refs[m.ID] = ref
}

// history reads channel's messages after after ("" for all) and before
// the message before, oldest first: at most limit of them, the newest, and
// whether older ones were left out. The message before itself is returned
// as trigger when Discord gives it (it is read with the others).
func (a *Adapter) history(ctx context.Context, channel, after, before string, limit int) (msgs []*discordgo.Message, trigger *discordgo.Message, more bool, err error) {
	cursor := nextSnowflake(before) // so that the message itself comes too
	for page := 0; page < historyPages; page++ {
		got, err := a.sess.ChannelMessages(channel, historyPage, cursor, "", "", discordgo.WithContext(ctx))
		if err != nil {
			return nil, nil, false, fmt.Errorf("discord: read thread history: %w%s", err, permissionHint(err))
		}
		for _, m := range got { // newest first
			switch {
			case m == nil || !snowflakeLess(m.ID, cursor):
				continue // out of order: Discord never sends it
			case m.ID == before:
				trigger = m
				continue
			case !snowflakeLess(m.ID, before):
				continue
			case after != "" && !snowflakeLess(after, m.ID):
				return reverse(msgs), trigger, false, nil
			case !readableMessage(m):
				continue
			case limit > 0 && len(msgs) >= limit:
				return reverse(msgs), trigger, true, nil
			}
			msgs = append(msgs, m)
		}
		if len(got) < historyPage {
			return reverse(msgs), trigger, false, nil
		}
		cursor = got[len(got)-1].ID
	}
	return reverse(msgs), trigger, true, nil
}

// readableMessage reports whether m is a message someone wrote: not a
// join, pin or other system message.
func readableMessage(m *discordgo.Message) bool {
	return m.Author != nil && (m.Type == discordgo.MessageTypeDefault || m.Type == discordgo.MessageTypeReply)
}

// threadMessage is m as the agent reads it; user is the session's.
func threadMessage(m *discordgo.Message, user, bot string) agent.ThreadMessage {
	out := agent.ThreadMessage{ID: m.ID, At: m.Timestamp}
	if m.Author != nil {
		out.AuthorID = m.Author.ID
		out.Author = m.Author.DisplayName()
		out.Own = m.Author.ID == user
		out.Bot = bot != "" && m.Author.ID == bot
		if m.Author.Bot && !out.Bot {
			out.Author += " (a bot)"
		}
	}
	if m.Member != nil && m.Member.Nick != "" {
		out.Author = m.Member.Nick
	}
	if out.Bot {
		out.Author = "Talon"
	}
	out.Text = strings.TrimSpace(stripMentions(m.Content, bot))
	for _, u := range m.Mentions {
		if u != nil && u.ID != bot {
			name := "@" + u.DisplayName()
			out.Text = strings.NewReplacer("<@"+u.ID+">", name, "<@!"+u.ID+">", name).Replace(out.Text)
		}
	}
	for _, f := range m.Attachments {
		if f != nil {
			out.Files = append(out.Files, agent.ThreadFile{Name: f.Filename, Type: f.ContentType, Size: int64(f.Size)})
		}
	}
	return out
}

func contains(msgs []*discordgo.Message, id string) bool {
	for _, m := range msgs {
		if m.ID == id {
			return true
		}
	}
	return false
}

func reverse(msgs []*discordgo.Message) []*discordgo.Message {
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	return msgs
}

// nextSnowflake is id + 1.
func nextSnowflake(id string) string {
	n, ok := new(big.Int).SetString(id, 10)
	if !ok {
		return id
	}
	return n.Add(n, big.NewInt(1)).String()
}

// permissionHint tells the operator what a refused read needs.
func permissionHint(err error) string {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == 403 {
		return "; the bot needs View Channel and Read Message History there (talon discord invite-url asks for both)"
	}
	return ""
}
