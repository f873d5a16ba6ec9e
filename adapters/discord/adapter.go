package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/adapters/internal/follow"
	"github.com/talonhq/talon/agent"
)

// Runtime is what the adapter needs from the agent runtime (*agent.Runtime
// implements it).
type Runtime interface {
	// Accept persists an inbound message before anything else happens to
	// it; agent.ErrDuplicate means it was seen before.
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
	// Decide records an approval click by its clicker.
	Decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error)
	// Amend changes or cancels a message whose turn has not started.
	Amend(ctx context.Context, dedupeKey, text string, cancel bool) (bool, error)
}

// FollowStore remembers the threads the bot follows for a user (where they
// mentioned it: Config.FollowThreads), so that a restart does not forget
// them; *store.DB implements it.
type FollowStore = follow.Store

// Platform is the Principal.Platform of Discord users.
const Platform = "discord"

// Adapter is the Discord channel. Set the fields, register it with the
// runtime, then call Run. Deliver, AskApproval and the other channel
// methods wait until Run has started.
type Adapter struct {
	// Config is validated in Run; start from DefaultConfig.
	Config Config
	// Runtime receives messages and approval decisions; required.
	Runtime Runtime
	// Secrets stores what a user enters in the /talon secret-add modal; nil
	// means the vault is not configured and users are told so.
	Secrets agent.Secrets
	// Follows remembers the threads followed across restarts; nil keeps
	// them in memory only, so that after a restart a follow-up needs a new
	// mention.
	Follows FollowStore
	// Log receives operational events: ids and outcomes, never message
	// bodies, tokens or secret values.
	Log zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HTTPClient makes the REST calls; nil means a client with a 20 s
	// timeout.
	HTTPClient *http.Client
	// APIBase, when set (tests: "http://127.0.0.1:PORT"), receives every
	// REST request meant for https://discord.com. The gateway URL comes
	// from GET /gateway, so a fake that answers it serves the socket too.
	APIBase string

	once    sync.Once
	started chan struct{} // closed when Run has built the session (or failed to)

	// Set before started is closed, read-only after.
	cfg      Config
	sess     *discordgo.Session
	startErr error
	runCtx   context.Context
	work     chan func(context.Context)

	mu           sync.Mutex
	botID        string                      // guarded by mu
	appID        string                      // guarded by mu
	commandsDone bool                        // guarded by mu
	sawReady     bool                        // a READY arrived in this Run; guarded by mu
	disconnected bool                        // a reconnect is pending backfill; guarded by mu
	active       map[string]*activity        // channel id → recent activity; guarded by mu
	told         map[string]bool             // refusals told, by user and reason; guarded by mu
	interactions map[string]interactionToken // deferred /talon commands, by interaction id; guarded by mu
	approvals    map[agent.ApprovalID]msgRef // approval prompts posted; guarded by mu
	threads      map[string]*threadStart     // threads to start, by message id; guarded by mu
	streams      map[agent.InboundID]*stream // answers being streamed; guarded by mu
	lost         chan struct{}               // signalled on Disconnect (capacity 1)

	follows *follow.Set // threads followed for a user; Follows behind it
}

type activity struct {
	guild  string
	lastID string // newest message id seen in the channel
	at     time.Time
}

type interactionToken struct {
	appID, token string
	expires      time.Time
}

type msgRef struct{ channel, message string }

var (
	_ agent.Channel  = (*Adapter)(nil)
	_ agent.Asker    = (*Adapter)(nil)
	_ agent.Typer    = (*Adapter)(nil)
	_ agent.Streamer = (*Adapter)(nil)
)

// Platform returns "discord".
func (a *Adapter) Platform() string { return Platform }

func (a *Adapter) init() {
	a.once.Do(func() {
		a.started = make(chan struct{})
		a.lost = make(chan struct{}, 1)
		a.active = make(map[string]*activity)
		a.told = make(map[string]bool)
		a.interactions = make(map[string]interactionToken)
		a.approvals = make(map[agent.ApprovalID]msgRef)
		a.threads = make(map[string]*threadStart)
		a.streams = make(map[agent.InboundID]*stream)
		if a.Now == nil {
			a.Now = time.Now
		}
		a.follows = &follow.Set{Store: a.Follows, Platform: Platform, Quiet: followQuiet, Max: maxFollowed, Now: a.Now, Log: a.Log}
	})
}

