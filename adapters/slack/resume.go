package slack

import (
	"context"
	"fmt"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/agent"
)

// Every message of a reply carries Slack message metadata naming what it
// is, so that a delivery resumed after a crash can find the parts posted
// but not recorded: the window between Slack's answer to chat.postMessage
// and the record of the part (agent.Reply.Record). Metadata is visible to
// apps reading the conversation, not to people; it holds Talon's own row
// ids, nothing of the text.
const (
	// metaType is the metadata's event_type.
	metaType = "talon_reply"
	// lookBack is how far before the reply was persisted its parts are
	// looked for (clock skew between Slack and this host).
	lookBack = time.Minute
	// lookupPages bounds the pages of history read per resumed delivery.
	lookupPages = 5
	// lookupLimit is the messages asked for per page.
	lookupLimit = 200
)

// partMetadata marks part n of reply id.
func partMetadata(id agent.ReplyID, n int) slack.MsgOption {
	return slack.MsgOptionMetadata(slack.SlackMetadata{EventType: metaType,
		EventPayload: map[string]any{"reply": int64(id), "part": n}})
}

// previewMetadata marks the message showing the answer to inbound id while
// it is generated.
func previewMetadata(id agent.InboundID) slack.MsgOption {
	return slack.MsgOptionMetadata(slack.SlackMetadata{EventType: metaType,
		EventPayload: map[string]any{"inbound": int64(id), "preview": true}})
}

// findPosted looks in r's thread (or, for a reply outside a thread, in its
// channel) since r was persisted for the bot's messages whose metadata
// names r: the parts found, by number, and the message that previewed its
// answer, if any. A file of r (files: name → part number) is found by its
// name, which holds r's id, in the bot's messages that share files: the
// part found is the file's id. Slack shares an uploaded file
// asynchronously, so a file completed just before a crash may not show yet
// and is then uploaded again. Reading needs the conversation's history scope
// (channels:history, groups:history, im:history, mpim:history); when Slack
// refuses, nothing is found and the delivery goes on (a part posted but
// not recorded is then posted again).
func (a *Adapter) findPosted(ctx context.Context, to replyTo, r agent.Reply, files map[string]int) (parts map[int]string, preview string) {
	parts = map[int]string{}
	oldest := ""
	if !r.CreatedAt.IsZero() {
		t := r.CreatedAt.Add(-lookBack)
		oldest = fmt.Sprintf("%d.%06d", t.Unix(), t.Nanosecond()/1000)
	}
	bot := a.botIdentity()
	cursor := ""
	for page := 0; page < lookupPages; page++ {
		var (
			msgs []slack.Message
			more bool
			err  error
		)
		if to.Thread != "" {
			msgs, more, cursor, err = a.api.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
				ChannelID: to.Channel, Timestamp: to.Thread, Oldest: oldest, Cursor: cursor,
				Limit: lookupLimit, IncludeAllMetadata: true, Inclusive: true,
			})
		} else {
			var res *slack.GetConversationHistoryResponse
			res, err = a.api.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{
				ChannelID: to.Channel, Oldest: oldest, Cursor: cursor,
				Limit: lookupLimit, IncludeAllMetadata: true, Inclusive: true,
			})
			if res != nil {
				msgs, more, cursor = res.Messages, res.HasMore, res.ResponseMetaData.NextCursor
			}
		}
		if err != nil {
			a.Log.Warn().Err(err).Str("channel_id", to.Channel).Int64("reply", int64(r.ID)).
				Msg("slack: could not look for the parts of a resumed reply; a part posted just before a crash may be posted again")
			return parts, preview
		}
		for _, m := range msgs {
			if bot.known && m.BotID != bot.bot && m.User != bot.user {
				continue
			}
			for _, f := range m.Files {
				if n, ok := files[f.Name]; ok && f.ID != "" {
					parts[n] = f.ID
				}
			}
			if m.Metadata.EventType != metaType || (bot.known && m.BotID != bot.bot && m.User != bot.user) {
				continue
			}
			p := m.Metadata.EventPayload
			if id, ok := number(p["reply"]); ok && id == int64(r.ID) {
				if n, ok := number(p["part"]); ok && n >= 0 {
					parts[int(n)] = m.Timestamp
				}
			}
			if id, ok := number(p["inbound"]); ok && r.Inbound != 0 && id == int64(r.Inbound) && p["preview"] == true {
				preview = m.Timestamp
			}
		}
		if !more || cursor == "" {
			break
		}
	}
	if len(parts) > 0 || preview != "" {
		a.Log.Info().Int64("reply", int64(r.ID)).Int("parts_found", len(parts)).Bool("preview_found", preview != "").
			Msg("slack: found parts of a resumed reply already posted")
	}
	return parts, preview
}

// number reads a JSON number of a metadata payload.
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), n == float64(int64(n))
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}

// identity is the bot's identity, when auth.test has told it.
type identity struct {
	known     bool
	user, bot string
}

// botIdentity returns the bot's identity if it is known yet.
func (a *Adapter) botIdentity() identity {
	select {
	case <-a.ready:
		return identity{known: true, user: a.botUser, bot: a.botID}
	default:
		return identity{}
	}
}
