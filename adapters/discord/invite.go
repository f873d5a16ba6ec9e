package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bwmarrin/discordgo"
)

// Permissions is what the bot asks for in its invite, and nothing more:
//
//   - View Channels (1<<10): see the channels it is mentioned in.
//   - Send Messages (1<<11): answer.
//   - Create Public Threads (1<<35): answer a mention in a text channel in
//     a thread started on it (Config.Threads); without it the bot answers
//     in the channel.
//   - Send Messages in Threads (1<<38): answer and follow up in threads.
//   - Read Message History (1<<16): reply to a message (message_reference)
//     and read back messages missed during a gateway outage.
//
// Not asked for: Embed Links and Attach Files (replies are plain text,
// long ones split), Create Private Threads and Manage Threads (the bot
// never invites anyone or moderates), Use Application Commands (a member
// permission: /talon works through the applications.commands scope),
// Mention Everyone (no reply may ping anyone).
const Permissions int64 = discordgo.PermissionViewChannel |
	discordgo.PermissionSendMessages |
	discordgo.PermissionCreatePublicThreads |
	discordgo.PermissionSendMessagesInThreads |
	discordgo.PermissionReadMessageHistory

// InviteURL returns the URL that adds the bot to a server with the scopes
// bot and applications.commands and exactly Permissions.
func InviteURL(clientID string) string {
	v := url.Values{}
	v.Set("client_id", clientID)
	v.Set("permissions", strconv.FormatInt(Permissions, 10))
	v.Set("scope", "bot applications.commands")
	return "https://discord.com/oauth2/authorize?" + v.Encode()
}

// Application flags that grant the MESSAGE_CONTENT intent.
const (
	flagGatewayMessageContent        = 1 << 18
	flagGatewayMessageContentLimited = 1 << 19
)

// ApplicationID asks Discord for the application (client) id of the token
// (GET /oauth2/applications/@me). It needs only Config.Token, not Run.
func (a *Adapter) ApplicationID(ctx context.Context) (string, error) {
	app, err := a.application(ctx, nil)
	if err != nil {
		return "", err
	}
	return app.ID, nil
}

func (a *Adapter) application(ctx context.Context, s *discordgo.Session) (*discordgo.Application, error) {
	if s == nil {
		var err error
		if s, err = a.restSession(); err != nil {
			return nil, err
		}
	}
	raw, err := s.RequestWithBucketID("GET", discordgo.EndpointOAuth2Application("@me"), nil, discordgo.EndpointOAuth2Applications, discordgo.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("discord: get application: %w", err)
	}
	var app discordgo.Application
	if err := discordgo.Unmarshal(raw, &app); err != nil {
		return nil, fmt.Errorf("discord: get application: decode: %w", err)
	}
	if app.ID == "" {
		return nil, errors.New("discord: get application: no id in the answer")
	}
	return &app, nil
}

// restSession is a session for REST calls only: the running one, or a new
// one when Run has not started.
func (a *Adapter) restSession() (*discordgo.Session, error) {
	a.init()
	select {
	case <-a.started:
		if a.startErr == nil {
			return a.sess, nil
		}
	default:
	}
	cfg := a.Config
	if cfg.Token == "" {
		return nil, errors.New("discord: config: discord.token: required")
	}
	return a.newSession(cfg)
}

// Report is what `talon doctor` shows about the Discord setup.
type Report struct {
	// TokenValid is true when Discord accepted the token.
	TokenValid bool
	// BotID and BotName identify the bot user of the token.
	BotID, BotName string
	// ApplicationID is the application (client) id, for the invite URL.
	ApplicationID string
	// MessageContentIntent is true when the application may use the
	// privileged MESSAGE_CONTENT intent.
	MessageContentIntent bool
	// Problems lists what would stop the adapter, worded for an operator.
	Problems []string
}

// OK reports whether nothing stops the adapter.
func (r Report) OK() bool { return r.TokenValid && len(r.Problems) == 0 }

// Check asks Discord whether the token is valid (GET /users/@me) and,
// when MessageContent is configured, whether the application has the
// Message Content intent enabled. An error means Discord could not be
// asked at all; a rejected token is a Report with TokenValid false.
func (a *Adapter) Check(ctx context.Context) (Report, error) {
	var r Report
	s, err := a.restSession()
	if err != nil {
		return r, err
	}
	u, err := s.User("@me", discordgo.WithContext(ctx))
	if err != nil {
		var re *discordgo.RESTError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode == http.StatusUnauthorized {
			r.Problems = append(r.Problems, "discord.token: Discord rejected the token (401); copy it again from the Developer Portal (Bot → Reset Token)")
			return r, nil
		}
		return r, fmt.Errorf("discord: check token: %w", err)
	}
	r.TokenValid = true
	r.BotID, r.BotName = u.ID, u.Username
	if !u.Bot {
		r.Problems = append(r.Problems, "discord.token: the token is not a bot token")
	}
	app, err := a.application(ctx, s)
	if err != nil {
		return r, err
	}
	r.ApplicationID = app.ID
	r.MessageContentIntent = app.Flags&(flagGatewayMessageContent|flagGatewayMessageContentLimited) != 0
	if a.Config.MessageContent && !r.MessageContentIntent {
		r.Problems = append(r.Problems, "discord.message_content is true but the Message Content intent is not enabled in the Developer Portal (Bot → Privileged Gateway Intents); the gateway would close with 4014")
	}
	if a.Config.ApplicationID != "" && a.Config.ApplicationID != app.ID {
		r.Problems = append(r.Problems, fmt.Sprintf("discord.application_id %s does not match the token's application %s", a.Config.ApplicationID, app.ID))
	}
	return r, nil
}
