package discord

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// onMessageUpdate passes an edit of a message still waiting for its turn
// to the runtime, so the turn answers what the user meant.
func (a *Adapter) onMessageUpdate(ctx context.Context, m *discordgo.MessageUpdate) {
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
	// Edits are applied in the order of their edited_timestamp, whichever
	// replica writes them when (agent.Amendment.Edited).
	am := agent.Amendment{Text: text}
	if m.EditedTimestamp != nil {
		am.Edited = *m.EditedTimestamp
	}
	changed, err := a.Runtime.Amend(ctx, "discord:"+m.ID, am)
	if err != nil {
		a.Log.Warn().Err(err).Str("message_id", m.ID).Msg("discord: amend edited message")
		return
	}
	if changed {
		a.Log.Info().Str("message_id", m.ID).Msg("discord: queued message edited")
	}
}

// onMessageDelete cancels a deleted message that is still waiting for its
// turn.
func (a *Adapter) onMessageDelete(ctx context.Context, m *discordgo.MessageDelete) {
	if m == nil || m.Message == nil {
		return
	}
	changed, err := a.Runtime.Amend(ctx, "discord:"+m.ID, agent.Amendment{Cancel: true})
	if err != nil {
		a.Log.Warn().Err(err).Str("message_id", m.ID).Msg("discord: cancel deleted message")
		return
	}
	if changed {
		a.Log.Info().Str("message_id", m.ID).Msg("discord: queued message cancelled")
	}
}

// handleMessage decides whether m starts a turn and, if so, persists it
// through Runtime.Accept. It runs in the gateway reader (or the backfill
// goroutine) and does no REST call itself: a refusal notice is sent from a
// goroutine of its own. Once m is handled (accepted, a duplicate, refused
// or not for the bot), its channel's cursor moves past it.
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
	if a.acceptMessage(ctx, m, bot, backfilled) {
		a.noteActivity(m)
	}
}

// acceptMessage is handleMessage past the loop guard. It reports whether m
// is handled for good: false when Accept failed, so that a read back
// tries it again.
func (a *Adapter) acceptMessage(ctx context.Context, m *discordgo.Message, bot string, backfilled bool) bool {
	text := strings.TrimSpace(stripMentions(m.Content, bot))
	files := attachedFiles(m)
	if text == "" && len(files) == 0 {
		// Nothing to answer (or no MESSAGE_CONTENT intent for a follow-up).
		return true
	}
	dm := m.GuildID == ""
	mentioned := dm || mentions(m, bot)
	thread, parent := a.threadOf(m.ChannelID)
	followUp := false
	if !mentioned {
		if !a.cfg.FollowThreads || !thread || !a.follows.Following(ctx, followKey(m.ChannelID, m.Author.ID)) {
			return true
		}
		followUp = true
	}
	log := a.Log.With().Str("message_id", m.ID).Str("channel_id", m.ChannelID).Str("user", m.Author.ID).Logger()

	var roles []string
	if m.Member != nil {
		roles = m.Member.Roles
	}
	if reason := a.cfg.refusal(place{guild: m.GuildID, channel: m.ChannelID, parent: parent, user: m.Author.ID, roles: roles}); reason != "" {
		log.Info().Str("reason", reason).Msg("discord: message refused by the access policy")
		if !backfilled && !followUp {
			a.tellRefusal(m, reason)
		}
		return true
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
			Principal:    principal(m.Author.ID),
			Conversation: agent.Conversation{Channel: conversation},
		},
		Text:       text,
		Files:      files,
		ReplyTo:    replyTo{channel: m.ChannelID, message: m.ID, newThread: newThread}.String(),
		ReceivedAt: a.Now(),
		Server:     m.GuildID,
	}
	if newThread {
		// Before Accept: the turn may start (and need the thread's name)
		// as soon as the message is accepted.
		a.planThread(m.ChannelID, m.ID, text)
	}
	a.noteReference(m)
	if _, err := a.Runtime.Accept(ctx, in); err != nil {
		if errors.Is(err, agent.ErrDuplicate) {
			log.Debug().Bool("backfilled", backfilled).Msg("discord: duplicate message dropped")
			return true
		}
		// Not accepted: its channel's cursor stays before it, and the
		// channel is read back after the next gap (a restart included).
		a.noteMissed(m)
		if errors.Is(err, agent.ErrStopping) {
			log.Info().Msg("discord: message not accepted while Talon stops; it is read back at the next start")
			return false
		}
		log.Error().Err(err).Msg("discord: accept message")
		return false
	}
	if a.cfg.FollowThreads {
		switch {
		case newThread:
			a.follows.Follow(ctx, followKey(m.ID, m.Author.ID))
		case thread && !dm:
			// A mention in a thread starts following it; a follow-up
			// keeps it followed.
			a.follows.Follow(ctx, followKey(m.ChannelID, m.Author.ID))
		}
	}
	log.Info().Bool("dm", dm).Bool("follow_up", followUp).Bool("new_thread", newThread).Bool("backfilled", backfilled).Msg("discord: message accepted")
	return true
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

