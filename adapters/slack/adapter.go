package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/adapters/internal/follow"
	"github.com/talonhq/talon/agent"
)

// Platform is the Principal.Platform of Slack users.
const Platform = "slack"

// Runtime is what the adapter needs from the agent runtime.
type Runtime interface {
	// Accept persists and queues a message; agent.ErrDuplicate means it was
	// accepted before. Only after it returns may the event be acknowledged.
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
	// Decide records a click on an approval button.
	Decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error)
	// Amend applies an edit or deletion to a message whose turn has not
	// started.
	Amend(ctx context.Context, dedupeKey string, a agent.Amendment) (bool, error)
	// Previewed records the message posted to show a streamed answer, so
	// that the reply's delivery edits it, after a restart too.
	Previewed(ctx context.Context, id agent.InboundID, platformID string) error
}

// FollowStore remembers the threads the bot follows for a user (where they
// mentioned it: Config.FollowThreads), so that a restart does not forget
// them; *store.DB implements it.
type FollowStore = follow.Store

// Adapter is the Slack channel. Set the exported fields, then call Run (in
// both modes: it learns the bot's identity, which the loop guard needs, and
// in socket mode holds the connection). In events mode mount EventsHandler
// on the gateway's HTTP listener.
type Adapter struct {
	// Config is validated by Run; start from DefaultConfig.
	Config Config
	// Runtime accepts messages and decides approvals; required.
	Runtime Runtime
	// Secrets is the vault behind "/talon secret add"; nil means secret
	// commands answer that the vault is not configured.
	Secrets agent.Secrets
	// Follows remembers the threads followed across restarts; nil keeps
	// them in memory only, so that after a restart a follow-up needs a new
	// mention.
	Follows FollowStore
	// Log receives operational events, never message bodies, tokens or
	// secret values. The zero Logger discards.
	Log zerolog.Logger
	// HTTPClient calls Slack's Web API; nil means a client with a 30 s
	// timeout.
	HTTPClient *http.Client
	// Now is the clock (signature freshness, dedupe windows, stream pacing);
	// nil means time.Now.
	Now func() time.Time
	// Sleep waits d, or until ctx ends (then reporting false); it paces
	// posts and honours Retry-After. nil means a timer. Tests pair it with
	// Now to run without waiting.
	Sleep func(ctx context.Context, d time.Duration) bool
	// OnState, when set, is told the connection's state as it changes:
	// "connecting", "connected" (Socket Mode), "receiving events over
	// HTTP" (Events API), "reconnecting" with why. It must not block.
	OnState func(state string)

	once    sync.Once
	initErr error
	cfg     Config
	pol     policy
	pace    *chat.Pacer // chat.postMessage calls, per channel
	api     *slack.Client
	events  *chat.Seen     // event_ids already accepted
	refused *chat.Refusals // team:user told why they were refused
	names   *names         // user and channel names, cached
	hc      *http.Client   // the Web API's client, also for response_url
	follows *follow.Set    // threads followed for a user; Follows behind it

	// wasConnected is whether Socket Mode was connected when it next
	// says it is connecting (then it is reconnecting).
	wasConnected atomic.Bool

	ready     chan struct{} // closed when the bot's identity is known
	readyOnce sync.Once
	// threadPage, when not 0, replaces the page size of thread reads
	// (tests); set before Run.
	threadPage int
	botUser    string // written before ready is closed
	botID      string // written before ready is closed

	mu      sync.Mutex
	streams *chat.Streams[stream] // answers being streamed

	bg sync.WaitGroup // background posts (refusals, confirmations); waited by Run
}

var (
	_ agent.Channel       = (*Adapter)(nil)
	_ agent.Streamer      = (*Adapter)(nil)
	_ agent.Asker         = (*Adapter)(nil)
	_ agent.Typer         = (*Adapter)(nil)
	_ agent.CommandSyntax = (*Adapter)(nil)
)

// msgRef names a posted message.
type msgRef struct{ channel, ts string }

const (
	dedupeWindow = 2 * time.Hour
	dedupeMax    = 50000
)