// intents returns the gateway intents: guilds, guild messages and direct
// messages, plus message content only when configured.
func (c Config) intents() discordgo.Intent {
	i := discordgo.IntentsGuilds | discordgo.IntentsGuildMessages | discordgo.IntentsDirectMessages
	if c.MessageContent {
		i |= discordgo.IntentsMessageContent
	}
	return i
}

// newSession builds a discordgo session for cfg whose REST calls go
// through the adapter's client (and to APIBase when set).
func (a *Adapter) newSession(cfg Config) (*discordgo.Session, error) {
	s, err := discordgo.New(cfg.botToken())
	if err != nil {
		return nil, fmt.Errorf("discord: new session: %w", err)
	}
	client := a.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 20 * time.Second}
	}
	if a.APIBase != "" {
		base, err := url.Parse(a.APIBase)
		if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
			return nil, fmt.Errorf("discord: api base %q: want an http(s) URL", a.APIBase)
		}
		c := *client
		next := c.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		c.Transport = rewriteHost{scheme: base.Scheme, host: base.Host, next: next}
		client = &c
	}
	s.Client = client
	s.Identify.Intents = cfg.intents()
	// Handlers run in the gateway's reader, in order; they only persist
	// (a fast database write) and hand REST work to the adapter's workers.
	s.SyncEvents = true
	// The adapter supervises reconnection itself, so that it owns every
	// attempt and can stop them.
	s.ShouldReconnectOnError = false
	s.ShouldReconnectVoiceOnSessionError = false
	s.LogLevel = discordgo.LogError
	return s, nil
}

// rewriteHost sends requests for discord.com to another host (tests).
type rewriteHost struct {
	scheme, host string
	next         http.RoundTripper
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == "discord.com" {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host, req.Host = r.scheme, r.host, ""
	}
	return r.next.RoundTrip(req)
}

// workers is the number of goroutines doing REST work for events
// (interaction answers, refusals, backfill, command registration).
const workers = 4

// Run opens the gateway session and serves until ctx ends, reconnecting
// (with RESUME when the session is still valid) after every disconnect.
// It returns an error when the configuration is invalid, or when Discord
// refuses the session for good: an invalid token (close code 4004) or a
// privileged intent not enabled in the Developer Portal (4014).
func (a *Adapter) Run(ctx context.Context) error {
	a.init()
	err := a.setup(ctx)
	a.startErr = err
	close(a.started)
	if err != nil {
		return err
	}
	s := a.sess
	removers := []func(){
		s.AddHandler(a.onReady),
		s.AddHandler(a.onResumed),
		s.AddHandler(a.onDisconnect),
		s.AddHandler(a.onMessage),
		s.AddHandler(a.onMessageUpdate),
		s.AddHandler(a.onMessageDelete),
		s.AddHandler(a.onInteraction),
	}
	defer func() {
		for _, r := range removers {
			r()
		}
	}()

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case f := <-a.work:
					f(wctx)
				case <-wctx.Done():
					return
				}
			}
		}()
	}
	defer func() {
		stopWorkers()
		wg.Wait()
	}()

	for attempt := 0; ; {
		err := s.Open()
		if errors.Is(err, discordgo.ErrWSAlreadyOpen) {
			err = nil
		}
		if err != nil {
			if fatal := fatalClose(err); fatal != nil {
				return fatal
			}
			a.Log.Warn().Err(err).Int("attempt", attempt+1).Msg("discord: gateway connection failed")
			if !agent.Sleep(ctx, agent.Backoff(attempt, time.Second, 2*time.Minute)) {
				return nil
			}
			attempt++
			continue
		}
		attempt = 0
		select {
		case <-ctx.Done():
			if err := s.Close(); err != nil {
				a.Log.Warn().Err(err).Msg("discord: close gateway")
			}
			return nil
		case <-a.lost:
			// discordgo closed the socket (op 7, a read error, missed
			// heartbeats): open it again; Open resumes the session.
			a.Log.Info().Msg("discord: gateway disconnected; reconnecting")
		}
	}
}

