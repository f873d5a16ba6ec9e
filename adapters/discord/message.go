package discord

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

func (a *Adapter) onMessage(_ *discordgo.Session, m *discordgo.MessageCreate) {
	if m == nil || m.Message == nil {
		return
	}
	a.handleMessage(a.runCtx, m.Message, false)
}

// onMessageUpdate passes an edit of a message still waiting for its turn
// to the runtime, so the turn answers what the user meant.
func (a *Adapter) onMessageUpdate(_ *discordgo.Session, m *discordgo.MessageUpdate) {
	if m == nil || m.Message == nil || m.Author == nil || m.Content == "" {
		return
	}
	a.mu.Lock()
	bot := a.botID
	a.mu.Unlock()
	text := strings.TrimSpace(stripMentions(m.Content, bot))
	if text == "" {
		return
	}
	changed, err := a.Runtime.Amend(a.runCtx, "discord:"+m.ID, text, false)
	if err != nil {
		a.Log.Warn().Err(err).Str("message", m.ID).Msg("discord: amend edited message")
		return
	}
	if changed {
		a.Log.Info().Str("message", m.ID).Msg("discord: queued message edited")
	}
}

// onMessageDelete cancels a deleted message that is still waiting for its
// turn.
func (a *Adapter) onMessageDelete(_ *discordgo.Session, m *discordgo.MessageDelete) {
	if m == nil || m.Message == nil {
		return
	}
	changed, err := a.Runtime.Amend(a.runCtx, "discord:"+m.ID, "", true)
	if err != nil {
		a.Log.Warn().Err(err).Str("message", m.ID).Msg("discord: cancel deleted message")
		return
	}
	if changed {
		a.Log.Info().Str("message", m.ID).Msg("discord: queued message cancelled")
	}
}

// handleMessage decides whether m starts a turn and, if so, persists it
// through Runtime.Accept. It runs in the gateway reader (or a backfill
// worker) and does no REST call itself: a refusal notice is handed to a
// worker.
func (a *Adapter) handleMessage(ctx context.Context, m *discordgo.Message, backfilled bool) {
	a.mu.Lock()
	bot := a.botID
	a.mu.Unlock()
	// Loop guard: the bot itself, other bots, webhooks.
	if m.Author == nil || m.Author.ID == "" || m.Author.ID == bot || m.Author.Bot || m.WebhookID != "" {
		return
	}
	if m.Type != discordgo.MessageTypeDefault && m.Type != discordgo.MessageTypeReply {
		return
	}
	a.noteActivity(m)

	text := strings.TrimSpace(stripMentions(m.Content, bot))
	if text == "" {
		// Nothing to answer (or no MESSAGE_CONTENT intent for a follow-up).
		return
	}
	dm := m.GuildID == ""
	mentioned := dm || mentions(m, bot)
	thread, parent := a.threadOf(m.ChannelID)
	followUp := false
	if !mentioned {
		if !a.cfg.FollowThreads || !thread || !a.follows.Following(ctx, followKey(m.GuildID, m.ChannelID, m.Author.ID)) {
			return
		}
		followUp = true
	}
	log := a.Log.With().Str("message", m.ID).Str("channel", m.ChannelID).Str("user", m.Author.ID).Logger()

	var roles []string
	if m.Member != nil {
		roles = m.Member.Roles
	}
	if reason := a.cfg.refusal(place{guild: m.GuildID, channel: m.ChannelID, parent: parent, user: m.Author.ID, roles: roles}); reason != "" {
		log.Info().Str("reason", reason).Msg("discord: message refused by the access policy")
		if !backfilled && !followUp {
			a.tellOnce(m, reason)
		}
		return
	}
	// A mention in a server text channel is answered in a thread started
	// on it, whose id is the message's: the session is the thread's from
	// this first turn on (see thread.go).
	newThread := mentioned && !dm && !thread && a.startsThread(m.GuildID, m.ChannelID)
	conversation := m.ChannelID
	if newThread {
		conversation = m.ID
	}
	in := agent.Inbound{
		DedupeKey: "discord:" + m.ID,
		Key: agent.SessionKey{
			Principal:    agent.Principal{Platform: Platform, Workspace: m.GuildID, User: m.Author.ID},
			Conversation: agent.Conversation{Channel: conversation},
		},
		Text:       text,
		ReplyTo:    replyTo{channel: m.ChannelID, message: m.ID, newThread: newThread}.String(),
		ReceivedAt: a.Now(),
	}
	if newThread {
		// Before Accept: the turn may start (and need the thread's name)
		// as soon as the message is accepted.
		a.planThread(m.ChannelID, m.ID, text)
	}
	if _, err := a.Runtime.Accept(ctx, in); err != nil {
		if errors.Is(err, agent.ErrDuplicate) {
			log.Debug().Msg("discord: duplicate message dropped")
			return
		}
		log.Error().Err(err).Msg("discord: accept message")
		return
	}
	if a.cfg.FollowThreads {
		switch {
		case newThread:
			a.follows.Follow(ctx, followKey(m.GuildID, m.ID, m.Author.ID))
		case thread && !dm:
			// A mention in a thread starts following it; a follow-up
			// keeps it followed.
			a.follows.Follow(ctx, followKey(m.GuildID, m.ChannelID, m.Author.ID))
		}
	}
	log.Info().Bool("dm", dm).Bool("follow_up", followUp).Bool("new_thread", newThread).Bool("backfilled", backfilled).Msg("discord: message accepted")
}