// setup validates the configuration and builds the Web API client. It does
// no I/O, so Deliver works before Run.
func (a *Adapter) setup() error {
	a.once.Do(func() {
		a.ready = make(chan struct{})
		a.events = chat.NewSeen(dedupeMax, dedupeWindow)
		a.refused = chat.NewRefusals(chat.RefusalLimits{})
		a.follows = &follow.Set{Store: a.Follows, Platform: Platform, Quiet: followQuiet, Max: maxFollowed, Now: a.now, Log: a.Log}
		cfg, err := a.Config.withDefaults()
		if err != nil {
			a.initErr = fmt.Errorf("slack: config: %w", err)
			return
		}
		a.cfg = cfg
		a.pol = newPolicy(cfg)
		a.pace = &chat.Pacer{Interval: cfg.PostInterval, Burst: postBurst}
		a.streams = &chat.Streams[stream]{Interval: cfg.StreamInterval}
		hc := a.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 30 * time.Second}
		}
		a.hc = hc
		// slack-go's own logger only writes in debug mode, which stays off
		// (it would print payloads); discard it regardless.
		a.api = slack.New(cfg.BotToken,
			slack.OptionAPIURL(cfg.APIURL),
			slack.OptionHTTPClient(hc),
			slack.OptionAppLevelToken(cfg.AppToken),
			slack.OptionLog(log.New(io.Discard, "", 0)),
		)
		a.names = newNames(a.api, a.now, a.Log)
	})
	return a.initErr
}

func (a *Adapter) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Platform implements agent.Channel.
func (a *Adapter) Platform() string { return Platform }

