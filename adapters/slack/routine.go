package slack

import (
	"context"
	"errors"
	"fmt"

	"github.com/slack-go/slack"
)

// RoutineTarget returns where a routine of user posts: the top level of
// channel, or, when dm, user's direct messages with the bot (opened with
// conversations.open). It returns the conversation's channel id and the
// ReplyTo of a post there, whose approval prompts go to user's direct
// messages. It fails, saying why, when the configuration does not let
// user talk to the bot in that channel.
func (a *Adapter) RoutineTarget(ctx context.Context, user, channel string, dm bool) (string, string, error) {
	if err := a.setup(); err != nil {
		return "", "", err
	}
	im, err := a.openDM(ctx, user)
	switch {
	case dm && err != nil:
		return "", "", err
	case dm:
		channel = im
	}
	if !reSlackID().MatchString(channel) {
		return "", "", errors.New("this is not a Slack conversation I can post in")
	}
	if reason := a.pol.check(channel, user); reason != "" {
		return "", "", errors.New(reason)
	}
	to := replyTo{Channel: channel}
	if im != channel {
		// Without a DM (it could not be opened) the prompt is posted in
		// the channel, its buttons for user alone.
		to.Approvals = im
	}
	return channel, to.encode(), nil
}

// openDM returns the id of user's direct messages with the bot.
func (a *Adapter) openDM(ctx context.Context, user string) (string, error) {
	ch, _, _, err := a.api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{user}})
	if err != nil {
		return "", fmt.Errorf("slack: open a direct message with %s: %w", user, err)
	}
	if ch == nil || !reSlackID().MatchString(ch.ID) {
		return "", errors.New("slack: conversations.open returned no conversation")
	}
	return ch.ID, nil
}

// ChannelReplyTo is the ReplyTo of a post at the top level of channel.
func ChannelReplyTo(channel string) string { return replyTo{Channel: channel}.encode() }

// RoutineCheck says why a routine of user can no longer post in channel:
// the conversation is archived or gone, the user is deactivated, or the
// configuration no longer lets them talk there. It returns nil when it
// may, or when Slack could not be asked (the post will tell).
func (a *Adapter) RoutineCheck(ctx context.Context, user, channel string) error {
	if err := a.setup(); err != nil {
		return err
	}
	if reason := a.pol.check(channel, user); reason != "" {
		return errors.New(reason)
	}
	u, err := a.api.GetUserInfoContext(ctx, user)
	var se slack.SlackErrorResponse
	switch {
	case errors.As(err, &se) && se.Err == "user_not_found":
		return errors.New("its owner's Slack account is gone")
	case err == nil && u.Deleted:
		return errors.New("its owner's Slack account is deactivated")
	}
	c, err := a.api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: channel})
	switch {
	case errors.As(err, &se) && se.Err == "channel_not_found":
		return errors.New("its channel is gone, or the bot was removed from it")
	case err == nil && c.IsArchived:
		return errors.New("its channel is archived")
	}
	return nil
}

// UserZone returns user's time zone as their Slack profile has it (users.info
// tz, an IANA name), "" when it has none.
func (a *Adapter) UserZone(ctx context.Context, user string) (string, error) {
	if err := a.setup(); err != nil {
		return "", err
	}
	u, err := a.api.GetUserInfoContext(ctx, user)
	if err != nil {
		return "", fmt.Errorf("slack: users.info: %w", err)
	}
	return u.TZ, nil
}