// noteActivity remembers the newest message of a channel, for backfill.
func (a *Adapter) noteActivity(m *discordgo.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	act := a.active[m.ChannelID]
	if act == nil {
		act = &activity{guild: m.GuildID}
		a.active[m.ChannelID] = act
	}
	if snowflakeLess(act.lastID, m.ID) {
		act.lastID = m.ID
	}
	act.at = a.Now()
	// Forget channels idle for longer than the backfill window.
	if len(a.active) > 1000 {
		cutoff := a.Now().Add(-a.cfg.BackfillWindow)
		for ch, x := range a.active {
			if x.at.Before(cutoff) {
				delete(a.active, ch)
			}
		}
	}
}

// snowflakeLess compares two Discord ids numerically ("" is smallest).
func snowflakeLess(x, y string) bool {
	if len(x) != len(y) {
		return len(x) < len(y)
	}
	return x < y
}

// threadOf reports whether channel is a thread, and its parent: one this
// adapter started, or one in the gateway state (threads arrive with
// GUILD_CREATE and THREAD_CREATE).
func (a *Adapter) threadOf(channel string) (bool, string) {
	if parent := a.startedThread(channel); parent != "" {
		return true, parent
	}
	if a.sess == nil || a.sess.State == nil {
		return false, ""
	}
	ch, err := a.sess.State.Channel(channel)
	if err != nil || ch == nil || !ch.IsThread() {
		return false, ""
	}
	return true, ch.ParentID
}

// tellOnce tells the sender of m, once per reason, why they were refused.
func (a *Adapter) tellOnce(m *discordgo.Message, reason string) {
	key := m.Author.ID + "\x00" + reason
	a.mu.Lock()
	told := a.told[key]
	a.told[key] = true
	a.mu.Unlock()
	if told {
		return
	}
	channel, id := m.ChannelID, m.ID
	a.enqueue(func(ctx context.Context) {
		_, err := a.send(ctx, channel, outgoing{content: "Sorry, " + reason, replyTo: id, nonce: "x" + id})
		if err != nil {
			a.Log.Warn().Err(err).Str("channel", channel).Msg("discord: tell refusal")
		}
	})
}

// mentions reports whether m mentions the bot.
func mentions(m *discordgo.Message, bot string) bool {
	if bot == "" {
		return false
	}
	for _, u := range m.Mentions {
		if u != nil && u.ID == bot {
			return true
		}
	}
	return strings.Contains(m.Content, "<@"+bot+">") || strings.Contains(m.Content, "<@!"+bot+">")
}

// lazyRegexp compiles expr on first use, so that a process that never
// serves Discord (talon chat, talon version) does not pay for the patterns
// at start-up.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

var userMention = lazyRegexp(`<@!?([0-9]+)>`)

// stripMentions removes mentions of the bot from text.
func stripMentions(text, bot string) string {
	if bot == "" {
		return text
	}
	return userMention().ReplaceAllStringFunc(text, func(s string) string {
		if userMention().FindStringSubmatch(s)[1] == bot {
			return ""
		}
		return s
	})
}
