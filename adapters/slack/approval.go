package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/agent"
)

// Block Kit ids of the approval prompt.
const (
	actionApprove   = "talon_approve"
	actionDeny      = "talon_deny"
	approvalBlockID = "talon_approval:" // followed by the owner's user id
)

var reSlackID = lazyRegexp(`^[A-Z0-9]{2,32}$`)

// mention renders a Slack user id as a mention, or "" for anything that is
// not an id.
func mention(user string) string {
	if !reSlackID().MatchString(user) {
		return ""
	}
	return "<@" + user + ">"
}

// approvalMarkup is how Slack writes an approval prompt: mrkdwn, escaped
// everywhere (inside code too), within a section block's 3,000
// characters.
var approvalMarkup = chat.Markup{
	Bold:    func(s string) string { return "*" + s + "*" },
	Mention: mention,
	Time:    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") },
	Escape:  escape,
	Limit:   2900,
}

// String is the message's reference as agent.ApprovalPrompt.Message
// keeps it: "channel/ts".
func (r msgRef) String() string { return r.channel + "/" + r.ts }

func parseMsgRef(s string) (msgRef, bool) {
	channel, ts, ok := strings.Cut(s, "/")
	if !ok || !reSlackID().MatchString(channel) || ts == "" {
		return msgRef{}, false
	}
	return msgRef{channel: channel, ts: ts}, true
}

// AskApproval implements agent.Asker: it posts the prompt in the session's
// thread with Approve and Deny buttons whose value is the approval id, and
// returns the message. A prompt posted before (p.Message, by a process
// since restarted) is shown again in that message, with live buttons; a
// new one is posted only when that message is gone.
func (a *Adapter) AskApproval(ctx context.Context, p agent.ApprovalPrompt) (string, error) {
	if err := a.setup(); err != nil {
		return "", err
	}
	owner := p.Key.Principal.User
	id := strconv.FormatInt(int64(p.ID), 10)
	text := chat.PromptOf(p).Ask(approvalMarkup)
	blocks := []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil),
		slack.NewActionBlock(approvalBlockID+owner,
			slack.NewButtonBlockElement(actionApprove, id, slack.NewTextBlockObject(slack.PlainTextType, "Approve", false, false)).WithStyle(slack.StylePrimary),
			slack.NewButtonBlockElement(actionDeny, id, slack.NewTextBlockObject(slack.PlainTextType, "Deny", false, false)).WithStyle(slack.StyleDanger),
		),
	}
	if ref, ok := parseMsgRef(p.Message); ok {
		err := a.update(ctx, ref, text, blocks)
		if err == nil {
			return p.Message, nil
		}
		if !messageGone(err) {
			// The message is still there with its buttons, which still
			// decide: showing it again failed, asking did not.
			a.Log.Warn().Err(err).Int64("approval_id", int64(p.ID)).Str("channel_id", ref.channel).Msg("slack: could not refresh the approval prompt; its buttons still work")
			return p.Message, nil
		}
		a.Log.Info().Int64("approval_id", int64(p.ID)).Str("channel_id", ref.channel).Msg("slack: the approval prompt's message is gone; posting it again")
	}
	to, err := decodeReplyTo(p.ReplyTo)
	if err != nil {
		return "", err
	}
	channel, thread := to.Channel, to.Thread
	if to.Approvals != "" {
		channel, thread = to.Approvals, ""
	}
	ts, err := a.post(ctx, channel, thread, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...), noUnfurl())
	if err != nil {
		return "", fmt.Errorf("slack: post approval %d: %w", p.ID, err)
	}
	return msgRef{channel: channel, ts: ts}.String(), nil
}

// update replaces the text and blocks of ref.
func (a *Adapter) update(ctx context.Context, ref msgRef, text string, blocks []slack.Block) error {
	return a.retry429(ctx, func() error {
		_, _, _, err := a.api.UpdateMessageContext(ctx, ref.channel, ref.ts, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...), noUnfurl())
		return err
	})
}

// messageGone reports whether err says the message to update no longer
// exists (deleted, or its channel is gone or closed to the bot).
func messageGone(err error) bool {
	var e slack.SlackErrorResponse
	if !errors.As(err, &e) {
		return false
	}
	switch e.Err {
	case "message_not_found", "channel_not_found", "cant_update_message", "is_archived", "not_in_channel":
		return true
	}
	return false
}

// ApprovalDone implements agent.Asker: it replaces the prompt's buttons
// with the outcome.
func (a *Adapter) ApprovalDone(ctx context.Context, p agent.ApprovalPrompt, state agent.ApprovalState, by agent.Principal) error {
	if err := a.setup(); err != nil {
		return err
	}
	ref, ok := parseMsgRef(p.Message)
	if !ok {
		a.Log.Debug().Int64("approval_id", int64(p.ID)).Msg("slack: approval message unknown; outcome not shown")
		return nil
	}
	text := chat.PromptOf(p).Done(approvalMarkup, state, by.User)
	err := a.update(ctx, ref, text, []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil)})
	if err != nil {
		return fmt.Errorf("slack: show outcome of approval %d: %w", p.ID, err)
	}
	return nil
}

