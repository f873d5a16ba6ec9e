package discord

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"
)

// A mention in a server text channel (with Config.Threads) is answered in a
// public thread started on the mentioning message. Discord gives such a
// thread the id of the message it starts on, so the turn's session is keyed
// by that id (Conversation.Channel) from the start, before the thread
// exists: the mention and every follow-up in the thread share one session,
// and handling the gateway event needs no REST call. The thread is created
// on first use by the turn's output (the typing indicator, a streamed
// answer, an approval prompt or the reply), once; "already created"
// (after a restart, or a thread someone else started on the message)
// counts as created.

// threadStart is a thread to start on a message.
type threadStart struct {
	parent string // the channel of the message
	name   string

	mu     sync.Mutex  // serialises the creation; guards failed
	failed bool        // Discord refused it for good: answer in the parent
	done   atomic.Bool // the thread exists (read without mu by the gateway reader)
}

// threadArchiveMinutes is how long a quiet thread stays in the channel
// list (24 h, available on every server).
const threadArchiveMinutes = 1440

// maxThreadStarts bounds the threads remembered; the oldest is dropped
// first (one that is forgotten is simply created again, which Discord
// answers with "already created"). A variable for tests.
var maxThreadStarts = 10000

// planThread remembers that the answer to message in parent goes in a new
// thread named after text.
func (a *Adapter) planThread(parent, message, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.threads[message]; ok {
		return
	}
	a.rememberThread(message, &threadStart{parent: parent, name: threadName(text)})
}

// rememberThread adds ts under message, dropping the oldest threads past
// maxThreadStarts: the threads of recent mentions, whose answers are being
// written, stay known (clearing them all made a follow-up in a thread
// being answered look like a message in an unknown channel). Call with
// a.mu held.
func (a *Adapter) rememberThread(message string, ts *threadStart) {
	for len(a.threads) >= maxThreadStarts && len(a.threadOrder) > 0 {
		delete(a.threads, a.threadOrder[0])
		a.threadOrder[0] = ""
		a.threadOrder = a.threadOrder[1:]
	}
	if len(a.threadOrder) == cap(a.threadOrder) && len(a.threadOrder) > 0 {
		// Compact before append grows it, so the dropped prefix is freed.
		a.threadOrder = append(make([]string, 0, 2*len(a.threadOrder)), a.threadOrder...)
	}
	a.threads[message] = ts
	a.threadOrder = append(a.threadOrder, message)
}

// target resolves where output for to goes: the channel and the message
// to reply to ("" for none). For a new thread it starts the thread if
// needed, and falls back to the parent channel when that is impossible.
func (a *Adapter) target(ctx context.Context, to replyTo) (channel, ref string) {
	if !to.newThread {
		return to.channel, to.message
	}
	if a.ensureThread(ctx, to.channel, to.message) {
		return to.message, ""
	}
	return to.channel, to.message
}

// ensureThread starts the thread on message in parent unless it exists,
// and reports whether it does.
func (a *Adapter) ensureThread(ctx context.Context, parent, message string) bool {
	a.mu.Lock()
	ts := a.threads[message]
	if ts == nil {
		// Not planned in this process (a restart): the name is not known.
		ts = &threadStart{parent: parent, name: "Talon"}
		a.rememberThread(message, ts)
	}
	a.mu.Unlock()

	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.done.Load() || ts.failed {
		return ts.done.Load()
	}
	log := a.Log.With().Str("channel_id", parent).Str("message_id", message).Logger()
	_, err := a.sess.MessageThreadStartComplex(parent, message, &discordgo.ThreadStart{
		Name: ts.name, AutoArchiveDuration: threadArchiveMinutes,
	}, discordgo.WithContext(ctx))
	var re *discordgo.RESTError
	switch {
	case err == nil:
		log.Info().Msg("discord: thread started")
	case errors.As(err, &re) && re.Message != nil && re.Message.Code == discordgo.ErrCodeThreadAlreadyCreatedForThisMessage:
		log.Debug().Msg("discord: thread already started")
	case errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500:
		// Missing Create Public Threads, a channel that has no threads, a
		// deleted message: answer in the channel from now on.
		ts.failed = true
		log.Warn().Err(err).Int("status", re.Response.StatusCode).
			Msg("discord: could not start a thread; answering in the channel (grant Create Public Threads, or set discord.threads: false)")
		return false
	default:
		// Transient (or the turn ended): this output goes to the channel,
		// the next one tries again.
		log.Warn().Err(err).Msg("discord: could not start a thread")
		return false
	}
	ts.done.Store(true)
	return true
}

// startedThread returns the parent of channel when it is a thread this
// adapter started (or found started), else "".
func (a *Adapter) startedThread(channel string) string {
	a.mu.Lock()
	ts := a.threads[channel]
	a.mu.Unlock()
	if ts == nil || !ts.done.Load() {
		return ""
	}
	return ts.parent
}

// startsThread reports whether a mention in channel gets a thread: a
// server text or announcement channel known from the gateway state (so not
// a thread, a DM, a voice channel's chat, or a channel not seen yet).
func (a *Adapter) startsThread(guild, channel string) bool {
	if !a.cfg.Threads || guild == "" || a.sess == nil || a.sess.State == nil {
		return false
	}
	ch, err := a.sess.State.Channel(channel)
	if err != nil || ch == nil {
		return false
	}
	return ch.Type == discordgo.ChannelTypeGuildText || ch.Type == discordgo.ChannelTypeGuildNews
}

// Thread names: at most 100 characters for Discord; kept short.
const maxThreadName = 60

var discordMarkup = lazyRegexp(`<(?:@[!&]?|#)[0-9]+>|<a?:[A-Za-z0-9_]+:[0-9]+>`)

// threadName is the first words of text (mentions and custom emoji
// removed), or "Talon" when none are left.
func threadName(text string) string {
	words := strings.Fields(discordMarkup().ReplaceAllString(text, " "))
	var b strings.Builder
	for i, w := range words {
		n := utf8.RuneCountInString(b.String())
		if n+1+utf8.RuneCountInString(w) > maxThreadName {
			if i == 0 {
				r := []rune(w)
				b.WriteString(string(r[:maxThreadName-1]))
			}
			b.WriteString("…")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	if b.Len() == 0 {
		return "Talon"
	}
	return b.String()
}

// isStatus reports whether err is a REST error with HTTP status code.
func isStatus(err error, code int) bool {
	var re *discordgo.RESTError
	return errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == code
}
