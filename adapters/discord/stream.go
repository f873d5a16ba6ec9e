package discord

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// stream is an answer shown while it is generated (Config.StreamEdits).
// The runtime calls Stream from the turn's goroutine, one delta after the
// other, and Deliver after the turn; mu also keeps a Deliver from running
// during a streamed edit. The adapter's chat.Streams keeps it and paces its
// writes.
type stream struct {
	mu      sync.Mutex // guards the fields below; held during the stream's REST calls
	text    strings.Builder
	channel string // where the streamed message is
	message string // its id; "" until posted
	shown   string // the content it shows
	stopped bool   // a post or edit failed: the preview stops there
}

// Stream implements agent.Streamer. With Config.StreamEdits it posts the
// first words of the answer (in the thread the answer goes to, with the
// same reply reference as the final answer) and then edits that message
// with the text so far at most once per Config.StreamInterval. Deliver
// replaces it with the final answer. Failures only cost the preview. A
// /talon command's answer is not streamed (it is private and deferred).
func (a *Adapter) Stream(ctx context.Context, id agent.InboundID, _ agent.SessionKey, replyToStr string, delta string) {
	if delta == "" {
		return
	}
	if _, err := a.ready(ctx); err != nil || !a.cfg.StreamEdits {
		return
	}
	to, err := parseReplyTo(replyToStr)
	if err != nil || to.interaction != "" {
		return
	}
	now := a.Now()
	st, ok := a.streams.Open(id, now)
	if !ok {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.text.WriteString(delta)
	if st.stopped || !a.streams.Due(id, now) {
		return
	}
	preview := a.preview(st.text.String())
	if preview == "" || preview == st.shown {
		return
	}
	a.streams.Reserve(id, now)
	log := a.Log.With().Int64("inbound", int64(id)).Logger()
	if st.message == "" {
		channel, ref := a.target(ctx, to)
		m, err := a.send(ctx, channel, outgoing{content: preview, replyTo: ref, nonce: nonce("s", int64(id), 0)})
		if err != nil {
			log.Debug().Err(err).Msg("discord: stream preview not posted")
			st.stopped = true
			return
		}
		st.channel, st.message, st.shown = channel, m.ID, preview
		// Recorded at once: after a crash the reply's delivery edits this
		// message instead of leaving it and posting the answer again.
		if err := a.Runtime.Previewed(ctx, id, m.ID); err != nil {
			log.Warn().Err(err).Msg("discord: stream preview not recorded")
		}
		return
	}
	if err := a.edit(ctx, st.channel, st.message, preview); err != nil {
		log.Debug().Err(err).Msg("discord: stream preview not updated")
		st.stopped = true
		return
	}
	st.shown = preview
}

// preview is what a streamed message shows for text: its first message's
// worth, code fences closed, "" when there is nothing to show yet.
func (a *Adapter) preview(text string) string {
	parts := splitMessage(text, a.cfg.MaxMessageChars)
	if len(parts) == 0 {
		return ""
	}
	return parts[0]
}

// edit replaces the content of a message the bot posted; no mention in it
// can ping anyone.
func (a *Adapter) edit(ctx context.Context, channel, message, content string) error {
	_, err := a.sess.ChannelMessageEditComplex(&discordgo.MessageEdit{
		ID: message, Channel: channel, Content: &content, AllowedMentions: noMentions(), Flags: a.embeds(content),
	}, discordgo.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("discord: edit message in %s: %w", channel, err)
	}
	return nil
}