// handleInteraction handles a block_actions or view_submission payload and
// returns what to acknowledge it with (nil for an empty ack).
func (a *Adapter) handleInteraction(ctx context.Context, raw []byte) any {
	var cb slack.InteractionCallback
	if err := json.Unmarshal(raw, &cb); err != nil {
		a.Log.Warn().Msg("slack: malformed interaction payload dropped")
		return nil
	}
	team := cb.Team.ID
	if team == "" {
		team = cb.User.TeamID
	}
	by := a.principalOf(team, cb.Enterprise.ID, cb.User.TeamID, cb.User.ID)
	// Slack delivers only what happens where the app is installed: a click
	// or a form from a workspace that is not served, or by a user whose own
	// workspace is not (a Slack Connect guest), is refused politely. A
	// served guest's payload may name the guest's own workspace as its team.
	ext, err := !a.pol.teamAllowed(team, cb.Enterprise.ID), error(nil)
	if ext && a.cfg.AllowExternalUsers && cb.User.TeamID == team {
		ext = false
	}
	if !ext {
		ext, err = a.external(ctx, cb.User.TeamID, team, cb.Enterprise.ID, cb.User.ID)
	}
	if ext || err != nil {
		a.Log.Info().Str("team_id", team).Str("user_id", cb.User.ID).Bool("unverified", err != nil).Msg("slack: interaction from outside the served workspaces refused")
		tell := "Sorry, " + reasonExternal
		if err != nil {
			tell = "Sorry, I could not check your workspace just now. Please try again in a minute."
		}
		switch cb.Type {
		case slack.InteractionTypeViewSubmission:
			return slack.NewErrorsViewSubmissionResponse(map[string]string{blockName: tell})
		case slack.InteractionTypeBlockActions:
			channel := cb.Container.ChannelID
			if channel == "" {
				channel = cb.Channel.ID
			}
			if channel != "" && (err != nil || a.refused.Tell(cb.User.TeamID+":"+cb.User.ID, reasonExternal, channel, a.now())) {
				a.background(func(ctx context.Context) {
					if err := a.ephemeral(ctx, channel, cb.Container.ThreadTs, cb.User.ID, tell); err != nil {
						a.Log.Warn().Err(err).Str("channel_id", channel).Msg("slack: could not tell a refused user why")
					}
				})
			}
		}
		return nil
	}
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		for _, act := range cb.ActionCallback.BlockActions {
			if act.ActionID == actionApprove || act.ActionID == actionDeny {
				a.onApprovalClick(ctx, cb, act, by)
			}
		}
	case slack.InteractionTypeViewSubmission:
		if cb.View.CallbackID == secretModalID {
			return a.onSecretSubmit(ctx, cb, by)
		}
	}
	return nil
}

// onApprovalClick records a click on Approve or Deny.
func (a *Adapter) onApprovalClick(ctx context.Context, cb slack.InteractionCallback, act *slack.BlockAction, by agent.Principal) {
	n, err := strconv.ParseInt(act.Value, 10, 64)
	if err != nil {
		a.Log.Warn().Msg("slack: approval button with a malformed value")
		return
	}
	id := agent.ApprovalID(n)
	channel := cb.Container.ChannelID
	if channel == "" {
		channel = cb.Channel.ID
	}
	thread := cb.Container.ThreadTs
	_, err = a.Runtime.Decide(ctx, id, by, act.ActionID == actionApprove)
	var tell string
	switch {
	case err == nil:
		// The runtime calls ApprovalDone, which replaces the buttons.
		a.Log.Info().Int64("approval_id", n).Str("user_id", by.User).Str("action", act.ActionID).Msg("slack: approval decided")
		return
	case errors.Is(err, agent.ErrDecided):
		return // a double click or a late one: nothing changes
	case errors.Is(err, agent.ErrNotOwner):
		owner := mention(strings.TrimPrefix(act.BlockID, approvalBlockID))
		if owner == "" {
			owner = "the person who started this conversation"
		}
		tell = "Only " + owner + " can decide this."
	case errors.Is(err, agent.ErrUnknownApproval):
		tell = "This approval is no longer pending."
	default:
		ref := agent.NewRef()
		a.Log.Error().Err(err).Str("ref", ref).Int64("approval_id", n).Msg("slack: decide approval")
		tell = "Sorry, your answer could not be recorded (reference " + ref + "). Please try again."
	}
	if channel == "" {
		return
	}
	a.background(func(ctx context.Context) {
		if _, err := a.postEphemeral(ctx, channel, thread, by.User, tell); err != nil {
			a.Log.Warn().Err(err).Msg("slack: could not answer an approval click")
		}
	})
}