func (a *Adapter) setup(ctx context.Context) error {
	if a.Runtime == nil {
		return errors.New("discord: adapter needs a Runtime")
	}
	cfg, err := a.Config.withDefaults()
	if err != nil {
		return fmt.Errorf("discord: config: %w", err)
	}
	a.cfg = cfg
	s, err := a.newSession(cfg)
	if err != nil {
		return err
	}
	a.sess = s
	a.runCtx = ctx
	a.work = make(chan func(context.Context), 64)
	a.mu.Lock()
	a.appID = cfg.ApplicationID
	a.mu.Unlock()
	return nil
}

// fatalClose returns an error for gateway close codes that retrying cannot
// fix, else nil.
func fatalClose(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return nil
	}
	switch ce.Code {
	case 4004:
		return fmt.Errorf("discord: gateway refused the token (close 4004): check discord.token: %w", err)
	case 4013, 4014:
		return fmt.Errorf("discord: gateway refused the intents (close %d): enable Message Content in the Developer Portal (Bot → Privileged Gateway Intents) or set discord.message_content: false: %w", ce.Code, err)
	case 4010, 4011, 4012:
		return fmt.Errorf("discord: gateway refused the session (close %d): %w", ce.Code, err)
	}
	return nil
}

// ready waits until Run has built the session and returns it.
func (a *Adapter) ready(ctx context.Context) (*discordgo.Session, error) {
	a.init()
	select {
	case <-a.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.startErr != nil {
		return nil, fmt.Errorf("discord: adapter not running: %w", a.startErr)
	}
	return a.sess, nil
}

// enqueue hands REST work to the workers, waiting while they are busy.
func (a *Adapter) enqueue(f func(context.Context)) {
	select {
	case a.work <- f:
	case <-a.runCtx.Done():
	}
}

func (a *Adapter) onReady(_ *discordgo.Session, r *discordgo.Ready) {
	a.mu.Lock()
	if r.User != nil {
		a.botID = r.User.ID
	}
	if a.appID == "" && r.Application != nil {
		a.appID = r.Application.ID
	}
	register := a.cfg.Commands && !a.commandsDone
	a.commandsDone = true
	// A second READY means a new session (after op 9 or an expired one):
	// events of the gap were not replayed.
	if a.sawReady {
		a.disconnected = true
	}
	a.sawReady = true
	a.mu.Unlock()
	a.Log.Info().Str("session", "ready").Msg("discord: gateway session ready")
	if register {
		a.enqueue(a.registerCommands)
	}
	a.afterGap()
}

func (a *Adapter) onResumed(*discordgo.Session, *discordgo.Resumed) {
	a.Log.Info().Msg("discord: gateway session resumed")
	a.afterGap()
}

func (a *Adapter) onDisconnect(*discordgo.Session, *discordgo.Disconnect) {
	a.mu.Lock()
	a.disconnected = true
	a.mu.Unlock()
	select {
	case a.lost <- struct{}{}:
	default:
	}
}

// afterGap schedules a backfill when the session (re)starts after a
// disconnect.
func (a *Adapter) afterGap() {
	a.mu.Lock()
	gap := a.disconnected
	a.disconnected = false
	a.mu.Unlock()
	if gap && a.cfg.BackfillWindow > 0 {
		a.enqueue(a.backfill)
	}
}

// backfill reads back the channels active within the backfill window for
// messages newer than the last one seen, and handles them like gateway
// events; dedupe drops those already accepted.
func (a *Adapter) backfill(ctx context.Context) {
	cutoff := a.Now().Add(-a.cfg.BackfillWindow)
	type job struct{ channel, guild, after string }
	var jobs []job
	a.mu.Lock()
	for ch, act := range a.active {
		if act.at.After(cutoff) {
			jobs = append(jobs, job{ch, act.guild, act.lastID})
		}
	}
	a.mu.Unlock()
	for _, j := range jobs {
		msgs, err := a.sess.ChannelMessages(j.channel, a.cfg.BackfillLimit, "", j.after, "", discordgo.WithContext(ctx))
		if err != nil {
			a.Log.Warn().Err(err).Str("channel", j.channel).Msg("discord: backfill failed")
			continue
		}
		a.Log.Info().Str("channel", j.channel).Int("messages", len(msgs)).Msg("discord: backfilled channel after a gap")
		// Newest first: handle them oldest first.
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if m.GuildID == "" {
				m.GuildID = j.guild
			}
			a.handleMessage(ctx, m, true)
		}
	}
}