// Run learns the bot's identity with auth.test, then in socket mode holds a
// supervised Socket Mode connection (reconnecting with capped backoff and
// jitter) and in events mode waits; it returns nil when ctx ends, after its
// background work has finished. A rejected token is an error.
func (a *Adapter) Run(ctx context.Context) error {
	if err := a.setup(); err != nil {
		return err
	}
	if a.Runtime == nil {
		return errors.New("slack: Runtime is required")
	}
	defer a.bg.Wait()
	a.state("connecting")
	if err := a.identify(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if a.cfg.Mode == ModeEvents {
		a.state("receiving events over HTTP")
		<-ctx.Done()
		return nil
	}
	return a.superviseSocket(ctx)
}

func (a *Adapter) state(s string) {
	if a.OnState != nil {
		a.OnState(s)
	}
}

// fatalAuth reports errors that retrying cannot fix.
func fatalAuth(err error) bool {
	var se slack.SlackErrorResponse
	return errors.As(err, &se) && slices.Contains([]string{"invalid_auth", "not_authed", "token_revoked", "account_inactive", "token_expired"}, se.Err)
}

// identify calls auth.test until it succeeds (retrying transient failures).
func (a *Adapter) identify(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		res, err := a.api.AuthTestContext(ctx)
		if err == nil {
			a.readyOnce.Do(func() {
				a.botUser, a.botID = res.UserID, res.BotID
				close(a.ready)
			})
			a.Log.Info().Str("team_id", res.TeamID).Str("bot_user_id", res.UserID).Str("mode", a.cfg.Mode).Msg("slack: connected to the Web API")
			return nil
		}
		if fatalAuth(err) {
			return fmt.Errorf("slack: auth.test: the bot token (slack.bot_token) was rejected: %w", err)
		}
		d := agent.Backoff(attempt, time.Second, time.Minute)
		a.Log.Warn().Err(err).Dur("retry_in", d).Msg("slack: auth.test failed")
		if !agent.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// superviseSocket runs Socket Mode, restarting it with capped backoff and
// jitter whenever the library gives up (invalid auth, repeated dial
// failures), until ctx ends.
func (a *Adapter) superviseSocket(ctx context.Context) error {
	attempt := 0
	for {
		started := time.Now()
		err := a.runSocket(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 2*time.Minute {
			attempt = 0
		}
		d := agent.Backoff(attempt, time.Second, 2*time.Minute)
		attempt++
		a.Log.Warn().Err(err).Dur("retry_in", d).Msg("slack: socket mode stopped; restarting")
		a.wasConnected.Store(false)
		a.state("reconnecting (socket mode stopped; retry in " + d.Round(time.Second).String() + ")")
		if !agent.Sleep(ctx, d) {
			return nil
		}
	}
}

// runSocket holds one socketmode.Client. Its Events are drained at once
// into a bounded queue; Events API messages are handled in order by one
// worker (persist, then ack), interactions and commands each in their own
// goroutine under a bound.
func (a *Adapter) runSocket(ctx context.Context) error {
	client := socketmode.New(a.api,
		socketmode.OptionLog(log.New(io.Discard, "", 0)),
		socketmode.OptionPingInterval(a.cfg.PingInterval),
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan socketmode.Event, 512)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(queue)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-client.Events:
				select {
				case queue <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	wg.Go(func() {
		sem := make(chan struct{}, 8)
		var inter sync.WaitGroup
		defer inter.Wait()
		for ev := range queue {
			if ev.Type == socketmode.EventTypeInteractive || ev.Type == socketmode.EventTypeSlashCommand {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				inter.Go(func() {
					defer func() { <-sem }()
					a.onSocketEvent(ctx, client, ev)
				})
				continue
			}
			a.onSocketEvent(ctx, client, ev)
		}
	})
	err := client.RunContext(ctx)
	cancel()
	wg.Wait()
	return err
}

// onSocketEvent handles one Socket Mode event and acknowledges it when it
// is safe to: after persistence, or at once for what cannot be handled.
func (a *Adapter) onSocketEvent(ctx context.Context, client *socketmode.Client, ev socketmode.Event) {
	ack := func(payload any) {
		if ev.Request == nil {
			return
		}
		if err := client.AckCtx(ctx, ev.Request.EnvelopeID, payload); err != nil && ctx.Err() == nil {
			a.Log.Warn().Err(err).Str("envelope_id", ev.Request.EnvelopeID).Msg("slack: ack failed")
		}
	}
	switch ev.Type {
	case socketmode.EventTypeEventsAPI:
		if ev.Request == nil {
			return
		}
		if err := a.handleCallback(ctx, ev.Request.Payload); err != nil {
			// Not acknowledged: Slack delivers it again.
			if errors.Is(err, agent.ErrStopping) {
				a.Log.Info().Str("envelope_id", ev.Request.EnvelopeID).Msg("slack: event left unacknowledged while Talon stops; Slack delivers it again")
				return
			}
			a.Log.Error().Err(err).Str("envelope_id", ev.Request.EnvelopeID).Msg("slack: event not persisted; leaving it unacknowledged for Slack to retry")
			return
		}
		ack(nil)
	case socketmode.EventTypeInteractive:
		if ev.Request == nil {
			return
		}
		payload := a.handleInteraction(ctx, ev.Request.Payload)
		ack(payload)
	case socketmode.EventTypeSlashCommand:
		cmd, ok := ev.Data.(slack.SlashCommand)
		if !ok || ev.Request == nil {
			ack(nil)
			return
		}
		payload, err := a.handleSlash(ctx, cmd)
		if err != nil {
			a.Log.Error().Err(err).Msg("slack: command not persisted; leaving it unacknowledged")
			return
		}
		ack(payload)
	case socketmode.EventTypeErrorBadMessage:
		// The library attaches no Request to a message it could not
		// parse: find the envelope id ourselves and ack it, or Slack
		// redelivers it forever. The body is not logged.
		bad, _ := ev.Data.(*socketmode.ErrorBadMessage)
		var env struct {
			EnvelopeID string `json:"envelope_id"`
		}
		if bad != nil {
			_ = json.Unmarshal(bad.Message, &env)
		}
		a.Log.Warn().Str("envelope_id", env.EnvelopeID).Msg("slack: malformed socket mode message acknowledged and dropped")
		if env.EnvelopeID != "" {
			if err := client.AckCtx(ctx, env.EnvelopeID, nil); err != nil && ctx.Err() == nil {
				a.Log.Warn().Err(err).Msg("slack: ack failed")
			}
		}
	case socketmode.EventTypeConnecting:
		// The library reconnects by itself (Slack's disconnect, a
		// failed ping) and says only that it is connecting again.
		if a.wasConnected.Swap(false) {
			a.state("reconnecting")
		} else {
			a.state("connecting")
		}
	case socketmode.EventTypeConnected:
		a.Log.Info().Msg("slack: socket mode connected")
		a.wasConnected.Store(true)
		a.state("connected")
	case socketmode.EventTypeConnectionError:
		a.state("reconnecting (connection failed)")
		if ce, ok := ev.Data.(*slack.ConnectionErrorEvent); ok {
			a.Log.Warn().Err(ce.ErrorObj).Dur("retry_in", ce.Backoff).Msg("slack: socket mode connection failed")
		}
	case socketmode.EventTypeInvalidAuth:
		a.Log.Error().Msg("slack: socket mode rejected the app token")
		a.state("reconnecting (the app token was rejected)")
	case socketmode.EventTypeIncomingError, socketmode.EventTypeErrorWriteFailed:
		a.Log.Warn().Str("event_type", string(ev.Type)).Msg("slack: socket mode I/O error")
	}
}

// background runs fn in a goroutine that Run waits for, with its own
// deadline, detached from the event that caused it.
func (a *Adapter) background(fn func(ctx context.Context)) {
	a.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		fn(ctx)
	})
}

// sleep waits d with the injected Sleep, or a timer.
func (a *Adapter) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	if a.Sleep != nil {
		return a.Sleep(ctx, d)
	}
	return agent.Sleep(ctx, d)
}

// waitReady waits until the bot's identity is known.
func (a *Adapter) waitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