// ParentChannel returns the channel a conversation in channel belongs to:
// a thread's parent, or channel itself when it is no thread (or one not
// known). Memory uses it so that the threads Talon starts on mentions
// share their channel's memory. Safe for concurrent use.
func (a *Adapter) ParentChannel(channel string) string {
	if thread, parent := a.threadOf(channel); thread && parent != "" {
		return parent
	}
	return channel
}

// tellRefusal tells the sender of m, once per reason, why they were
// refused. The notice never blocks anything: it is sent from a goroutine
// of its own (at most maxRefusals in flight), at most once per
// refusalEvery in a channel, and never waits for or retries a rate-limited
// channel; a notice dropped by these bounds is tried again at the sender's
// next refused message. Whom it told is remembered in bounded memory
// (chat.Refusals).
func (a *Adapter) tellRefusal(m *discordgo.Message, reason string) {
	who := m.Author.ID
	channel, id := m.ChannelID, m.ID
	log := a.Log.With().Str("channel_id", channel).Str("message_id", id).Logger()
	if !a.refusals.Tell(who, reason, channel, a.Now()) {
		log.Debug().Msg("discord: refusal notice not sent: told already, or one was sent in this channel recently")
		return
	}
	select {
	case a.refusalSlots <- struct{}{}:
	default:
		a.refusals.Untold(who, reason)
		log.Debug().Msg("discord: refusal notice dropped: too many in flight")
		return
	}
	a.goBG(func() {
		defer func() { <-a.refusalSlots }()
		endpoint := discordgo.EndpointChannelMessages(channel)
		if a.bucketWaiting(a.runCtx, endpoint) {
			a.refusals.Untold(who, reason)
			log.Info().Msg("discord: refusal notice dropped: the channel is rate limited")
			return
		}
		ctx, cancel := context.WithTimeout(a.runCtx, refusalTimeout)
		defer cancel()
		_, err := a.send(ctx, channel, outgoing{content: "Sorry, " + reason, replyTo: id, nonce: "x" + id}, discordgo.WithRetryOnRatelimit(false))
		if err != nil {
			// Not told after all: a later message tries again.
			a.refusals.Untold(who, reason)
			log.Warn().Err(err).Msg("discord: refusal notice not sent")
		}
	})
}

// Bounds of refusal notices.
const (
	// refusalEvery is the least time between two refusal notices in a
	// channel.
	refusalEvery = 10 * time.Second
	// maxRefusalChannels bounds the channels remembered for refusalEvery.
	maxRefusalChannels = 1000
	// refusalTimeout bounds one notice's REST call.
	refusalTimeout = 10 * time.Second
	// bucketHoldWait is how long a notice waits for a request in flight in
	// its channel before it counts the channel as rate limited.
	bucketHoldWait = time.Second
)

// bucketWaiting reports whether a request on discordgo's rate-limit
// bucket would wait for a reset: the bucket is exhausted until a reset
// ahead, or it stays held longer than a request takes (discordgo sleeps
// holding it when it is exhausted). A request in flight (a reply being
// posted in the same channel) holds it only briefly, so a hold is waited
// out for up to bucketHoldWait before it counts as a rate limit. It runs
// on the notice's own goroutine, so the wait blocks nothing else.
func (a *Adapter) bucketWaiting(ctx context.Context, bucket string) bool {
	rl := a.sess.Ratelimiter
	b := rl.GetBucket(bucket)
	deadline := time.Now().Add(bucketHoldWait)
	for !b.TryLock() {
		if time.Now().After(deadline) || !agent.Sleep(ctx, 10*time.Millisecond) {
			return true
		}
	}
	defer b.Unlock()
	return rl.GetWaitTime(b, 1) > 0
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
